"""MiniBERT: masked language modelling of characters on the shipped Shakespeare (`purenet.models.bert`).

BERT's recipe at character level: in each window of --context characters, 15% of the positions are
chosen (`purenet.models.mask_tokens`); of those 80% become [MASK], 10% a random character, 10% stay; the
loss (`masked_softmax_cross_entropy`) and the accuracy count the chosen positions only. AdamW with warmup
and cosine decay, clipping to global norm 1. The text's last 10% is the held-out test text, the last 10%
of the rest the validation text (the defaults were chosen on it: 2 layers of width 128 at peak rate 1e-3
for 1,200 steps of 32 windows of 64, about 10 minutes on two CPU cores, on the shared loop
`purenet.training.run_steps`); both are cut into consecutive
windows, the last one right-padded with [PAD] (the model's padding mask keeps it out of attention), and
masked once with a fixed key, so every run is scored on the same positions. The baseline predicts the
training text's most frequent character at every chosen position.

    python experiments/mini_bert.py --time-budget 600    # the reported run; writes runs/mini_bert/
    python experiments/mini_bert.py --split validation   # score on the validation text only (tuning)
    python experiments/mini_bert.py --quick         # smoke run, seconds
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from purenet.core import init_model
from purenet.data.text import split, windows
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models import BertConfig, bert, mask_tokens
from purenet.training import Run, make_train_step, run_steps

NAME = "mini_bert"
EVAL_BATCH = 64
EVAL_MASK_SEED = 1234  # the held-out texts' masking: the same positions for every run
QUICK = dict(steps=12, layers=1, d_model=32, heads=2, context=32, batch_size=EVAL_BATCH, warmup=2, eval_every=6,
             eval_chars=2048)  # batches of the evaluation's shape: one masking program to compile


def masked_accuracy(logits, targets: TokenTargets):
    """The fraction of chosen positions whose argmax is the original token."""
    hits = (jnp.argmax(logits, axis=-1) == targets.labels) & targets.mask
    return jnp.sum(hits) / jnp.maximum(jnp.sum(targets.mask), 1)


def padded_windows(ids: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Consecutive windows covering all of `ids`, the last one right-padded, then windows of padding
    only up to a multiple of EVAL_BATCH (one shape to compile): (W, T)."""
    count = -(-len(ids) // (length * EVAL_BATCH)) * EVAL_BATCH
    return np.pad(ids, (0, count * length - len(ids)), constant_values=pad_id).reshape(count, length)


class Heldout:
    """A held-out text, windowed, padded and masked once: inputs (W, T), targets, the baseline's hits."""

    def __init__(self, ids: np.ndarray, context: int, mask, pad_id: int, frequent: int):
        x = padded_windows(ids, context, pad_id)
        self.inputs, self.targets = mask(jax.random.PRNGKey(EVAL_MASK_SEED), x, valid=x != pad_id)
        chosen = np.asarray(self.targets.mask)
        self.count = int(chosen.sum())
        self.baseline = float(np.mean(x[chosen] == frequent))

    def score(self, eval_step, params, state) -> dict:
        """Masked-character accuracy and loss (nats/char) over every chosen position."""
        totals = np.zeros(3)
        for i in range(0, len(self.inputs), EVAL_BATCH):
            part = TokenTargets(self.targets.labels[i:i + EVAL_BATCH], self.targets.mask[i:i + EVAL_BATCH])
            totals += np.asarray(eval_step(params, state, self.inputs[i:i + EVAL_BATCH], part))
        return {"accuracy": totals[0] / totals[2], "loss": totals[1] / totals[2]}


def make_eval_step(model):
    @jax.jit
    def eval_step(params, state, inputs, targets):  # -> (hits, summed loss, chosen positions)
        logits, _ = model.apply(params, state, inputs)
        hits = jnp.sum((jnp.argmax(logits, axis=-1) == targets.labels) & targets.mask)
        loss = masked_softmax_cross_entropy(reduction="sum").apply(logits, targets)
        return jnp.stack([hits.astype(loss.dtype), loss, jnp.sum(targets.mask).astype(loss.dtype)])

    return eval_step


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=32, lr_adam=1e-3,
                                lr_sgd=0.1)
    add = parser.add_argument
    count, natural, real, unit = (common.positive_int, common.non_negative_int, common.non_negative_float,
                                  common.fraction)
    add("--steps", type=count, default=1200, help="training steps; the schedule decays over them")
    add("--layers", type=count, default=2)
    add("--heads", type=count, default=4)
    add("--d-model", type=count, default=128)
    add("--context", type=count, default=64, help="characters per window and position table size")
    add("--dropout", type=real, default=0.0)
    add("--min-lr", type=real, default=1e-4, help="the cosine schedule's end value")
    add("--warmup", type=natural, default=100, help="linear warmup steps")
    add("--weight-decay", type=real, default=0.01)
    add("--clip", type=common.positive_float, default=1.0, help="clip gradients to this global norm")
    add("--eval-every", type=count, default=500)
    add("--val-fraction", type=unit, default=0.1, help="the last fraction of the text held out for the test")
    add("--eval-chars", type=natural, default=0, help="score on at most this many held-out characters (0: all)")
    add("--split", choices=("test", "validation"), default="test",
        help="the held-out text of the final score (the validation text is scored during training)")
    add("--time-budget", type=common.positive_float, default=None, help="stop training after this many seconds")
    add("--text", default=None, help="train on this UTF-8 file instead of the shipped Shakespeare")
    args = parser.parse_args(argv)
    if args.quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.epochs is not None:
        parser.error("mini_bert counts training in --steps, not --epochs")
    if args.optimizer != "adam":
        parser.error("mini_bert trains with AdamW only (--optimizer adam)")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.dropout >= 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    args.prompt, args.val_chars = "", 0  # what common.char_text reads
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    _, vocabulary, train_ids, test_ids = common.char_text(args)
    train_ids, val_ids = split(train_ids, 0.1)
    if args.eval_chars:
        val_ids, test_ids = val_ids[:args.eval_chars], test_ids[:args.eval_chars]
    num_chars = len(vocabulary)
    mask_id, pad_id = num_chars, num_chars + 1  # [MASK] and [PAD] after the characters
    frequent = int(np.argmax(np.bincount(train_ids, minlength=num_chars)))
    print(f"{len(train_ids):,} train / {len(val_ids):,} validation / {len(test_ids):,} test characters; "
          f"most frequent training character {vocabulary[frequent]!r}")
    mask = jax.jit(functools.partial(mask_tokens, mask_id=mask_id, num_tokens=num_chars))
    heldout = {"validation": Heldout(val_ids, args.context, mask, pad_id, frequent)}
    if args.split == "test":
        heldout["test"] = Heldout(test_ids, args.context, mask, pad_id, frequent)

    model = bert(BertConfig(num_chars + 2, context=args.context, layers=args.layers, d_model=args.d_model,
                            heads=args.heads, dropout=args.dropout, pad_id=pad_id))
    recipe = common.make_optimizer(args, steps=args.steps, warmup=args.warmup, end_lr=args.min_lr, clip=args.clip,
                                   weight_decay=args.weight_decay)
    train_step = make_train_step(model, masked_softmax_cross_entropy(), recipe.optimizer,
                                 metrics={"accuracy": masked_accuracy})
    eval_step = make_eval_step(model)
    key = jax.random.PRNGKey(args.seed)
    common.print_summary(model, (-1, args.context))
    params, state = jax.jit(lambda k: init_model(model, k, (-1, args.context))[1:])(key)  # one compilation
    num_params = int(sum(p.size for p in jax.tree.leaves(params)))
    print(f"MiniBERT: {args.layers} layers, d_model {args.d_model}, {num_params:,} parameters")

    def batch_at(step: int) -> dict:  # masks from fold_in(key, 2 step), dropout keys from fold_in(key, 1)
        x, _ = windows(train_ids, args.context, num_windows=args.batch_size, seed=(args.seed, step))
        inputs, targets = mask(jax.random.fold_in(key, 2 * step), x, valid=np.ones(x.shape, bool))
        return {"x": inputs, "y": targets}

    history = []  # (step, training seconds, training loss, validation loss, validation accuracy)

    def on_eval(run: Run) -> None:
        val, loss = heldout["validation"].score(eval_step, run.params, run.state), float(run.metrics[-1]["loss"])
        history.append((run.step, round(run.trained, 2), loss, val["loss"], val["accuracy"]))
        print(f"step {run.step}/{args.steps}: train loss {loss:.3f}, validation loss {val['loss']:.3f}, masked "
              f"accuracy {val['accuracy']:.4f}, {run.trained:.0f} s")

    out = common.out_dir(args)
    run = run_steps(train_step, params, state, recipe.optimizer.init(params), batch_at,
                    key=jax.random.fold_in(key, 1), steps=args.steps, eval_every=args.eval_every, on_eval=on_eval,
                    checkpoint=out / "checkpoint.npz", time_budget=args.time_budget)
    params, state, step, trained = run.params, run.state, run.step, run.trained
    final = heldout[args.split]
    score = final.score(eval_step, params, state) if args.split == "test" else {"accuracy": history[-1][4],
                                                                                 "loss": history[-1][3]}
    metrics = {"split": args.split, "accuracy": score["accuracy"], "loss": score["loss"],
               "baseline_accuracy": final.baseline, "ratio_to_baseline": score["accuracy"] / final.baseline,
               "masked_positions": final.count, "validation_accuracy": history[-1][4],
               "validation_baseline": heldout["validation"].baseline, "history": history, "steps": step,
               "train_seconds": round(trained, 2), "num_params": num_params, "vocabulary_size": num_chars + 2,
               "most_frequent": vocabulary[frequent],
               **{k: getattr(args, k) for k in ("layers", "heads", "d_model", "context", "batch_size", "dropout",
                                                "warmup", "min_lr", "weight_decay", "clip", "seed")}, "lr": recipe.lr}
    _, seconds, _, _, val_accuracies = zip(*history)
    fig, ax = common.plt.subplots(figsize=(6.5, 4))
    ax.plot(seconds, val_accuracies, marker=".", label="MiniBERT, validation")
    ax.axhline(heldout["validation"].baseline, color="gray", linestyle="--", label="most frequent character")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("masked-character accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, out / "accuracy.png")
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"| split | masked positions | MiniBERT accuracy | most-frequent baseline | ratio | loss nats/char |\n"
          f"|---|---|---|---|---|---|\n| {args.split} | {final.count:,} | {score['accuracy']:.4f} | "
          f"{final.baseline:.4f} | {metrics['ratio_to_baseline']:.2f} | {score['loss']:.3f} |")
    print(f"{step} steps, {trained:.0f} s of training; wall time {metrics['wall_time_s']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()
