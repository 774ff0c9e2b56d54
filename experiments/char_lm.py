"""Character-level language model (embedding, recurrent layers, dense projection) with handwritten BPTT.

Trains on the shipped Shakespeare plays (purenet/data/SHAKESPEARE.md) or any UTF-8 file (--text), on
random (N, T) windows whose targets are the next characters; per-token softmax cross-entropy, Adam with
gradient clipping by global norm and a cosine-decayed rate. Reports validation bits per character on the
last 10% of the text, and samples from a prompt with a jitted `lax.scan` over single-character steps.
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
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import common
from purenet.checkpoint import save_checkpoint
from purenet.core import fail, init_model, serial
from purenet.data.text import (char_vocabulary, consecutive_windows, decode, encode, load_shakespeare,
                               load_text, split, windows)
from purenet.dense import Dense
from purenet.embedding import Embedding
from purenet.losses import softmax_cross_entropy
from purenet.optim import chain, clip_by_global_norm
from purenet.recurrent import GRU, LSTM, LSTMState, SimpleRNN, gru_cell, lstm_cell, simple_rnn_cell
from purenet.train import make_eval_step, make_train_step

NAME = "char_lm"
CELLS = {"rnn": (SimpleRNN, simple_rnn_cell), "lstm": (LSTM, lstm_cell), "gru": (GRU, gru_cell)}
EVAL_BATCH = 128
QUICK = dict(steps=20, hidden=32, embedding=16, seq_len=32, batch_size=16, val_chars=2048, eval_every=10,
             sample_length=80)


def build_model(vocab_size: int, *, cell: str, hidden: int, layers: int, embedding: int):
    """ids (N, T) -> logits (N, T, V). Params: (embedding, one per recurrent layer, dense)."""
    recurrent = CELLS[cell][0]
    return serial(Embedding(vocab_size, embedding), *[recurrent(hidden) for _ in range(layers)],
                  Dense(vocab_size))


# ------------------------------------------------------------------------------------------ sampling


def _zero_state(cell: str, layer_params):
    h = jnp.zeros((1, layer_params["w_h"].shape[0]), layer_params["w_h"].dtype)  # (1, H)
    return LSTMState(h, h) if cell == "lstm" else h


def next_logits(params, states, token, *, cell: str):
    """One character through the model with the single-step cells: token () int, states (one per
    recurrent layer, each (1, H) or LSTMState) -> (logits (V,), new states)."""
    step = CELLS[cell][1]
    x = params[0]["w"][token][None, :]  # (1, E)
    new_states = []
    for layer_params, state in zip(params[1:-1], states):
        state = step(layer_params, state, x)
        x = state.h if cell == "lstm" else state  # (1, H)
        new_states.append(state)
    logits = x @ params[-1]["w"] + params[-1]["b"][None, :]  # (1, V)
    return logits[0], tuple(new_states)


def _feed(params, ids, cell):
    """Run ids (P,) from zero states -> (states after them, logits (P, V))."""
    states = tuple(_zero_state(cell, p) for p in params[1:-1])

    def feed_one(states, token):
        logits, states = next_logits(params, states, token, cell=cell)
        return states, logits

    return lax.scan(feed_one, states, ids)


def sequence_logits(params, ids, *, cell: str):
    """The sampler's step-by-step logits for ids (P,) -> (P, V); equals the model's apply on ids[None]."""
    return _feed(params, ids, cell)[1]


@partial(jax.jit, static_argnames=("cell", "length"))
def sample(params, prompt_ids, key, temperature, *, cell: str, length: int):
    """Continue prompt_ids (P,) int, P >= 1, by `length` characters drawn from softmax(logits / temperature)
    (temperature 0: the argmax) -> ids (length,) int32. One `lax.scan` feeds the prompt, one samples."""
    states, logits = _feed(params, prompt_ids, cell)

    def draw(carry, key):
        states, logits = carry
        scaled = logits / jnp.maximum(temperature, 1e-6)
        token = jnp.where(temperature > 0, jax.random.categorical(key, scaled), jnp.argmax(logits))
        logits, states = next_logits(params, states, token, cell=cell)
        return (states, logits), token.astype(jnp.int32)

    _, tokens = lax.scan(draw, (states, logits[-1]), jax.random.split(key, length))
    return tokens


def generate(params, vocabulary: str, prompt: str, *, cell: str, length: int, temperature: float,
             seed: int = 0) -> str:
    """The `length` characters sampled after `prompt` (prompt not included)."""
    if not prompt:
        fail("generate", "prompt must be a non-empty string")
    ids = sample(params, jnp.asarray(encode(prompt, vocabulary)), jax.random.PRNGKey(seed),
                 jnp.float32(temperature), cell=cell, length=length)
    return decode(np.asarray(ids), vocabulary)


# ------------------------------------------------------------------------------------------ training


def make_optimizer(args, steps: int):
    """Clip the gradient to global norm --clip, then Adam (or SGD) with a cosine-decayed rate."""
    return chain(clip_by_global_norm(args.clip), common.make_optimizer(args, decay_steps=steps))


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
    """Train one model for args.steps steps; write checkpoint.npz, loss.png, metrics.json to `out`.
    -> (metrics, training bits/char per step)."""
    start = time.perf_counter()
    model = build_model(len(vocabulary), cell=cell, hidden=args.hidden, layers=args.layers,
                        embedding=args.embedding)
    _, params, state = init_model(model, jax.random.PRNGKey(args.seed), (-1, args.seq_len))
    loss, optimizer = softmax_cross_entropy(), make_optimizer(args, args.steps)
    train_step, eval_step = make_train_step(model, loss, optimizer), make_eval_step(model, loss)
    opt_state = optimizer.init(params)
    val_x, val_y = consecutive_windows(val_ids, args.seq_len)
    base_key = jax.random.PRNGKey(args.seed)

    train_losses, val_history, step_seconds = [], [], []
    for step in range(args.steps):
        tick = time.perf_counter()
        x, y = windows(train_ids, args.seq_len, num_windows=args.batch_size, seed=(args.seed, step))
        params, state, opt_state, metrics = train_step(params, state, opt_state, {"x": x, "y": y},
                                                       jax.random.fold_in(base_key, step))
        jax.block_until_ready(params)  # time each step whole; the first one includes compilation
        step_seconds.append(time.perf_counter() - tick)
        train_losses.append(metrics["loss"])
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val = evaluate(eval_step, params, state, val_x, val_y)
            val_history.append((step + 1, bits(val["loss"])))
            print(f"[{cell}] step {step + 1}/{args.steps}: train {bits(float(metrics['loss'])):.3f}, "
                  f"val {bits(val['loss']):.3f} bits/char")

    train_bits = [bits(v) for v in jax.device_get(train_losses)]
    sample_text = generate(params, vocabulary, args.prompt, cell=cell, length=args.sample_length,
                           temperature=args.temperature, seed=args.seed)
    save_checkpoint(out / "checkpoint.npz", params=params, state=state, opt_state=opt_state,
                    step=args.steps, key=base_key)
    plot_curves({cell: (train_bits, val_history)}, out / "loss.png",
                f"char-level {cell.upper()} ({args.hidden} hidden x {args.layers})")
    tail = train_bits[-args.eval_every:]
    metrics = {
        "cell": cell, "hidden": args.hidden, "layers": args.layers, "embedding": args.embedding,
        "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
        "optimizer": args.optimizer, "lr": args.lr, "clip": args.clip, "seed": args.seed,
        "text": args.text or "shipped Shakespeare (purenet/data/shakespeare.txt)",
        "vocabulary": vocabulary, "train_chars": len(train_ids), "val_chars": len(val_ids),
        "num_params": int(sum(p.size for p in jax.tree.leaves(params))),
        "val_bits_per_char": val_history[-1][1], "val_accuracy": val["accuracy"],
        "train_bits_per_char": float(np.mean(tail)), "val_history": val_history,
        "ms_per_step": 1e3 * float(np.median(step_seconds[1:] or step_seconds)),
        "first_step_s": round(step_seconds[0], 2),
        "prompt": args.prompt, "temperature": args.temperature, "sample": sample_text,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    common.write_metrics(out / "metrics.json", metrics)
    print(f"[{cell}] sample (temperature {args.temperature}):\n{args.prompt}{sample_text}\n")
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
    add("--steps", type=int, default=2000, help="training steps (default 2000); --epochs overrides it "
        "with epochs x (training characters // (batch-size x seq-len))")
    add("--cell", choices=tuple(CELLS), default="lstm")
    add("--hidden", type=int, default=256, help="hidden size of each recurrent layer")
    add("--layers", type=int, default=1, help="number of stacked recurrent layers")
    add("--embedding", type=int, default=64, help="character embedding size")
    add("--seq-len", type=int, default=64, help="characters per training window (BPTT length)")
    add("--clip", type=float, default=1.0, help="clip gradients to this global norm")
    add("--val-fraction", type=float, default=0.1, help="last fraction of the text held out")
    add("--val-chars", type=int, default=65536, help="evaluate on at most this many held-out characters "
        "(0: all)")
    add("--eval-every", type=int, default=200, help="evaluate every this many steps")
    add("--text", default=None, help="train on this UTF-8 file instead of the shipped Shakespeare")
    add("--prompt", default="\n", help="text the sample continues (default a newline)")
    add("--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)")
    add("--sample-length", type=int, default=400)
    add("--compare", action="store_true", help="train rnn, lstm and gru for the same steps; print a table")
    args = parser.parse_args(argv)
    if args.quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    for name in ("steps", "hidden", "layers", "embedding", "seq_len", "batch_size", "eval_every",
                 "sample_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.temperature < 0 or args.clip <= 0 or args.val_chars < 0:
        parser.error("--temperature must be >= 0, --clip > 0 and --val-chars >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    text = load_shakespeare() if args.text is None else load_text(args.text)
    vocabulary = char_vocabulary(text)
    encode(args.prompt, vocabulary)  # fail now, not after training, if the prompt has unknown characters
    train_ids, val_ids = split(encode(text, vocabulary), args.val_fraction)
    if args.val_chars:
        val_ids = val_ids[:args.val_chars + 1]
    if args.epochs is not None:
        args.steps = args.epochs * max(1, len(train_ids) // (args.batch_size * args.seq_len))
    source = args.text or "shipped Shakespeare"
    print(f"text: {source}, {len(text):,} characters, vocabulary {len(vocabulary)}; "
          f"{len(train_ids):,} train / {len(val_ids):,} validation characters; {args.steps} steps"
          + (" (--quick)" if args.quick else ""))
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
