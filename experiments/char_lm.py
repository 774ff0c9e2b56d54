"""Character-level language model (embedding, recurrent layers, dense projection) with handwritten BPTT.

Trains on the shipped Shakespeare plays (purenet/data/SHAKESPEARE.md) or any UTF-8 file (--text), on
random (N, T) windows whose targets are the next characters; per-token softmax cross-entropy, Adam with
gradient clipping by global norm and a cosine-decayed rate. Reports validation bits per character on the
last 10% of the text (the shared loop, `purenet.training.run_steps`, evaluates and checkpoints every
--eval-every steps), and samples from a prompt on the model's decode step (one jitted `lax.scan`).
`--compare` trains SimpleRNN, LSTM and GRU for the same steps and prints validation bits/char and the
median time of a training step (compilation excluded). The shared --data-dir flag is unused (see --text).

    python experiments/char_lm.py                       # LSTM, 2,000 steps; writes runs/char_lm/
    python experiments/char_lm.py --cell gru --layers 2 --hidden 128 --temperature 0.6
    python experiments/char_lm.py --text notes.txt --prompt "Dear " --sample-length 300
    python experiments/char_lm.py --compare --steps 300 # RNN, LSTM and GRU on the same budget
    python experiments/char_lm.py --quick               # smoke run, seconds
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from purenet._checks import fail
from purenet.core import init_model
from purenet.data.text import consecutive_windows, decode, encode, windows
from purenet.losses import softmax_cross_entropy
from purenet.models import CharLMConfig, char_lm, generate
from purenet.models.char_lm import CELLS
from purenet.training import Run, make_eval_step, make_train_step, run_steps

NAME = "char_lm"
EVAL_BATCH = 128
QUICK = dict(steps=20, hidden=32, embedding=16, seq_len=32, batch_size=16, val_chars=2048, eval_every=10,
             sample_length=80)


def build_model(vocab_size: int, *, cell: str, hidden: int, layers: int, embedding: int,
                tie_weights: bool = False):
    """ids (N, T) -> logits (N, T, V): `purenet.models.char_lm` (embed, rnn, head)."""
    return char_lm(CharLMConfig(vocab_size, cell, hidden, layers, embedding, tie_weights))


def sample_text(model, params, vocabulary: str, prompt: str, *, length: int, temperature: float,
                top_k: int | None = None, seed: int = 0) -> str:
    """The `length` characters sampled after `prompt` (not included), one at a time on the model's decode
    step (`purenet.models.generate`); temperature 0 is greedy."""
    if not prompt:
        fail("sample_text", "prompt must be a non-empty string")
    ids = generate(model, params, jnp.asarray(encode(prompt, vocabulary))[None], jax.random.PRNGKey(seed),
                   length=length, temperature=temperature, top_k=top_k)
    return decode(np.asarray(ids[0]), vocabulary)


# ------------------------------------------------------------------------------------------ training


def evaluate(eval_step, params, state, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean loss (nats) and accuracy over windows x, y (N, T), in equal batches (one compilation)."""
    size = min(EVAL_BATCH, len(x))
    results = [eval_step(params, state, {"x": x[i:i + size], "y": y[i:i + size]})
               for i in range(0, len(x) - size + 1, size)]
    results = jax.device_get(results)
    return {name: float(np.mean([r[name] for r in results])) for name in results[0]}


def bits(nats: float) -> float:
    return nats / math.log(2)


