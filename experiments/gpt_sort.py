"""Sorting with a tiny GPT: the decoder smoke test of minGPT, which anyone can verify.

A sequence of 6 digits from {0, 1, 2} is followed by its sorted copy; the GPT (3 layers, 3 heads, 48
wide, dropout 0.1, `purenet.models.gpt`) reads the 11 leading tokens and is trained with the cross-entropy
of the last 6 predictions only (`masked_softmax_cross_entropy`). The test set holds 25% of the 729
distinct sequences, none of them seen in training; exact match counts the sorted copies that greedy
decoding on the KV cache (`purenet.models.generate`, temperature 0) gets entirely right, over 5,000 test
draws.

    python experiments/gpt_sort.py                 # 2,000 steps of batch 64; writes runs/gpt_sort/
    python experiments/gpt_sort.py --length 8      # longer sequences
    python experiments/gpt_sort.py --quick         # smoke run, seconds
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from purenet.core import init_model
from purenet.data import sorting_task
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models import GPTConfig, generate, gpt
from purenet.training import Run, make_train_step, run_steps

NAME = "gpt_sort"
QUICK = dict(steps=30, test_draws=200)


def batch_of(sequences: np.ndarray) -> dict:
    """Sequences (N, L) -> the batch {"x": ids (N, 2L - 1), "y": TokenTargets}: x = input then sorted copy,
    without its last token; targets are x shifted by one, counted only where they are the sorted copy."""
    length = sequences.shape[1]
    full = np.concatenate([sequences, np.sort(sequences, axis=1)], axis=1)  # (N, 2L)
    mask = np.zeros((len(full), 2 * length - 1), bool)
    mask[:, length - 1:] = True
    return {"x": full[:, :-1], "y": TokenTargets(full[:, 1:], mask)}


def greedy_sort(model, params, sequences: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's sorted copies of `sequences` (N, L): greedy decoding on the KV cache, in batches padded
    to one shape (one compilation)."""
    out = []
    for i in range(0, len(sequences), batch_size):
        prompt = sequences[i:i + batch_size]
        padded = np.pad(prompt, ((0, batch_size - len(prompt)), (0, 0)))
        drawn = generate(model, params, jnp.asarray(padded), jax.random.PRNGKey(0), length=prompt.shape[1],
                         temperature=0.0)
        out.append(np.asarray(drawn)[:len(prompt)])
    return np.concatenate(out)


def exact_match(sequences: np.ndarray, drawn: np.ndarray) -> float:
    """Fraction of rows where `drawn` is the sorted row of `sequences`."""
    return float(np.mean(np.all(drawn == np.sort(sequences, axis=1), axis=1)))


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=64, lr_adam=5e-4,
                                lr_sgd=0.1)
    add, count = parser.add_argument, common.positive_int
    add("--steps", type=count, default=2000)
    add("--length", type=count, default=6, help="digits per sequence")
    add("--digits", type=count, default=3, help="digits are drawn from 0 .. digits - 1 (at least 2)")
    add("--layers", type=count, default=3)
    add("--heads", type=count, default=3)
    add("--d-model", type=count, default=48)
    add("--dropout", type=common.non_negative_float, default=0.1,
        help="dropout rate of the embeddings and residual branches")
    add("--warmup", type=common.non_negative_int, default=100)
    add("--test-draws", type=count, default=5000, help="test sequences drawn (with repeats) for exact match")
    args = parser.parse_args(argv)
    if args.quick:  # fewer steps and draws; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.epochs is not None or args.optimizer != "adam":
        parser.error("gpt_sort trains for --steps with AdamW (no --epochs, --optimizer adam)")
    if args.digits < 2:
        parser.error(f"--digits must be at least 2, got {args.digits}")
    if args.dropout >= 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    train_set, test_set = sorting_task(args.length, args.digits, seed=args.seed)
    context = 2 * args.length - 1
    model = gpt(GPTConfig(args.digits, context=context + 1, layers=args.layers, d_model=args.d_model,
                          heads=args.heads, dropout=args.dropout))
    recipe = common.make_optimizer(args, steps=args.steps, warmup=args.warmup, end_lr=lambda lr: lr / 10, clip=1.0,
                                   weight_decay=0.1)
    key = jax.random.PRNGKey(args.seed)
    common.print_summary(model, (-1, context))
    _, params, state = init_model(model, key, (-1, context))
    rng = np.random.default_rng(args.seed)

    def batch_at(step: int) -> dict:
        return batch_of(train_set[rng.integers(len(train_set), size=args.batch_size)])

    def on_eval(run: Run) -> None:
        print(f"step {run.step}/{args.steps}: loss {float(run.metrics[-1]['loss']):.4f}")

    out = common.out_dir(args)
    run = run_steps(make_train_step(model, masked_softmax_cross_entropy(), recipe.optimizer), params, state,
                    recipe.optimizer.init(params), batch_at, key=key, steps=args.steps,
                    eval_every=max(1, args.steps // 5), on_eval=on_eval, checkpoint=out / "checkpoint.npz")
    params, train_seconds = run.params, time.perf_counter() - start
    draws = test_set[rng.integers(len(test_set), size=args.test_draws)]
    metrics = {"steps": args.steps, "batch_size": args.batch_size, "lr": recipe.lr, "length": args.length,
               "digits": args.digits, "layers": args.layers, "heads": args.heads, "d_model": args.d_model,
               "dropout": args.dropout, "seed": args.seed, "train_sequences": len(train_set),
               "test_sequences": len(test_set), "test_draws": args.test_draws,
               "final_loss": float(run.metrics[-1]["loss"]),
               "train_exact_match": exact_match(train_set, greedy_sort(model, params, train_set)),
               "num_params": int(sum(p.size for p in jax.tree.leaves(params))),
               "train_seconds": round(train_seconds, 2)}
    drawn = greedy_sort(model, params, draws)
    metrics["test_exact_match"] = exact_match(draws, drawn)
    metrics["example"] = f"{draws[0].tolist()} -> {drawn[0].tolist()}"
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"exact match: train {metrics['train_exact_match']:.4f} ({len(train_set)} sequences), "
          f"test {metrics['test_exact_match']:.4f} ({args.test_draws} draws of {len(test_set)} held-out "
          f"sequences); e.g. {metrics['example']}; wall time {metrics['wall_time_s']:.1f} s")
    return metrics


if __name__ == "__main__":
    main()
