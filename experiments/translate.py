"""English-to-French translation, by characters or subword units: an encoder-decoder Transformer or an LSTM.

Trains on the shipped Tatoeba pairs (purenet/data/TATOEBA.md) or any `source<TAB>target` file
(--pairs), split by distinct source sentence (5% validation, 5% test, seeded by --split-seed: no
source sentence in two splits), keeping the pairs that fit --max-src-len / --max-tgt-len characters.
Units: a sentencepiece vocabulary of --vocab-size per side (BPE by default, or --units unigram) trained
on the training split only (cached in the run's folder), or characters (--units char). Batches come from
--buckets length classes, each padded to its own lengths (1: every batch at the longest pair's).
Teacher forcing, masked cross-entropy with label smoothing, clipping by global norm, AdamW (decay on
matrices only) with a linear warmup and cosine decay. Decodes by beam search (--beam, --length-penalty),
or greedily with --beam 1, on the KV cache, sources sorted by length. Reports on the held-out split
(--report validation for choosing hyperparameters, test for the final figure), on the decoded text
whatever the units: exact match (the output equals one of the source's reference translations),
character accuracy (1 - the character error rate against the closest reference), chrF (sacrebleu, all
references), sample translations, and decoding speed with and without the caches (tokens/s; the
outputs must be identical). The shared --epochs and --data-dir flags are unused (see --steps and
--pairs); --optimizer adam means AdamW here.

    python experiments/translate.py                        # the recipe: Transformer (post-LN), BPE 1000, beam 4
    python experiments/translate.py --model lstm --steps 6200   # the LSTM encoder-decoder baseline
    python experiments/translate.py --units char --steps 4200   # character level
    python experiments/translate.py --pre-ln --beam 1      # pre-LN blocks, greedy decoding
    python experiments/translate.py --pairs deu.txt --max-src-len 40 --report validation
    python experiments/translate.py --from-checkpoint runs/translate/transformer/checkpoint.npz
    python experiments/translate.py --bucket-speed 20      # training tokens/s by --buckets 1 and 4, side by side
    python experiments/translate.py --quick                # smoke run, seconds
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import numpy as np

import common
from purenet.core import init_model
from purenet.data.pairs import (EOS, PAD, PairBatch, Vocabulary, char_vocabularies, encode_pairs, fits,
                                length_buckets, load_pairs, pad_ids, split_pairs, subword_vocabularies)
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models.search import beam_search, greedy_search
from purenet.models.seq2seq import (LSTMSeq2SeqConfig, Seq2SeqInput, TransformerConfig, lstm_seq2seq,
                                    transformer_seq2seq)
from purenet.training import Checkpoint, Run, make_eval_step, make_train_step, run_steps
from purenet.training.checkpoint import load_checkpoint

NAME = "translate"
DECODE_BATCH = 256
# --quick trains without dropout: its masks add about a quarter to the compilation of the training step.
QUICK = dict(steps=6, warmup=2, layers=1, d_model=16, heads=2, ff=32, dropout=0.0, hidden=32, embedding=16,
             batch_size=16, max_src_len=12, max_tgt_len=24, train_pairs=500, report_sentences=16, speed_sentences=16,
             speed_repeats=1, eval_every=3, samples=3, vocab_size=120, buckets=2, beam=1)


def build_model(args, src_vocab: int, tgt_vocab: int):
    """The `Seq2Seq` of --model: `purenet.models.seq2seq`'s Transformer or LSTM encoder-decoder. Its
    learned positions (if any) have room for --max-src-len / --max-tgt-len + 1 tokens (a piece holds at
    least one character)."""
    if args.model == "lstm":
        return lstm_seq2seq(LSTMSeq2SeqConfig(src_vocab, tgt_vocab, layers=args.layers, hidden=args.hidden,
                                              embedding=args.embedding))
    return transformer_seq2seq(TransformerConfig(
        src_vocab, tgt_vocab, layers=args.layers, d_model=args.d_model, heads=args.heads, hidden=args.ff,
        dropout=args.dropout, pre_ln=args.pre_ln, positions=args.positions,
        max_len=max(args.max_src_len, args.max_tgt_len) + 1))


def recipe(args) -> common.Recipe:
    """Clip to global norm --clip, then AdamW (decay on matrices) or SGD with momentum, the rate rising
    linearly over --warmup steps to --lr and decaying along a cosine to --lr / 10 at the last step."""
    return common.make_optimizer(args, steps=args.steps, warmup=args.warmup, end_lr=lambda lr: lr / 10,
                                 clip=args.clip, weight_decay=args.weight_decay)


# ------------------------------------------------------------------------------------------- data


def grouped(pairs) -> tuple[list[str], list[list[str]]]:
    """Each distinct source once, in order of first appearance, with all its targets (references)."""
    refs: dict[str, list[str]] = {}
    for source, target in pairs:
        refs.setdefault(source, []).append(target)
    return list(refs), list(refs.values())


def load_data(args, cache=None):
    """-> (train pairs, validation pairs, test pairs, source vocabulary, target vocabulary), the pairs
    already cut to the length caps (the split is made before the cut, so it does not depend on them), the
    vocabularies of --units built on the training pairs (subword models read from or written to `cache`)."""
    pairs = load_pairs(args.pairs)
    splits = split_pairs(pairs, validation=0.05, test=0.05, seed=args.split_seed)
    keep = [[p for p in split if fits(p, src_len=args.max_src_len + 1, tgt_len=args.max_tgt_len + 1)]
            for split in splits]
    train = keep[0]
    if args.train_pairs and len(train) > args.train_pairs:
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(train), args.train_pairs, replace=False))
        train = [train[i] for i in chosen]
    if not train or not keep[1] or not keep[2]:
        raise SystemExit(f"translate: no pairs left in a split under --max-src-len {args.max_src_len} and "
                         f"--max-tgt-len {args.max_tgt_len} (train {len(train)}, validation {len(keep[1])}, "
                         f"test {len(keep[2])})")
    if args.units == "char":
        source, target = char_vocabularies(train)
    else:
        source, target = subword_vocabularies(train, args.vocab_size, kind=args.units, cache=cache)
    print(f"pairs: {args.pairs or 'shipped Tatoeba English-French'}, {len(pairs):,} in all; with at most "
          f"{args.max_src_len} / {args.max_tgt_len} characters: {len(train):,} train, {len(keep[1]):,} "
          f"validation, {len(keep[2]):,} test; {args.units} vocabularies {source.size} / {target.size} (4 "
          f"special ids)")
    return train, keep[1], keep[2], source, target


# -------------------------------------------------------------------------------------- metrics


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of characters), row by row."""
    row = np.arange(len(b) + 1)
    codes = np.array([ord(c) for c in b], np.int64)
    for i, ch in enumerate(a, 1):
        diagonal = row[:-1] + (codes != ord(ch))  # substitution (0 for a match)
        new = np.concatenate([[i], np.minimum(diagonal, row[1:] + 1)])  # and deletion
        row = np.minimum.accumulate(new - np.arange(len(b) + 1)) + np.arange(len(b) + 1)  # insertions
    return int(row[-1])