def train_one(args, cell: str, vocabulary: str, train_ids: np.ndarray, val_ids: np.ndarray,
              out) -> tuple[dict, list[float]]:
    """Train one model for args.steps steps (`run_steps`: evaluation and checkpoint.npz every
    --eval-every steps); write loss.png, metrics.json to `out`. -> (metrics, training bits/char per step)."""
    start = time.perf_counter()
    model = build_model(len(vocabulary), cell=cell, hidden=args.hidden, layers=args.layers,
                        embedding=args.embedding, tie_weights=args.tie_weights)
    common.print_summary(model, (-1, args.seq_len))
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), (-1, args.seq_len))
    loss, recipe = softmax_cross_entropy(), common.make_optimizer(args, steps=args.steps, clip=args.clip)
    train_step, eval_step = make_train_step(model, loss, recipe.optimizer), make_eval_step(model, loss)
    val_x, val_y = consecutive_windows(val_ids, args.seq_len)
    evaluations = []  # (step, validation metrics)

    def batch_at(step: int) -> dict:
        x, y = windows(train_ids, args.seq_len, num_windows=args.batch_size, seed=(args.seed, step))
        return {"x": x, "y": y}

    def on_eval(run: Run) -> None:
        evaluations.append((run.step, evaluate(eval_step, run.params, run.state, val_x, val_y)))
        print(f"[{cell}] step {run.step}/{args.steps}: train {bits(float(run.metrics[-1]['loss'])):.3f}, "
              f"val {bits(evaluations[-1][1]['loss']):.3f} bits/char")

    run = run_steps(train_step, params, state, recipe.optimizer.init(params), batch_at,
                    key=jax.random.PRNGKey(args.seed), steps=args.steps, eval_every=args.eval_every, on_eval=on_eval,
                    checkpoint=out / "checkpoint.npz")
    train_bits = [bits(m["loss"]) for m in run.metrics]
    val_history = [(step, bits(val["loss"])) for step, val in evaluations]
    sample = sample_text(model, run.params, vocabulary, args.prompt, length=args.sample_length,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    plot_curves({cell: (train_bits, val_history)}, out / "loss.png",
                f"char-level {cell.upper()} ({args.hidden} hidden x {args.layers})")
    tail = train_bits[-args.eval_every:]
    metrics = {
        "cell": cell, "hidden": args.hidden, "layers": args.layers, "embedding": args.embedding,
        "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
        "optimizer": args.optimizer, "lr": recipe.lr, "clip": args.clip, "seed": args.seed,
        "text": args.text or "shipped Shakespeare (purenet/data/shakespeare.txt)",
        "vocabulary": vocabulary, "train_chars": len(train_ids), "val_chars": len(val_ids),
        "num_params": int(sum(p.size for p in jax.tree.leaves(run.params))),
        "val_bits_per_char": val_history[-1][1], "val_accuracy": evaluations[-1][1]["accuracy"],
        "train_bits_per_char": float(np.mean(tail)), "val_history": val_history,
        "ms_per_step": 1e3 * float(np.median(run.seconds[1:] or run.seconds)),
        "first_step_s": round(run.seconds[0], 2),
        "tie_weights": args.tie_weights, "prompt": args.prompt, "temperature": args.temperature,
        "top_k": args.top_k, "sample": sample,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    common.write_metrics(out / "metrics.json", metrics)
    print(f"[{cell}] sample (temperature {args.temperature}):\n{args.prompt}{sample}\n")
    return metrics, train_bits


def plot_curves(curves: dict, path, title: str) -> None:
    """Per cell: training bits/char per step (faint) and validation bits/char at its evaluation steps."""
    fig, ax = common.plt.subplots(figsize=(6.5, 4))
    for i, (cell, (train_bits, val_history)) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(range(1, len(train_bits) + 1), train_bits, color=color, alpha=0.3, lw=0.8)
        steps, values = zip(*val_history)
        ax.plot(steps, values, color=color, marker=".", label=f"{cell} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend(title="faint: training")
    ax.set_title(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def compare_table(rows: list[dict]) -> str:
    lines = ["| cell | hidden x layers | params | steps | batch x seq | val bits/char | median ms/step |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['hidden']} x {r['layers']} | {r['num_params']:,} | {r['steps']} | "
                     f"{r['batch_size']} x {r['seq_len']} | {r['val_bits_per_char']:.3f} | "
                     f"{r['ms_per_step']:.1f} |")
    return "\n".join(lines)


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=32, lr_adam=2e-3,
                                lr_sgd=0.5)
    add = parser.add_argument
    positive = common.positive_int
    add("--steps", type=positive, default=2000, help="training steps (default 2000); --epochs overrides it "
        "with epochs x (training characters // (batch-size x seq-len))")
    add("--cell", choices=tuple(CELLS), default="lstm")
    add("--hidden", type=positive, default=256, help="hidden size of each recurrent layer")
    add("--layers", type=positive, default=1, help="number of stacked recurrent layers")
    add("--embedding", type=positive, default=64, help="character embedding size")
    add("--seq-len", type=positive, default=64, help="characters per training window (BPTT length)")
    add("--clip", type=common.positive_float, default=1.0, help="clip gradients to this global norm")
    add("--val-fraction", type=common.fraction, default=0.1, help="last fraction of the text held out")
    add("--val-chars", type=common.non_negative_int, default=65536,
        help="evaluate on at most this many held-out characters (0: all)")
    add("--eval-every", type=positive, default=200, help="evaluate every this many steps")
    add("--text", default=None, help="train on this UTF-8 file instead of the shipped Shakespeare")
    add("--prompt", default="\n", help="text the sample continues (default a newline)")
    add("--tie-weights", action="store_true", help="use the embedding table as the output head (needs "
        "--hidden equal to --embedding)")
    add("--temperature", type=common.non_negative_float, default=0.8, help="sampling temperature (0: greedy)")
    add("--top-k", type=positive, default=None, help="sample among the k most likely characters only")
    add("--sample-length", type=positive, default=400)
    add("--compare", action="store_true", help="train rnn, lstm and gru for the same steps; print a table")
    args = parser.parse_args(argv)
    if args.quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.tie_weights and args.hidden != args.embedding:
        parser.error(f"--tie-weights needs --hidden equal to --embedding, got {args.hidden} and {args.embedding}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    _, vocabulary, train_ids, val_ids = common.char_text(args)
    if args.epochs is not None:
        args.steps = args.epochs * max(1, len(train_ids) // (args.batch_size * args.seq_len))
    print(f"{args.steps} training steps")
    out = common.out_dir(args)
    if not args.compare:
        return train_one(args, args.cell, vocabulary, train_ids, val_ids, out)[0]

    runs = {cell: train_one(args, cell, vocabulary, train_ids, val_ids, common.out_dir(args, cell))
            for cell in CELLS}
    rows = [metrics for metrics, _ in runs.values()]
    table = compare_table(rows)
    print(table)
    (out / "compare.md").write_text(table + "\n")
    plot_curves({cell: (train_bits, metrics["val_history"]) for cell, (metrics, train_bits) in runs.items()},
                out / "compare.png", f"bits/char, {args.steps} steps each")
    metrics = {"compare": {r["cell"]: r for r in rows}, "table": table,
               "wall_time_s": round(time.perf_counter() - start, 2)}
    common.write_metrics(out / "metrics.json", metrics)
    return metrics


if __name__ == "__main__":
    main()
