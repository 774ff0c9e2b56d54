"""Greedy and beam-search decoding of a `Seq2Seq` model, jitted, with or without caches.

Dimension letters: N sentences, B beams, S source positions, L the most tokens to produce, V vocabulary.
Both searches encode the source once, then produce one token per step from BOS until every sentence
has produced EOS or L tokens; after its EOS a sentence (or beam) produces PAD. PAD and BOS are never
chosen (probabilities are still normalized over the whole vocabulary). `cache` chooses how a
step gets its logits:

- "full": the decoder's self-attention keys and values are cached, and the cross-attention's keys and
  values of the memory are projected once per sentence (`Seq2Seq.start(..., cache_cross=True)`);
- "self": only the self-attention is cached; the memory is projected again at every step;
- "none": no cache: every step runs the whole decoder (`Seq2Seq.decode`) on the tokens so far (padded to
  L; causal, so the padding does not change them) and takes the logits at the current position.

All three give the same tokens (up to float rounding in the logits); they differ in speed. On XLA's CPU
backend "self" compiles to the program "full" is: the memory's projection depends on nothing the loop
changes, and XLA's loop-invariant code motion moves it out of the `lax.while_loop` (the optimized HLO of
the two holds the same instructions). "full" does the hoisting in the program itself, on every backend.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from purenet import compiler
from purenet._checks import check_choice, check_int, check_real, fail
from purenet.data.pairs import BOS, EOS
from purenet.models.seq2seq import Seq2Seq

CACHES = ("full", "self", "none")


def _stepper(model: Seq2Seq, cache: str, pad: int):
    """-> (start(params, memory, max_len) -> (context, state), step(params, context, state, tokens (N,),
    pos) -> (logits (N, V), state)); every leaf of `state` is (N, ...) or a scalar."""
    if cache != "none":
        return partial(model.start, cache_cross=cache == "full"), model.step

    def start(params, memory, max_len):
        del params
        batch = jax.tree_util.tree_leaves(memory)[0].shape[0]
        return memory, jnp.full((batch, max_len), pad, jnp.int32)  # the tokens so far

    def step(params, memory, tokens_so_far, tokens, pos):
        tokens_so_far = lax.dynamic_update_slice_in_dim(tokens_so_far, tokens[:, None], pos, axis=1)
        logits = model.decode(params, memory, tokens_so_far)  # (N, L, V)
        return lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False), tokens_so_far

    return start, step


def _allowed(logits, pad: int, bos: int):
    """Logits (N, V) with PAD and BOS ruled out: a hypothesis never produces them (EOS ends it)."""
    banned = (jnp.arange(logits.shape[-1]) == pad) | (jnp.arange(logits.shape[-1]) == bos)
    return jnp.where(banned, -jnp.inf, logits)


def _check(owner: str, model, src, max_len: int, cache: str):
    if not isinstance(model, Seq2Seq):
        fail(owner, f"expects a Seq2Seq model (purenet.models.seq2seq), got {type(model).__name__}")
    check_int(owner, "max_len", max_len, 1)
    check_choice(owner, "cache", cache, CACHES)
    src = jnp.asarray(src)
    if src.ndim != 2 or not jnp.issubdtype(src.dtype, jnp.integer):
        fail(owner, f"expected src ids of shape (N, S), got {src.dtype} {tuple(src.shape)}")
    return src


def _greedy(model, params, src, *, max_len, cache, bos, eos):
    start, step = _stepper(model, cache, model.pad_id)
    context, state = start(params, model.encode(params, src), max_len)
    n = src.shape[0]

    def body(carry):
        pos, tokens, done, state, out = carry
        logits, state = step(params, context, state, tokens, pos)
        best = jnp.argmax(_allowed(logits, model.pad_id, bos), axis=-1).astype(jnp.int32)
        tokens = jnp.where(done, model.pad_id, best)  # (N,)
        out = lax.dynamic_update_slice_in_dim(out, tokens[:, None], pos, axis=1)
        return pos + 1, tokens, done | (tokens == eos), state, out

    def running(carry):
        return (carry[0] < max_len) & ~jnp.all(carry[2])

    init = (jnp.zeros((), jnp.int32), jnp.full((n,), bos, jnp.int32), jnp.zeros((n,), bool), state,
            jnp.full((n, max_len), model.pad_id, jnp.int32))
    return lax.while_loop(running, body, init)[-1]


def greedy_search(model: Seq2Seq, params, src, *, max_len: int, cache: str = "full", bos: int = BOS,
                  eos: int = EOS, compiler_options="auto") -> jax.Array:
    """The most likely next token at every step: src (N, S) -> tokens (N, max_len) int32, each row the
    tokens up to and including EOS, then PAD. One jitted program (a `lax.while_loop` that stops when
    every row has its EOS); `cache` as in the module docstring; `compiler_options`: "auto", None or a
    dict of XLA options (`purenet.compiler`)."""
    src = _check("greedy_search", model, src, max_len, cache)
    run = compiler.jit_per_model(_greedy, model, owner="greedy_search", compiler_options=compiler_options,
                                 static_argnames=("model", "max_len", "cache", "bos", "eos"))
    return run(model, params, src, max_len=max_len, cache=cache, bos=bos, eos=eos)


def penalty_factor(length, alpha):
    """GNMT's ((5 + length) / 6) ** alpha (Wu et al. 2016): a hypothesis' score is its log-probability
    divided by this; alpha = 0 ranks by log-probability, larger alpha favours longer hypotheses."""
    return ((5.0 + length) / 6.0) ** alpha


def _beam(model, params, src, alpha, *, beam, max_len, cache, bos, eos):
    start, step = _stepper(model, cache, model.pad_id)
    n, B = src.shape[0], beam
    dtype = jnp.promote_types(jax.tree_util.tree_leaves(params)[0].dtype, jnp.float32)  # of the scores
    alpha = alpha.astype(dtype)
    memory = jax.tree_util.tree_map(lambda a: jnp.repeat(a, B, axis=0), model.encode(params, src))  # (N B, ...)
    context, state = start(params, memory, max_len)

    # Each beam offers V candidates (score + log p(token)); a finished beam offers itself once (PAD,
    # score unchanged). Candidates are ranked by score / penalty_factor(their length); the top B of
    # the N x (B V) survive, their caches reordered along axis 0.
    def body(carry):
        pos, tokens, scores, lengths, done, state, out = carry
        logits, state = step(params, context, state, tokens, pos)
        logp = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
        logp = _allowed(logp, model.pad_id, bos).reshape(n, B, -1)  # (N, B, V)
        V = logp.shape[-1]
        stay = jnp.where(jnp.arange(V) == model.pad_id, scores[..., None], -jnp.inf)  # (N, B, V)
        candidates = jnp.where(done[..., None], stay, scores[..., None] + logp)
        cand_lengths = jnp.where(done, lengths, pos + 1)[..., None]  # (N, B, 1)
        ranked = (candidates / penalty_factor(cand_lengths.astype(dtype), alpha)).reshape(n, B * V)
        _, index = lax.top_k(ranked, B)  # (N, B)
        origin, tokens = index // V, (index % V).astype(jnp.int32)
        scores = jnp.take_along_axis(candidates.reshape(n, B * V), index, axis=1)
        was_done = jnp.take_along_axis(done, origin, axis=1)
        lengths = jnp.where(was_done, jnp.take_along_axis(lengths, origin, axis=1), pos + 1)
        out = jnp.take_along_axis(out, origin[..., None], axis=1)
        out = lax.dynamic_update_slice_in_dim(out, tokens[..., None], pos, axis=2)
        rows = (jnp.arange(n)[:, None] * B + origin).reshape(-1)  # (N B,)
        state = jax.tree_util.tree_map(lambda a: a[rows] if a.ndim else a, state)
        return pos + 1, tokens.reshape(-1), scores, lengths, was_done | (tokens == eos), state, out

    def running(carry):
        return (carry[0] < max_len) & ~jnp.all(carry[4])

    scores = jnp.full((n, B), -jnp.inf, dtype).at[:, 0].set(0.0)  # one live beam to start
    init = (jnp.zeros((), jnp.int32), jnp.full((n * B,), bos, jnp.int32), scores, jnp.zeros((n, B), jnp.int32),
            jnp.zeros((n, B), bool), state, jnp.full((n, B, max_len), model.pad_id, jnp.int32))
    _, _, scores, lengths, _, _, out = lax.while_loop(running, body, init)
    best = jnp.argmax(scores / penalty_factor(lengths.astype(dtype), alpha), axis=1)  # (N,)
    return (jnp.take_along_axis(out, best[:, None, None], axis=1)[:, 0],
            jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0])


def beam_search(model: Seq2Seq, params, src, *, beam: int, max_len: int, length_penalty: float = 0.0,
                cache: str = "full", bos: int = BOS, eos: int = EOS,
                compiler_options="auto") -> tuple[jax.Array, jax.Array]:
    """Beam search: src (N, S) -> (tokens (N, max_len) int32 as `greedy_search`'s, log-probability (N,)
    of each sentence's best hypothesis, float32 or the params' wider dtype). Hypotheses are ranked by
    log-probability / penalty_factor(length, length_penalty), finished ones keeping their slot in the
    beam; with beam 1 this is `greedy_search`, for any length penalty. One jitted program; `cache` as
    in the module docstring; `compiler_options` as for `greedy_search`."""
    src = _check("beam_search", model, src, max_len, cache)
    check_int("beam_search", "beam", beam, 1)
    alpha = check_real("beam_search", "length_penalty", length_penalty, finite=True)
    run = compiler.jit_per_model(_beam, model, owner="beam_search", compiler_options=compiler_options,
                                 static_argnames=("model", "beam", "max_len", "cache", "bos", "eos"))
    return run(model, params, src, jnp.asarray(alpha), beam=beam, max_len=max_len, cache=cache, bos=bos, eos=eos)
