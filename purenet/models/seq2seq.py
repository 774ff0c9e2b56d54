"""Sequence-to-sequence models: the "Attention Is All You Need" encoder-decoder Transformer and an LSTM
encoder-decoder without attention (the baseline that shows what attention buys).

Dimension letters: N batch, S source positions, T target positions, F features (d_model), V target
vocabulary, H the LSTM's hidden size. Both take `Seq2SeqInput(src (N, S), tgt (N, T))` of int ids,
right-padded with `pad_id`, the target being the decoder's input (BOS first: teacher forcing), and give
logits (N, T, V). Each returns a `Seq2Seq`: its `layer` (for `make_train_step`) and the functions that
decode one position at a time (`purenet.models.search` runs greedy and beam search on them):

    encode(params, src)                                  -> memory
    decode(params, memory, tgt)                          -> logits (N, T, V)  (no cache: whole target)
    start(params, memory, max_len, *, cache_cross=True)  -> (context, cache)
    step(params, context, cache, tokens (N,), pos)       -> (logits (N, V), cache)

`context` is fixed for a sentence (the memory, or the cross-attention keys and values projected once
with `cache_cross`); `cache` changes every step (self-attention keys and values, the LSTM's state),
every leaf (N, ...) or a scalar, so a beam search can reorder it along axis 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_bool, check_choice, check_positive, check_range, fail
from purenet.combinators import Tape, select, serial, taped
from purenet.core import Layer
from purenet.layers import (LSTM, DecoderBlock, Dense, Dropout, Embedding, EncoderBlock, LayerNorm,
                            LearnedPositions, LSTMState, SequenceInput, SinusoidalPositions)
from purenet.layers.attention import project_context
from purenet.ops import lookup, lookup_dw


class Seq2SeqInput(NamedTuple):
    """A batch of (source, decoder input) id pairs: src (N, S), tgt (N, T) ints, right-padded."""

    src: Any
    tgt: Any


class Seq2Seq(NamedTuple):
    """A sequence-to-sequence model: the trainable `layer` and its step-by-step decoding (module doc)."""

    layer: Layer
    encode: Callable
    decode: Callable
    start: Callable
    step: Callable
    pad_id: int


def _check_ids(owner: str, x) -> tuple:
    """-> (src (N, S), tgt (N, T)) of a Seq2SeqInput (or a pair), failing on anything else."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        fail(owner, f"expects Seq2SeqInput(src (N, S), tgt (N, T)), got {type(x).__name__}")
    src, tgt = x
    for what, ids in (("src", src), ("tgt", tgt)):
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            fail(owner, f"expected {what} integer ids of shape (N, L), got {ids.dtype} {tuple(ids.shape)}")
    if src.shape[0] != tgt.shape[0]:
        fail(owner, f"src and tgt must have the same batch size, got {src.shape[0]} and {tgt.shape[0]}")
    return src, tgt


def _no_cotangent(x):
    """dx of integer inputs: x's structure with None at both ids."""
    return type(x)(None, None) if hasattr(x, "_fields") else type(x)((None, None))


def _check_shapes(owner: str, in_shape) -> tuple:
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) != 2 or any(len(s) != 2 for s in in_shape):
        fail(owner, f"expects in_shape Seq2SeqInput((N, S), (N, T)), got {in_shape}")
    return tuple(in_shape[0]), tuple(in_shape[1])


# ------------------------------------------------------------------------------------ Transformer


class TransformerConfig(NamedTuple):
    """The hyperparameters of `transformer_seq2seq`: vocabularies, depth, widths, heads, LN placement."""

    src_vocab: int
    tgt_vocab: int
    layers: int = 3  # encoder blocks, and as many decoder blocks
    d_model: int = 128
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 4 * d_model
    dropout: float = 0.1  # on the embeddings + positions and on every sub-layer's output
    pre_ln: bool = False  # False: post-LN as in the paper; True: pre-LN with a final LayerNorm
    positions: str = "sinusoidal"  # or "learned"
    max_len: int = 128  # the learned position table's size (source and target)
    activation: str = "relu"
    pad_id: int = 0


class Memory(NamedTuple):
    """The encoder's output x (N, S, F) and which source positions are tokens, valid (N, S) bool."""

    x: jax.Array
    valid: jax.Array


