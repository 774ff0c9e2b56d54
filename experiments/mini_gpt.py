"""MiniGPT: a character-level decoder-only Transformer (`purenet.models.gpt`) on the shipped Shakespeare.

The recipe of nanoGPT's CPU run of shakespeare_char (4 layers, 4 heads, 128 wide, context 64, no dropout):
the head tied to the token embedding, AdamW (beta2 0.99, weight decay 0.1 on matrices only: embeddings,
positions and kernels, not biases or norm scales), linear warmup then cosine decay to --min-lr, clipping
to global norm 1. Validation loss (nats/char) on the held-out last 10% of the text, over consecutive
windows of the context length. Samples with temperature and top-k on the model's KV cache. The shared
loop (`purenet.training.run_steps`) checkpoints at every evaluation (atomic write) and resumes from there
with --resume: the batches and dropout keys depend only on the step, so a resumed run equals an
uninterrupted one. `--time-budget S` stops training after S seconds; `--compare` then trains the LSTM
char-LM (`purenet.models.char_lm`) for the same wall time and prints both.

    python experiments/mini_gpt.py                      # the default run; writes runs/mini_gpt/
    python experiments/mini_gpt.py --resume             # continue from runs/mini_gpt/checkpoint.npz
    python experiments/mini_gpt.py --compare            # GPT, then an LSTM for the same wall time
    python experiments/mini_gpt.py --compute-dtype bfloat16   # mixed precision (float16: loss scaling too)
    python experiments/mini_gpt.py --prompt "ROMEO:" --temperature 0.7 --top-k 20 --sample-only
    python experiments/mini_gpt.py --quick              # smoke run, seconds
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from purenet.core import init_model
from purenet.data.text import consecutive_windows, decode, encode, windows
from purenet.losses import softmax_cross_entropy
from purenet.models import CharLMConfig, GPTConfig, char_lm, generate, gpt
from purenet.training import Checkpoint, Run, load_checkpoint, make_eval_step, make_train_step, run_steps

NAME = "mini_gpt"
EVAL_BATCH = 128
QUICK = dict(steps=12, layers=1, d_model=32, heads=2, context=16, batch_size=4, warmup=2, eval_every=6,
             val_chars=1024, sample_length=40, lstm_hidden=32, lstm_embedding=16)


# --------------------------------------------------------------------------------------------- model


def build_gpt(args, vocab_size: int):
    return gpt(GPTConfig(vocab_size, context=args.context, layers=args.layers, d_model=args.d_model,
                         heads=args.heads, hidden=args.hidden, dropout=args.dropout))


def build_lstm(args, vocab_size: int):
    return char_lm(CharLMConfig(vocab_size, "lstm", args.lstm_hidden, 1, args.lstm_embedding))


def recipe(args, peak_lr: float, steps: int) -> common.Recipe:
    """Clip to global norm --clip, then AdamW with warmup + cosine decay to --min-lr over `steps`."""
    return common.make_optimizer(args, lr=peak_lr, steps=steps, warmup=args.warmup, end_lr=args.min_lr,
                                 clip=args.clip, weight_decay=args.weight_decay, b2=args.beta2)


# ------------------------------------------------------------------------------------------ training


def evaluate(eval_step, params, state, x: np.ndarray, y: np.ndarray) -> float:
    """Mean loss (nats/char) over all windows x, y (W, T): full batches, then one smaller tail batch."""
    size = min(EVAL_BATCH, len(x))
    starts = range(0, len(x), size)
    losses = jax.device_get([eval_step(params, state, {"x": x[i:i + size], "y": y[i:i + size]})["loss"]
                             for i in starts])
    counts = [min(size, len(x) - i) for i in starts]
    return float(np.dot(losses, counts) / sum(counts))


def train(model, args, *, name: str, steps: int, peak_lr: float, seq_len: int, batch_size: int, data,
          out: pathlib.Path | None, time_budget: float | None = None, resume: bool = False) -> dict:
    """Train `model` (ids (N, T) -> logits (N, T, V)) for `steps` steps on `run_steps`, or until
    `time_budget` seconds of training have passed; evaluate every --eval-every steps and at the end;
    checkpoint to `out` at every evaluation. The batch of step s is `windows(train_ids, seed=(seed, s))`,
    its dropout key fold_in(key, s), so a run resumed from a checkpoint repeats the steps it would have
    taken. -> metrics: step, losses, timing (compilation excluded from tokens/s)."""
    train_ids, val_x, val_y = data
    model, scheduled, _ = common.with_precision(args, model, recipe(args, peak_lr, steps))
    loss, optimizer = softmax_cross_entropy(), scheduled.optimizer
    train_step, eval_step = make_train_step(model, loss, optimizer), make_eval_step(model, loss)
    key = jax.random.PRNGKey(args.seed)
    common.print_summary(model, (-1, seq_len))
    _, params, state = init_model(model, key, (-1, seq_len))
    path = None if out is None else out / "checkpoint.npz"
    if resume:
        print(f"[{name}] resuming from {path}")
    history = []  # (step, validation loss, training seconds)

    def batch_at(step: int) -> dict:
        x, y = windows(train_ids, seq_len, num_windows=batch_size, seed=(args.seed, step))
        return {"x": x, "y": y}

    def on_eval(run: Run) -> None:
        history.append((run.step, evaluate(eval_step, run.params, run.state, val_x, val_y), round(run.trained, 2)))
        print(f"[{name}] step {run.step}/{steps}: train {float(run.metrics[-1]['loss']):.3f}, val "
              f"{history[-1][1]:.3f} nats/char, {run.trained:.0f} s")

    run = run_steps(train_step, params, state, optimizer.init(params), batch_at, key=key, steps=steps,
                    eval_every=args.eval_every, on_eval=on_eval, checkpoint=path, resume=resume,
                    time_budget=time_budget)
    if not run.metrics:
        raise SystemExit(f"{NAME}: the checkpoint at {path} is at step {run.step}, none left of --steps {steps}")
    timed = run.seconds[1:] or run.seconds  # the first step compiles
    return {"params": run.params, "state": run.state, "steps": run.step, "val_loss": history[-1][1],
            "val_history": history, "train_loss": float(np.mean([m["loss"] for m in run.metrics[-args.eval_every:]])),
            "train_seconds": round(run.trained, 2), "compile_seconds": round(run.seconds[0], 2),
            "ms_per_step": 1e3 * float(np.median(timed)),
            "tokens_per_s": round(batch_size * seq_len / float(np.mean(timed))),
            "num_params": int(sum(p.size for p in jax.tree.leaves(run.params)))}


def calibrate_steps(model, args, *, peak_lr, seq_len, batch_size, data, seconds: float) -> int:
    """How many training steps of `model` fit in `seconds`: the median of 10 timed steps (after one
    compiling step) divides the budget."""
    probe = train(model, args, name="calibrate", steps=11, peak_lr=peak_lr, seq_len=seq_len,
                  batch_size=batch_size, data=data, out=None)
    return max(2, int(seconds / (probe["ms_per_step"] / 1e3)))


# ------------------------------------------------------------------------------------------ sampling


def sample_text(model, params, vocabulary: str, prompt: str, *, context: int, length: int,
                temperature: float, top_k: int | None, seed: int) -> str:
    """`length` characters after `prompt`, drawn on the KV cache. The learned position table holds
    `context` positions, so the text grows in chunks: each chunk restarts the cache from the last
    context // 2 characters and draws up to the table's end."""
    ids = list(encode(prompt, vocabulary)[-context // 2:])
    drawn: list[int] = []
    key = jax.random.PRNGKey(seed)
    while len(drawn) < length:
        window = (ids + drawn)[-context // 2:]
        chunk = min(context - len(window), length - len(drawn))
        key, sub = jax.random.split(key)
        new = generate(model, params, jnp.asarray(window)[None], sub, length=chunk, temperature=temperature,
                       top_k=top_k)
        drawn.extend(int(t) for t in np.asarray(new[0]))
    return decode(np.asarray(drawn), vocabulary)


# ---------------------------------------------------------------------------------------------- main


def plot_curves(runs: dict[str, dict], path, title: str) -> None:
    """Validation nats/char against training seconds, per run."""
    fig, ax = common.plt.subplots(figsize=(6.5, 4))
    for name, run in runs.items():
        _, values, seconds = zip(*run["val_history"])
        ax.plot(seconds, values, marker=".", label=f"{name} ({run['num_params']:,} params)")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def summary(run: dict, extra: dict) -> dict:
    keep = ("steps", "val_loss", "val_history", "train_loss", "train_seconds", "compile_seconds", "ms_per_step",
            "tokens_per_s", "num_params")
    return {k: run[k] for k in keep} | extra


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=12, lr_adam=1e-3,
                                lr_sgd=0.1)
    add = parser.add_argument
    count, natural, real, unit = (common.positive_int, common.non_negative_int, common.non_negative_float,
                                  common.fraction)
    add("--steps", type=count, default=3000, help="training steps; the schedule decays over them")
    add("--layers", type=count, default=4)
    add("--heads", type=count, default=4)
    add("--d-model", type=count, default=128)
    add("--hidden", type=count, default=None, help="feed-forward width (default: 4 x --d-model)")
    add("--context", type=count, default=64, help="characters per training window and position table size")
    add("--dropout", type=real, default=0.0)
    add("--min-lr", type=real, default=1e-4, help="the cosine schedule's end value")
    add("--warmup", type=natural, default=100, help="linear warmup steps")
    add("--weight-decay", type=real, default=0.1)
    add("--beta2", type=unit, default=0.99)
    add("--clip", type=common.positive_float, default=1.0, help="clip gradients to this global norm")
    add("--eval-every", type=count, default=500)
    add("--val-fraction", type=unit, default=0.1, help="the last fraction of the text held out")
    add("--val-chars", type=natural, default=0, help="evaluate on at most this many held-out characters (0: all)")
    add("--time-budget", type=common.positive_float, default=None, help="stop training after this many seconds")
    add("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    add("--text", default=None, help="train on this UTF-8 file instead of the shipped Shakespeare")
    add("--prompt", default="\n")
    add("--temperature", type=real, default=0.8, help="sampling temperature (0: greedy)")
    add("--top-k", type=count, default=None, help="sample among the k most likely characters only")
    add("--sample-length", type=count, default=500)
    add("--sample-only", action="store_true", help="load the checkpoint in --out-dir and only sample")
    add("--compare", action="store_true", help="also train the LSTM char-LM for the GPT's wall time")
    add("--lstm-hidden", type=count, default=256)
    add("--lstm-embedding", type=count, default=64)
    add("--lstm-lr", type=common.positive_float, default=2e-3)
    add("--lstm-batch-size", type=count, default=32)
    common.add_precision_flags(parser)
    args = parser.parse_args(argv)
    if args.quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.epochs is not None:
        parser.error("mini_gpt counts training in --steps, not --epochs")
    if args.optimizer != "adam":
        parser.error("mini_gpt trains with AdamW only (--optimizer adam)")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.dropout >= 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.context < 2:
        parser.error(f"--context must be at least 2, got {args.context}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    _, vocabulary, train_ids, val_ids = common.char_text(args)
    val_x, val_y = consecutive_windows(val_ids, args.context)
    data = (train_ids, val_x, val_y)
    out = common.out_dir(args)
    model = build_gpt(args, len(vocabulary))
    sampling = dict(context=args.context, length=args.sample_length, temperature=args.temperature,
                    top_k=args.top_k, seed=args.seed)
    if args.sample_only:
        _, params, state = init_model(model, jax.random.PRNGKey(args.seed), (-1, args.context))
        optimizer = common.with_precision(args, model, recipe(args, args.lr_adam, args.steps))[1].optimizer
        opt_state = optimizer.init(params)
        like = Checkpoint(params, state, opt_state, 0, jax.random.PRNGKey(args.seed))
        params = load_checkpoint(out / "checkpoint.npz", like=like).params
        sample = sample_text(model, params, vocabulary, args.prompt, **sampling)
        print(f"{args.prompt}{sample}")
        return {"sample": sample}

    lr = common.learning_rate(args)
    run = train(model, args, name="gpt", steps=args.steps, peak_lr=lr, seq_len=args.context,
                batch_size=args.batch_size, data=data, out=out, time_budget=args.time_budget, resume=args.resume)
    sample = sample_text(model, run["params"], vocabulary, args.prompt, **sampling)
    print(f"[gpt] sample (temperature {args.temperature}, top-k {args.top_k}):\n{args.prompt}{sample}\n")
    settings = {k: getattr(args, k) for k in ("layers", "heads", "d_model", "hidden", "context", "batch_size",
                                              "dropout", "warmup", "min_lr", "weight_decay", "beta2", "clip", "seed")}
    settings |= common.with_precision(args, model, recipe(args, lr, args.steps))[2]
    metrics = {"gpt": summary(run, settings | {"lr": lr, "scheduled_steps": args.steps, "sample": sample}),
               "text": args.text or "shipped Shakespeare (purenet/data/shakespeare.txt)",
               "vocabulary_size": len(vocabulary), "prompt": args.prompt, "temperature": args.temperature,
               "top_k": args.top_k}
    runs = {"gpt": run}
    if args.compare:
        lstm, budget = build_lstm(args, len(vocabulary)), run["train_seconds"]
        shape = dict(peak_lr=args.lstm_lr, seq_len=args.context, batch_size=args.lstm_batch_size, data=data)
        steps = calibrate_steps(lstm, args, seconds=budget, **shape)
        runs["lstm"] = train(lstm, args, name="lstm", steps=steps, out=common.out_dir(args, "lstm"),
                             time_budget=budget, **shape)
        metrics["lstm"] = summary(runs["lstm"], {"hidden": args.lstm_hidden, "embedding": args.lstm_embedding,
                                                  "lr": args.lstm_lr, "batch_size": args.lstm_batch_size,
                                                  "scheduled_steps": steps})
        table = ["| model | params | steps | training s | tokens/s | val nats/char |", "|---|---|---|---|---|---|"]
        table += [f"| {name} | {r['num_params']:,} | {r['steps']} | {r['train_seconds']:.0f} | "
                  f"{r['tokens_per_s']:,} | {r['val_loss']:.3f} |" for name, r in runs.items()]
        print("\n".join(table))
        metrics["table"] = "\n".join(table)
    plot_curves(runs, out / "val_loss.png", "validation loss, character-level Shakespeare")
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    common.write_metrics(out / "metrics.json", metrics)
    print(f"[gpt] validation loss {run['val_loss']:.3f} nats/char after {run['steps']} steps, "
          f"{run['train_seconds']:.0f} s of training, {run['tokens_per_s']:,} tokens/s; "
          f"wall time {metrics['wall_time_s']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()