def exact_match(hypotheses: list[str], references: list[list[str]]) -> float:
    """The fraction of hypotheses equal to one of their references."""
    return float(np.mean([h in refs for h, refs in zip(hypotheses, references)]))


def char_accuracy(hypotheses: list[str], references: list[list[str]]) -> float:
    """1 - CER: 1 - (sum of edit distances to each hypothesis' closest reference) / (sum of those
    references' lengths). 1 is perfect; it goes below 0 when the outputs are longer garbage."""
    errors = total = 0
    for h, refs in zip(hypotheses, references):
        distance, ref = min((edit_distance(h, r), r) for r in refs)
        errors, total = errors + distance, total + len(ref)
    return 1.0 - errors / max(total, 1)


def chrf(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus chrF (sacrebleu's CHRF: character 6-grams, beta 2), each hypothesis against all its
    references (the closest counts), on the 0-100 scale."""
    from sacrebleu.metrics import CHRF

    width = max(map(len, references))
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return float(CHRF().corpus_score(hypotheses, streams).score)


# ------------------------------------------------------------------------------------- decoding


class Lengths(NamedTuple):
    """Padded lengths in tokens: the model's sources S and targets T (+ EOS, + BOS or EOS), and the widths
    a batch of sources is padded to for decoding (a few, so decoding compiles a few shapes)."""

    src: int
    tgt: int
    widths: tuple[int, ...]


def token_lengths(pairs, source: Vocabulary, target: Vocabulary) -> Lengths:
    """The longest source and target of `pairs` in tokens (+1 each); decoding widths every 8 tokens."""
    S = max(len(source.encode(s)) for s, _ in pairs) + 1
    T = max(len(target.encode(t)) for _, t in pairs) + 1
    return Lengths(S, T, tuple(sorted({*range(8, S, 8), S})))


def source_ids(sources: list[str], vocabulary: Vocabulary, length: int) -> np.ndarray:
    """Sources (tokens then EOS), right-padded -> int32 (N, length)."""
    return pad_ids([np.append(vocabulary.encode(s), EOS) for s in sources], length)


def decode_ids(model, params, src: np.ndarray, args, lengths: Lengths, *, cache: str = "full") -> np.ndarray:
    """Greedy (--beam 1) or beam search over src (N, S) -> tokens (N, lengths.tgt), in the input's order.
    The sources go in order of length, DECODE_BATCH at a time, each batch cut to the narrowest of
    `lengths.widths` that holds it (the last one filled with copies, so a width compiles once); a batch
    stops as soon as all its sentences have produced EOS."""
    size, src_tokens = min(DECODE_BATCH, len(src)), np.sum(src != PAD, axis=1)
    order = np.argsort(src_tokens, kind="stable")
    out = np.full((len(src), lengths.tgt), PAD, np.int32)
    for start in range(0, len(src), size):
        index = order[start:start + size]
        batch = src[index]
        width = next(w for w in lengths.widths if w >= src_tokens[index].max())
        full = np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])[:, :width]
        if args.beam > 1:
            tokens, _ = beam_search(model, params, full, beam=args.beam, max_len=lengths.tgt,
                                    length_penalty=args.length_penalty, cache=cache)
        else:
            tokens = greedy_search(model, params, full, max_len=lengths.tgt, cache=cache)
        out[index] = np.asarray(tokens)[:len(batch)]
    return out


def decode_speed(model, params, src: np.ndarray, args, lengths: Lengths) -> dict:
    """Tokens per second (produced tokens, EOS included, PAD not) of decoding src with each cache: after
    a compiling run, --speed-repeats timed runs, the caches taking turns, and the fastest run of each
    (on a shared machine the slower ones measure the neighbours). Also how many sentences differ from
    the "full" cache's (`main` fails after writing the metrics unless none does). The "self" cache is
    not timed: XLA hoists the memory's projection out of the decoding loop, so it compiles to the same
    program as "full" (same instructions in the optimized HLO on the CPU)."""
    caches = ("full", "none")
    tokens = {cache: decode_ids(model, params, src, args, lengths, cache=cache) for cache in caches}  # compile
    seconds = {cache: [] for cache in caches}
    for _ in range(args.speed_repeats):
        for cache in caches:
            tick = time.perf_counter()
            decode_ids(model, params, src, args, lengths, cache=cache)
            seconds[cache].append(time.perf_counter() - tick)
    results = {}
    for cache in caches:
        produced, best = int(np.sum(tokens[cache] != PAD)), min(seconds[cache])
        results[cache] = {"tokens": produced, "seconds": round(best, 3), "tokens_per_s": round(produced / best, 1),
                          "all_seconds": [round(t, 3) for t in seconds[cache]],
                          "sentences_differing": int(np.sum(np.any(tokens[cache] != tokens["full"], axis=1)))}
    return results


# ------------------------------------------------------------------------------------- training


def as_batch(encoded: PairBatch, index) -> dict:
    return {"x": Seq2SeqInput(encoded.src[index], encoded.tgt_in[index]),
            "y": TokenTargets(encoded.tgt_out[index], encoded.tgt_out[index] != PAD)}


def in_shape(lengths: Lengths) -> Seq2SeqInput:
    return Seq2SeqInput((-1, lengths.src), (-1, lengths.tgt))


def checkpoint_template(model, args, lengths: Lengths) -> Checkpoint:
    """The `like=` of `load_checkpoint` for this run's checkpoint (shapes only, nothing computed)."""
    params, state = jax.eval_shape(lambda: init_params(model, args, lengths))
    opt_state = jax.eval_shape(recipe(args).optimizer.init, params)
    return Checkpoint(params, state, opt_state, 0, jax.random.PRNGKey(args.seed))


def init_params(model, args, lengths: Lengths):
    """-> (params, state) of `model` at --seed, init jitted (one program, not an op at a time)."""
    return jax.jit(lambda key: init_model(model.layer, key, in_shape(lengths))[1:])(jax.random.PRNGKey(args.seed))


def bucket_sampler(buckets: list[PairBatch], batch_size: int, seed: int):
    """-> batch_at(step): a batch of `batch_size` pairs from one length class, the class drawn with
    probability proportional to its size, its pairs without replacement (a new permutation of the class
    when it runs out). Seeded: the same seed gives the same batches."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(b.src) for b in buckets])
    orders = [np.zeros(0, np.int64) for _ in buckets]

    def batch_at(step: int) -> dict:
        k = rng.choice(len(buckets), p=sizes / sizes.sum())
        if len(orders[k]) < batch_size:
            orders[k] = np.concatenate([orders[k], rng.permutation(sizes[k])])
        index, orders[k] = orders[k][:batch_size], orders[k][batch_size:]
        return as_batch(buckets[k], index)

    return batch_at


def train_step(args, model, optimizer):
    """The jitted training step: masked cross-entropy with --label-smoothing, `optimizer`'s update."""
    loss = masked_softmax_cross_entropy(label_smoothing=args.label_smoothing)
    return make_train_step(model.layer, loss, optimizer, metrics={})


def train(args, model, optimizer, encoded, val_encoded, lengths: Lengths, out):
    """--steps steps on `run_steps` of batches from --buckets length classes (`bucket_sampler`), fewer if
    --time-limit minutes of training steps pass first (the schedule still spans --steps); the validation
    cross-entropy (per target token, over the whole split) and a checkpoint in `out` every --eval-every
    steps. -> (params, state, history {"step", "train_loss", "val_loss"}, training seconds, target tokens
    trained on)."""
    step_fn = train_step(args, model, optimizer)
    eval_fn = make_eval_step(model.layer, masked_softmax_cross_entropy(reduction="sum"), metrics={})
    common.print_summary(model.layer, in_shape(lengths))
    params, state = init_params(model, args, lengths)
    sample = bucket_sampler(length_buckets(encoded, args.buckets), args.batch_size, args.seed)
    val_batches = [as_batch(b, slice(i, i + DECODE_BATCH)) for b in length_buckets(val_encoded, args.buckets)
                   for i in range(0, len(b.src), DECODE_BATCH)]
    val_tokens = int(np.sum(val_encoded.tgt_out != PAD))
    history, tokens = {"step": [], "train_loss": [], "val_loss": []}, []
    start = time.perf_counter()

    def batch_at(step: int) -> dict:
        batch = sample(step)
        tokens.append(int(np.sum(batch["y"].mask)))
        return batch

    def on_eval(run: Run) -> None:
        val = sum(float(eval_fn(run.params, run.state, b)["loss"]) for b in val_batches) / val_tokens
        train_loss = float(np.mean([m["loss"] for m in run.metrics[-args.eval_every:]]))
        for name, value in (("step", run.step), ("train_loss", train_loss), ("val_loss", val)):
            history[name].append(value)
        print(f"[{args.model}] step {run.step}/{args.steps}: train loss {train_loss:.3f} (smoothed target), "
              f"validation cross-entropy {val:.3f} nats/{args.units}, {time.perf_counter() - start:.0f} s")

    run = run_steps(step_fn, params, state, optimizer.init(params), batch_at, key=jax.random.PRNGKey(args.seed),
                    steps=args.steps, eval_every=args.eval_every, on_eval=on_eval, checkpoint=out / "checkpoint.npz",
                    time_budget=60 * args.time_limit or None)
    if run.step < args.steps:
        print(f"[{args.model}] --time-limit {args.time_limit} min reached after {run.step} steps")
    return run.params, run.state, history, time.perf_counter() - start, sum(tokens)


def bucket_speed(args, model, optimizer, encoded: PairBatch, lengths: Lengths) -> dict:
    """Training target tokens (not PAD) per second with every batch at the full padded lengths (--buckets 1)
    and from --buckets length classes, in this process: after every shape has compiled, --bucket-speed
    steps of each, the two forms taking turns step by step from the same parameters (each form's step
    times summed, the tokens it trained on divided by them)."""
    step_fn = train_step(args, model, optimizer)
    params, state = init_params(model, args, lengths)
    opt_state, key = optimizer.init(params), jax.random.PRNGKey(args.seed)
    forms = {"fixed": length_buckets(encoded, 1), f"{args.buckets} buckets": length_buckets(encoded, args.buckets)}
    samplers = {name: bucket_sampler(buckets, args.batch_size, args.seed) for name, buckets in forms.items()}
    for buckets in forms.values():  # compile every shape
        for b in buckets:
            jax.block_until_ready(step_fn(params, state, opt_state, as_batch(b, slice(args.batch_size)), key))
    seconds, tokens = dict.fromkeys(forms, 0.0), dict.fromkeys(forms, 0)
    for step in range(args.bucket_speed):
        for name, sample in samplers.items():
            batch = sample(step)
            tick = time.perf_counter()
            jax.block_until_ready(step_fn(params, state, opt_state, batch, key))
            seconds[name] += time.perf_counter() - tick
            tokens[name] += int(np.sum(batch["y"].mask))
    rates = {name: tokens[name] / seconds[name] for name in forms}
    shapes = {name: [tuple(b.tgt_out.shape[1:]) + tuple(b.src.shape[1:]) for b in buckets]
              for name, buckets in forms.items()}
    for name in forms:
        print(f"[{args.model}] {name}: {rates[name]:,.0f} target tokens/s over {args.bucket_speed} steps "
              f"(T, S per class: {shapes[name]})")
    ratio = rates[f"{args.buckets} buckets"] / rates["fixed"]
    print(f"[{args.model}] {args.buckets} buckets / fixed: {ratio:.2f}x the target tokens per second")
    return {"tokens_per_s": {k: round(v, 1) for k, v in rates.items()}, "ratio": round(ratio, 3), "shapes": shapes}


def plot_losses(history: dict, path, title: str) -> None:
    fig, ax = common.plt.subplots(figsize=(6.5, 4))
    ax.plot(history["step"], history["train_loss"], marker=".", label="train (label-smoothed)")
    ax.plot(history["step"], history["val_loss"], marker=".", label="validation cross-entropy")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per character")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def below_one(text: str) -> float:
    """A flag type: a finite number in [0, 1) (label smoothing, dropout)."""
    value = common.non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def parse_args(argv):
    parser = common.base_parser(NAME, __doc__.splitlines()[0], epochs=None, batch_size=64, lr_adam=2e-3,
                                lr_sgd=0.1)
    add = parser.add_argument
    positive, count = common.positive_int, common.non_negative_int
    add("--model", choices=("transformer", "lstm"), default="transformer")
    add("--pairs", default=None, help="a tab-separated source/target file (default: the shipped Tatoeba pairs)")
    add("--steps", type=positive, default=7000, help="training steps (default 7000)")
    add("--time-limit", type=common.non_negative_float, default=0,
        help="stop training after this many minutes of training steps (0: no limit)")
    add("--warmup", type=count, default=100, help="linear warmup steps (default 100)")
    add("--clip", type=common.positive_float, default=1.0, help="clip gradients to this global norm")
    add("--weight-decay", type=common.non_negative_float, default=1e-4,
        help="AdamW's decoupled weight decay, matrices only")
    add("--label-smoothing", type=below_one, default=0.1)
    add("--layers", type=positive, default=2, help="encoder and decoder blocks (or LSTM layers) each side")
    add("--d-model", type=positive, default=128, help="Transformer width")
    add("--heads", type=positive, default=4)
    add("--ff", type=positive, default=None, help="Transformer feed-forward width (default 4 x --d-model)")
    add("--dropout", type=below_one, default=0.1, help="Transformer dropout")
    add("--pre-ln", action="store_true", help="pre-LN blocks (default post-LN, as the paper)")
    add("--positions", choices=("sinusoidal", "learned"), default="sinusoidal")
    add("--hidden", type=positive, default=256, help="LSTM hidden size")
    add("--embedding", type=positive, default=64, help="LSTM token embedding size")
    add("--max-src-len", type=positive, default=20, help="keep pairs whose source has at most this many characters")
    add("--max-tgt-len", type=positive, default=40, help="... and whose target has at most this many")
    add("--units", choices=("bpe", "unigram", "char"), default="bpe",
        help="tokens: a sentencepiece BPE / unigram vocabulary per side (trained on the training split), or characters")
    add("--vocab-size", type=positive, default=1000, help="ids per side of a subword vocabulary (4 special)")
    add("--buckets", type=positive, default=4, help="length classes batches are drawn from (1: one padded shape)")
    add("--bucket-speed", type=count, default=0,
        help="time this many training steps with --buckets 1 and with --buckets, side by side, and exit")
    add("--train-pairs", type=count, default=0, help="train on a random subset of this many pairs (0: all)")
    add("--split-seed", type=count, default=0, help="seed of the split by distinct source sentence")
    add("--beam", type=positive, default=4, help="beam size (1: greedy)")
    add("--length-penalty", type=common.non_negative_float, default=0.6,
        help="beam search's GNMT length penalty alpha")
    add("--report", choices=("test", "validation"), default="test",
        help="the split the final metrics are computed on (choose hyperparameters on validation)")
    add("--report-sentences", type=count, default=0, help="decode at most this many of its sources (0: all)")
    add("--speed-sentences", type=positive, default=256, help="sources decoded for the speed comparison")
    add("--speed-repeats", type=positive, default=3, help="timed decoding runs per cache (the fastest counts)")
    add("--eval-every", type=positive, default=1000, help="validation cross-entropy every this many steps")
    add("--samples", type=count, default=8, help="sample translations to print")
    add("--from-checkpoint", default=None, help="evaluate this checkpoint of a run with the same model flags "
        "instead of training (writes into <out-dir>/<model>/evaluated/)")
    args = parser.parse_args(argv)
    if args.quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    out = common.out_dir(args, args.model)
    train_pairs, val_pairs, test_pairs, src_vocab, tgt_vocab = load_data(args, cache=out)
    lengths = token_lengths(train_pairs + val_pairs + test_pairs, src_vocab, tgt_vocab)
    encoded = encode_pairs(train_pairs, src_vocab, tgt_vocab, src_len=lengths.src, tgt_len=lengths.tgt)
    model, chosen = build_model(args, src_vocab.size, tgt_vocab.size), recipe(args)
    if args.bucket_speed:
        return bucket_speed(args, model, chosen.optimizer, encoded, lengths)
    tokens_trained = 0
    if args.from_checkpoint:  # evaluate a run's checkpoint again, without training
        checkpoint = load_checkpoint(args.from_checkpoint, like=checkpoint_template(model, args, lengths))
        params, state, train_seconds = checkpoint.params, checkpoint.state, 0.0
        history = {"step": [checkpoint.step], "train_loss": [float("nan")], "val_loss": [float("nan")]}
        out = out / "evaluated"
        out.mkdir(exist_ok=True)
    else:
        val_encoded = encode_pairs(val_pairs, src_vocab, tgt_vocab, src_len=lengths.src, tgt_len=lengths.tgt)
        params, state, history, train_seconds, tokens_trained = train(
            args, model, chosen.optimizer, encoded, val_encoded, lengths, out)

    sources, references = grouped(test_pairs if args.report == "test" else val_pairs)
    if args.report_sentences:
        sources, references = sources[:args.report_sentences], references[:args.report_sentences]
    src = source_ids(sources, src_vocab, lengths.src)
    tick = time.perf_counter()
    hypotheses = [tgt_vocab.decode(row) for row in decode_ids(model, params, src, args, lengths)]
    decode_seconds = time.perf_counter() - tick
    speed = decode_speed(model, params, src[:args.speed_sentences], args, lengths)
    samples = [{"source": s, "references": r, "output": h}
               for s, r, h in list(zip(sources, references, hypotheses))[:: max(1, len(sources) // args.samples)]
               [:args.samples]]
    metrics = {
        "model": args.model, "report_split": args.report, "report_sentences": len(sources),
        "exact_match": exact_match(hypotheses, references), "char_accuracy": char_accuracy(hypotheses, references),
        "chrf": chrf(hypotheses, references), "decoding": "greedy" if args.beam == 1 else f"beam {args.beam}",
        "length_penalty": args.length_penalty if args.beam > 1 else None,
        "num_params": int(sum(p.size for p in jax.tree.leaves(params))), "train_pairs": len(train_pairs),
        "validation_pairs": len(val_pairs), "test_pairs": len(test_pairs), "steps": history["step"][-1],
        "scheduled_steps": args.steps, "time_limit_min": args.time_limit,
        "batch_size": args.batch_size, "lr": chosen.lr, "warmup": args.warmup, "clip": args.clip,
        "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing, "layers": args.layers,
        **({"d_model": args.d_model, "heads": args.heads, "ff": args.ff or 4 * args.d_model, "dropout": args.dropout,
            "pre_ln": args.pre_ln, "positions": args.positions} if args.model == "transformer"
           else {"hidden": args.hidden, "embedding": args.embedding}),
        "max_src_len": args.max_src_len, "max_tgt_len": args.max_tgt_len, "units": args.units,
        "vocab_size": None if args.units == "char" else args.vocab_size, "vocabularies": [src_vocab.size, tgt_vocab.size],
        "buckets": args.buckets, "token_lengths": [lengths.src, lengths.tgt], "seed": args.seed,
        "split_seed": args.split_seed, "pairs": args.pairs or "shipped Tatoeba (purenet/data/tatoeba-eng-fra.tsv.gz)",
        "final_val_cross_entropy": history["val_loss"][-1], "history": history,
        "train_seconds": round(train_seconds, 1), "train_target_tokens": tokens_trained,
        "train_tokens_per_s": round(tokens_trained / train_seconds, 1) if train_seconds else None,
        "decode_seconds": round(decode_seconds, 1),
        "decode_speed": speed, "samples": samples, "wall_time_s": round(time.perf_counter() - start, 1),
    }
    print(f"[{args.model}] {args.report} split, {len(sources)} sources ({metrics['decoding']}): exact match "
          f"{metrics['exact_match']:.1%}, character accuracy {metrics['char_accuracy']:.1%}, chrF "
          f"{metrics['chrf']:.1f}")
    for cache, result in speed.items():
        print(f"[{args.model}] decoding, cache={cache}: {result['tokens_per_s']:.0f} tokens/s")
    for sample in samples:
        print(f"  {sample['source']!r} -> {sample['output']!r}   (reference: {' | '.join(sample['references'])})")
    if not args.from_checkpoint:
        plot_losses(history, out / "loss.png", f"{args.model}: {len(train_pairs):,} pairs, {metrics['steps']} steps")
    common.write_metrics(out / "metrics.json", metrics)
    if not args.from_checkpoint:
        print(f"checkpoint written to {out / 'checkpoint.npz'}")
    print(f"wall time {metrics['wall_time_s']:.0f} s")
    differing = {cache: r["sentences_differing"] for cache, r in speed.items() if r["sentences_differing"]}
    if differing:
        raise AssertionError(f"decoding without the full cache changed sentences: {differing}")
    return metrics


if __name__ == "__main__":
    main()