def transformer_seq2seq(config: TransformerConfig) -> Seq2Seq:
    """The encoder-decoder Transformer `config` describes (module docstring for the functions).

    Embeddings scaled by sqrt(F) (initialized N(0, 1/F), so the scaled ones are of unit size) plus
    sinusoidal or learned positions; encoder blocks with a padding mask; decoder blocks with causal
    self-attention and cross-attention masked to the source's tokens; a dense head (untied). Params
    {"src_embed": {"w": (V_src, F)}, "tgt_embed": {"w": (V, F)}, "src_pos", "tgt_pos": {"pos", "drop"},
    "encoder": {"blocks": (...), ["norm"]}, "decoder": {"blocks": (...), ["norm"], "head": {"w", "b"}}};
    state {} (every sub-layer is stateless)."""
    name = "TransformerSeq2Seq"
    for field in ("src_vocab", "tgt_vocab", "layers", "d_model", "heads", "max_len"):
        check_positive(name, field, getattr(config, field))
    check_bool(name, "pre_ln", config.pre_ln)
    check_choice(name, "positions", config.positions, ("sinusoidal", "learned"))
    rate = check_range(name, "dropout", config.dropout, lambda r: 0 <= r < 1, "in [0, 1)")
    d, pad = config.d_model, config.pad_id
    if d % config.heads:
        fail(name, f"d_model (={d}) must be divisible by heads (={config.heads})")
    hidden = config.hidden or 4 * d
    block = dict(pre_ln=config.pre_ln, dropout=rate, activation=config.activation)
    enc_blocks = [EncoderBlock(config.heads, hidden, **block) for _ in range(config.layers)]
    dec_blocks = [DecoderBlock(config.heads, hidden, **block) for _ in range(config.layers)]
    final_norm, head = LayerNorm(), Dense(config.tgt_vocab)
    tail = dict(norm=final_norm) if config.pre_ln else {}
    encoder = serial(blocks=serial(*enc_blocks), out=select(0), **tail)  # (x, mask) -> (N, S, F)
    decoder = serial(blocks=serial(*dec_blocks), out=select(0), **tail,
                     head=head)  # (x, memory, cross_mask) -> (N, T, V)
    pos_layer = SinusoidalPositions() if config.positions == "sinusoidal" else LearnedPositions(config.max_len)
    src_pos, tgt_pos = serial(pos=pos_layer, drop=Dropout(rate)), serial(pos=pos_layer, drop=Dropout(rate))
    parts = {"src_pos": (src_pos, lambda n, S, T: (n, S, d)), "tgt_pos": (tgt_pos, lambda n, S, T: (n, T, d)),
             "encoder": (encoder, lambda n, S, T: ((n, S, d), (n, 1, S, S))),
             "decoder": (decoder, lambda n, S, T: ((n, T, d), (n, S, d), (n, 1, T, S)))}
    scale = math.sqrt(d)

    def init(key, in_shape):
        (n, S), (_, T) = _check_shapes(name, in_shape)
        keys = jax.random.split(key, 2 + len(parts))
        embed = initializers.normal(d ** -0.5)
        params = {"src_embed": {"w": embed(keys[0], (config.src_vocab, d), jnp.float32)},
                  "tgt_embed": {"w": embed(keys[1], (config.tgt_vocab, d), jnp.float32)}}
        for k, (part, (layer, shape)) in zip(keys[2:], parts.items()):
            out_shape, params[part], _ = layer.init(k, shape(n, S, T))
        return out_shape, params, {}

    def embed(params, part, ids):  # w[ids] sqrt(F): (N, L) -> (N, L, F)
        return lookup(params[part]["w"], ids) * jnp.asarray(scale, params[part]["w"].dtype)

    def run_encoder(tape: Tape, src) -> Memory:
        valid = src != pad  # (N, S)
        S = src.shape[1]
        x = tape("src_pos", src_pos, embed(tape.params, "src_embed", src))
        mask = jnp.broadcast_to(valid[:, None, None, :], (src.shape[0], 1, S, S))  # keys must be tokens
        return Memory(tape("encoder", encoder, (x, mask)), valid)

    def run_decoder(tape: Tape, memory: Memory, tgt):  # -> logits (N, T, V)
        y = tape("tgt_pos", tgt_pos, embed(tape.params, "tgt_embed", tgt))
        cross_mask = jnp.broadcast_to(memory.valid[:, None, :], (*tgt.shape, memory.x.shape[1]))[:, None]
        return tape("decoder", decoder, (y, memory.x, cross_mask))

    def forward(tape: Tape, x):
        src, tgt = _check_ids(name, x)
        return run_decoder(tape, run_encoder(tape, src), tgt), x

    def embed_back(params, part, ids, de):
        w = params[part]["w"]
        return {"w": lookup_dw(ids, de * jnp.asarray(scale, de.dtype), w.shape[0]).astype(w.dtype)}

    # The decoder's pullback gives (dy, dmemory, None): dmemory is the sum over the decoder blocks that
    # read the memory (DecoderBlock adds its own). Then the encoder's pullback, and each embedding's:
    # e = w[ids] sqrt(F), so dw = lookup_dw(ids, de sqrt(F)). Residuals: the sub-layers' own and the ids.
    def backward(back, x, dlogits):
        src, tgt = x
        dy, dmemory, _ = back("decoder", dlogits)
        dtgt = back("tgt_pos", dy)
        dx, _ = back("encoder", dmemory)
        dsrc = back("src_pos", dx)
        return _no_cotangent(x), {"tgt_embed": embed_back(back.params, "tgt_embed", tgt, dtgt),
                                  "src_embed": embed_back(back.params, "src_embed", src, dsrc)}

    def encode(params, src) -> Memory:
        """src (N, S) -> Memory(x (N, S, F), valid (N, S)), in eval mode."""
        return run_encoder(Tape(name, params, {}, keep=False), src)

    def decode(params, memory: Memory, tgt):
        """The whole decoder at once, no cache: tgt (N, T) -> logits (N, T, V), in eval mode."""
        return run_decoder(Tape(name, params, {}, keep=False), memory, tgt)

    def start(params, memory: Memory, max_len: int, *, cache_cross: bool = True):
        """-> (context, cache): context {"sources": the memory (N, S, F), or with `cache_cross` a tuple
        of each block's `KeyValues`, "valid" (N, S)}; cache each block's self-attention cache."""
        blocks = params["decoder"]["blocks"]
        pos_layer.decode.init_cache(params["tgt_pos"]["pos"], memory.x.shape[0], max_len)  # checks max_len
        cache = tuple(b.decode.init_cache(p, memory.x.shape[0], max_len) for b, p in zip(dec_blocks, blocks))
        sources = tuple(project_context(p["cross_attn"], memory.x) for p in blocks) if cache_cross else memory.x
        return {"sources": sources, "valid": memory.valid}, cache

    # One position through the same layers: embedding, position `pos` (dropout is off in eval), each
    # decoder block's step (its self-attention cache; the memory or its KeyValues), norm, head.
    def step(params, context, cache, tokens, pos):
        y = embed(params, "tgt_embed", tokens)  # (N, F)
        y, _ = pos_layer.decode.step(params["tgt_pos"]["pos"], {}, y, pos=pos)
        sources, new_cache = context["sources"], []
        for i, (block, p) in enumerate(zip(dec_blocks, params["decoder"]["blocks"])):
            source = sources[i] if isinstance(sources, tuple) else sources
            (y, *_), c = block.decode.step(p, cache[i], (y, source, context["valid"]), pos=pos)
            new_cache.append(c)
        p = params["decoder"]
        if config.pre_ln:
            y = final_norm.apply(p["norm"], {}, y)[0]
        return head.apply(p["head"], {}, y)[0], tuple(new_cache)  # (N, V)

    return Seq2Seq(taped(name, init, forward, backward), encode, decode, start, step, pad)


# ----------------------------------------------------------------------------------------- LSTM


class LSTMSeq2SeqConfig(NamedTuple):
    """The hyperparameters of `lstm_seq2seq`: vocabularies, stacked layers, hidden and embedding widths."""

    src_vocab: int
    tgt_vocab: int
    layers: int = 2  # stacked LSTM layers, in the encoder and in the decoder
    hidden: int = 256
    embedding: int = 64
    pad_id: int = 0


def lstm_seq2seq(config: LSTMSeq2SeqConfig) -> Seq2Seq:
    """An LSTM encoder-decoder without attention (Sutskever et al. 2014, without reversing the source).

    The encoder's layers read the embedded source; each layer's hidden state at the source's last
    token (EOS; padding after it is not read) starts the decoder layer of the same depth (its cell
    state starts at 0), which reads the embedded decoder input; a dense head gives the logits. Params
    {"src_embed": {"w": (V_src, E)}, "tgt_embed": {"w": (V, E)}, "encoder": ({"w_x", "w_h", "b"}, ...),
    "decoder": (...), "head": {"w": (H, V), "b"}}; state {}. The memory is each layer's last state."""
    name = "LSTMSeq2Seq"
    for field in ("src_vocab", "tgt_vocab", "layers", "hidden", "embedding"):
        check_positive(name, field, getattr(config, field))
    H, pad = config.hidden, config.pad_id
    src_embed, tgt_embed = Embedding(config.src_vocab, config.embedding), Embedding(config.tgt_vocab, config.embedding)
    encoder = [LSTM(H) for _ in range(config.layers)]
    decoder = [LSTM(H) for _ in range(config.layers)]
    head = Dense(config.tgt_vocab)

    def init(key, in_shape):
        (n, S), (_, T) = _check_shapes(name, in_shape)
        k_src, k_tgt, k_enc, k_dec, k_head = jax.random.split(key, 5)
        params = {"src_embed": src_embed.init(k_src, (n, S))[1], "tgt_embed": tgt_embed.init(k_tgt, (n, T))[1]}
        initial = SequenceInput((n, T, config.embedding), LSTMState((n, H), (n, H)))
        params["encoder"] = tuple(lstm.init(k, (n, S, config.embedding if i == 0 else H))[1]
                                  for i, (lstm, k) in enumerate(zip(encoder, jax.random.split(k_enc, config.layers))))
        params["decoder"] = tuple(lstm.init(k, initial if i == 0 else initial._replace(x=(n, T, H)))[1]
                                  for i, (lstm, k) in enumerate(zip(decoder, jax.random.split(k_dec, config.layers))))
        out_shape, params["head"], _ = head.init(k_head, (n, T, H))
        return out_shape, params, {}

    def last_token(src):  # the index of each source's last token (its EOS): (N,)
        return jnp.maximum(jnp.sum(src != pad, axis=1) - 1, 0)

    def run_encoder(tape: Tape, src):
        """-> the memory: each layer's hidden state at the last token, a tuple of (N, H)."""
        last, x, states = last_token(src), tape("src_embed", src_embed, src), []
        for i, lstm in enumerate(encoder):
            x = tape(("encoder", i), lstm, x)  # (N, S, H)
            states.append(jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0])  # (N, H)
        return tuple(states)

    def run_decoder(tape: Tape, memory, tgt):  # -> logits (N, T, V)
        y = tape("tgt_embed", tgt_embed, tgt)
        for i, (lstm, h0) in enumerate(zip(decoder, memory)):
            y = tape(("decoder", i), lstm, SequenceInput(y, LSTMState(h0, jnp.zeros_like(h0))))
        return tape("head", head, y)

    def forward(tape: Tape, x):
        src, tgt = _check_ids(name, x)
        return run_decoder(tape, run_encoder(tape, src), tgt), x

    # Decoder layers in reverse: each gives (dy, d(h0, c0)); dh0 is the cotangent of the encoder
    # layer's state at the last token, so that layer's dy is dh0 at that position (0 elsewhere) plus
    # what the layer above passed down. Residuals: the sub-layers' own and the ids.
    def backward(back, x, dlogits):
        src = x[0]
        dy, dstates = back("head", dlogits), []
        for i in reversed(range(config.layers)):
            dy, (dh0, _) = back(("decoder", i), dy)
            dstates.append(dh0)  # top layer first
        back("tgt_embed", dy)
        at_last = jax.nn.one_hot(last_token(src), src.shape[1], dtype=dlogits.dtype)[:, :, None]  # (N, S, 1)
        dx = jnp.zeros((*src.shape, H), dlogits.dtype)
        for i, dh in zip(reversed(range(config.layers)), dstates):
            dx = back(("encoder", i), dx + at_last * dh[:, None, :])
        back("src_embed", dx)
        return _no_cotangent(x), {}

    def encode(params, src):
        """src (N, S) -> the memory, a tuple of each layer's last state (N, H)."""
        return run_encoder(Tape(name, params, {}, keep=False), src)

    def decode(params, memory, tgt):
        """The whole decoder at once, no cache: tgt (N, T) -> logits (N, T, V)."""
        return run_decoder(Tape(name, params, {}, keep=False), memory, tgt)

    def start(params, memory, max_len: int, *, cache_cross: bool = True):
        """-> (context {}, cache): each decoder layer's (h, c), from (the encoder's state, 0)."""
        del params, max_len, cache_cross
        return {}, tuple((h, jnp.zeros_like(h)) for h in memory)

    def step(params, context, cache, tokens, pos):
        del context
        y = tgt_embed.decode.step(params["tgt_embed"], {}, tokens, pos=pos)[0]  # (N, E)
        new_cache = []
        for lstm, p, c in zip(decoder, params["decoder"], cache):
            y, c = lstm.decode.step(p, c, y, pos=pos)  # (N, H)
            new_cache.append(c)
        return head.apply(params["head"], {}, y)[0], tuple(new_cache)  # (N, V)

    return Seq2Seq(taped(name, init, forward, backward), encode, decode, start, step, pad)
