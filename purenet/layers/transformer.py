"""Transformer blocks: an encoder block (self-attention + feed-forward; causal, it is a GPT block) and a
decoder block (causal self-attention + cross-attention + feed-forward), in pre-LN or post-LN form.

Dimension letters: N batch, T positions, S memory positions, F features (d_model). A block keeps its
input's structure so blocks stack with `serial`: the encoder block maps x or (x, mask) to y or
(y, mask), the decoder block (x, memory) or (x, memory, cross_mask) to (y, memory[, cross_mask]);
masks pass through untouched (dx None) and the memory's cotangent is the one that arrived from the
blocks above plus this block's own. Sub-layers are purenet layers, each run through its own vjp:

    pre-LN:   h = x + drop(attn(norm1(x)));   y = h + drop(ff(norm2(h)))
    post-LN:  h = norm1(x + drop(attn(x)));   y = norm2(h + drop(ff(h)))

(the decoder block has a cross-attention sub-layer between the two, with its own norm). Params are
named by sub-layer: {"norm1", "attn", "norm2", "ff"}, the decoder's {"norm1", "self_attn", "norm2",
"cross_attn", "norm3", "ff"}.
"""

from __future__ import annotations

from typing import Callable

import jax

from purenet._checks import check_bool, check_choice, check_positive, check_range, fail
from purenet.core import Decode, Layer, is_shape, no_decode, tree_add
from purenet.layers.attention import MultiHeadAttention
from purenet.layers.dropout import Dropout
from purenet.layers.feedforward import FeedForward
from purenet.layers.norm import LayerNorm, RMSNorm

_NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


class _Run:
    """Runs sub-layers forward through their vjps and keeps the pullbacks, so a block's pullback can
    replay them in reverse; with vjp=False only their applies run."""

    def __init__(self, params, keys, train, vjp):
        self.params, self.keys, self.train, self.vjp, self.pullbacks = params, iter(keys), train, vjp, {}

    def __call__(self, name, layer, x):
        key = next(self.keys)
        if not self.vjp:
            return layer.apply(self.params.get(name, {}), {}, x, key=key, train=self.train)[0]
        y, _, pullback = layer.vjp(self.params.get(name, {}), {}, x, key=key, train=self.train)
        self.pullbacks[name] = pullback
        return y


def _sublayer(run: _Run, pre_ln: bool, x, n: int, norm: Layer, fn: Callable, drop: Layer):
    """One residual sub-layer, keeping its pullbacks under names suffixed `n`:
    pre-LN x + drop(fn(norm(x))), post-LN norm(x + drop(fn(x)))."""
    inner = run(f"norm{n}", norm, x) if pre_ln else x
    h = x + run(f"drop{n}", drop, fn(inner))
    return h if pre_ln else run(f"norm{n}", norm, h)


def _sublayer_back(pullbacks, pre_ln: bool, dh, n: int, fn_back: Callable, dparams: dict):
    """The pullback of `_sublayer`: -> dx. `fn_back(d fn-output) -> d fn-input` adds to dparams."""
    if not pre_ln:
        dparams[f"norm{n}"], dh = pullbacks[f"norm{n}"](dh)
    _, dinner = pullbacks[f"drop{n}"](dh)
    dinner = fn_back(dinner)
    if pre_ln:
        dparams[f"norm{n}"], dinner = pullbacks[f"norm{n}"](dinner)
    return dh + dinner


def _options(name, num_heads, hidden, norm, pre_ln, dropout):
    check_positive(name, "num_heads", num_heads)
    check_positive(name, "hidden", hidden)
    check_choice(name, "norm", norm, tuple(_NORMS))
    check_bool(name, "pre_ln", pre_ln)
    return check_range(name, "dropout", dropout, lambda r: 0 <= r < 1, "in [0, 1)")


def _structured(x) -> bool:
    return isinstance(x, (tuple, list)) and not is_shape(x)


def EncoderBlock(num_heads: int, hidden: int, *, num_kv_heads: int | None = None, is_causal: bool = False,
                 pre_ln: bool = True, norm: str = "layer", activation: str = "gelu", gated: bool = False,
                 dropout: float = 0.0, attention_dropout: float = 0.0, rotary: bool = False,
                 fused_qkv: bool = False, residuals: str = "probs", block_size: int | None = None,
                 eps: float | None = None) -> Layer:
    """Self-attention + feed-forward with residuals (module docstring); causal, a GPT block.

    Shapes: x (N, T, F) or (x, mask (N, T, T) or (N, 1|H, T, T) bool) -> the same structure, y (N, T, F).
    `hidden`: the feed-forward width (`activation`, `gated` as `FeedForward`); `norm` "layer" or "rms",
    with epsilon `eps` (None: the norm's default; BERT and ViT take 1e-12);
    `dropout` on each sub-layer's output (and inside the feed-forward), `attention_dropout` on the
    attention probabilities; the other options go to `MultiHeadAttention`. Decodes step by step (a
    key/value cache) when causal."""
    name = "EncoderBlock"
    rate = _options(name, num_heads, hidden, norm, pre_ln, dropout)
    attn = MultiHeadAttention(num_heads, num_kv_heads=num_kv_heads, is_causal=is_causal, dropout=attention_dropout,
                              rotary=rotary, fused_qkv=fused_qkv, residuals=residuals, block_size=block_size)
    ff = FeedForward(hidden, activation=activation, gated=gated, dropout=rate)
    norm_options = {} if eps is None else {"eps": eps}
    norm1, norm2, drop = _NORMS[norm](**norm_options), _NORMS[norm](**norm_options), Dropout(rate)

    def init(key, in_shape):
        x_shape = in_shape[0] if _structured(in_shape) else in_shape
        if len(x_shape) != 3:
            fail(name, f"expected x of rank 3 (N, T, F), got shape {tuple(x_shape)}")
        k_attn, k_ff = jax.random.split(key)
        _, p_attn, _ = attn.init(k_attn, in_shape)
        _, p_ff, _ = ff.init(k_ff, x_shape)
        params = {"norm1": norm1.init(key, x_shape)[1], "attn": p_attn, "norm2": norm2.init(key, x_shape)[1],
                  "ff": p_ff}
        return in_shape, params, {}

    def forward(params, x, key, train, vjp):
        """-> (y, the run holding the pullbacks)."""
        h0, mask = (x[0], x[1]) if _structured(x) else (x, None)
        run = _Run(params, _split(key, 6), train, vjp)
        h = _sublayer(run, pre_ln, h0, 1, norm1, lambda v: run("attn", attn, v if mask is None else (v, mask)), drop)
        y = _sublayer(run, pre_ln, h, 2, norm2, lambda v: run("ff", ff, v), drop)
        return (y if mask is None else type(x)((y, mask))), run

    def apply(params, state, x, *, key=None, train=False):
        return forward(params, x, key, train, vjp=False)[0], state

    # Each sub-layer's pullback in reverse: dh = dy + (the feed-forward branch's dx); dx = dh + (the
    # attention branch's dx). Residuals: the sub-layers' own.
    def vjp(params, state, x, *, key=None, train=False):
        y, run = forward(params, x, key, train, vjp=True)
        pullbacks = run.pullbacks

        def pullback(dy):
            dy = dy[0] if _structured(x) else dy
            dparams = {}

            def ff_back(d):
                dparams["ff"], d = pullbacks["ff"](d)
                return d

            def attn_back(d):
                dparams["attn"], d = pullbacks["attn"](d)
                return d[0] if _structured(x) else d

            dh = _sublayer_back(pullbacks, pre_ln, dy, 2, ff_back, dparams)
            dx = _sublayer_back(pullbacks, pre_ln, dh, 1, attn_back, dparams)
            return dparams, (type(x)((dx, None)) if _structured(x) else dx)

        return y, state, pullback

    def init_cache(params, batch, max_len):
        return {"attn": attn.decode.init_cache(params["attn"], batch, max_len)}

    def step(params, cache, x_t, *, pos):
        def attn_step(v):
            y_t, cache["attn"] = attn.decode.step(params["attn"], cache["attn"], v, pos=pos)
            return y_t

        cache = dict(cache)
        run = _Run(params, _split(None, 6), False, False)
        h = _sublayer(run, pre_ln, x_t, 1, norm1, attn_step, drop)
        return _sublayer(run, pre_ln, h, 2, norm2, lambda v: run("ff", ff, v), drop), cache

    decode = Decode(init_cache, step) if is_causal else no_decode(name, "it is not causal (is_causal=False)")
    return Layer(init, apply, vjp, name, decode)


def DecoderBlock(num_heads: int, hidden: int, *, num_kv_heads: int | None = None, pre_ln: bool = True,
                 norm: str = "layer", activation: str = "gelu", gated: bool = False, dropout: float = 0.0,
                 attention_dropout: float = 0.0, rotary: bool = False, residuals: str = "probs",
                 block_size: int | None = None, is_causal: bool = True) -> Layer:
    """Causal self-attention, cross-attention to a memory, feed-forward, each with a residual;
    `is_causal=False` lets every position attend to every other (DETR's object queries: no decode).

    Shapes: (x (N, T, F), memory (N, S, Fm)) or (x, memory, cross_mask (N, T, S) bool) -> the same
    structure, y (N, T, F). Options as `EncoderBlock`. Decodes step by step on (x_t, memory[, mask row
    (N, S)]) with a key/value cache for the self-attention; the memory's keys and values are projected
    at each step, unless the step is given `project_context(params["cross_attn"], memory)` (a
    `KeyValues`, made once per memory) in place of the memory."""
    name = "DecoderBlock"
    rate = _options(name, num_heads, hidden, norm, pre_ln, dropout)
    check_bool(name, "is_causal", is_causal)
    common = dict(num_kv_heads=num_kv_heads, dropout=attention_dropout, residuals=residuals, block_size=block_size)
    self_attn = MultiHeadAttention(num_heads, is_causal=is_causal, rotary=rotary, **common)
    cross_attn = MultiHeadAttention(num_heads, cross=True, **common)
    ff = FeedForward(hidden, activation=activation, gated=gated, dropout=rate)
    norm1, norm2, norm3, drop = _NORMS[norm](), _NORMS[norm](), _NORMS[norm](), Dropout(rate)

    def parts(x):
        if not _structured(x) or len(x) not in (2, 3):
            fail(name, "expects (x, memory) or (x, memory, cross_mask), got "
                       f"{jax.tree_util.tree_map(lambda a: getattr(a, 'shape', a), x, is_leaf=is_shape)}")
        return x[0], x[1], x[2] if len(x) == 3 else None

    def init(key, in_shape):
        x_shape, m_shape, mask_shape = parts(in_shape)
        if len(x_shape) != 3 or len(m_shape) != 3:
            fail(name, f"expected x (N, T, F) and memory (N, S, Fm), got {tuple(x_shape)} and {tuple(m_shape)}")
        k_self, k_cross, k_ff = jax.random.split(key, 3)
        cross_in = (x_shape, m_shape) if mask_shape is None else (x_shape, m_shape, mask_shape)
        params = {"norm1": norm1.init(key, x_shape)[1], "self_attn": self_attn.init(k_self, x_shape)[1],
                  "norm2": norm2.init(key, x_shape)[1], "cross_attn": cross_attn.init(k_cross, cross_in)[1],
                  "norm3": norm3.init(key, x_shape)[1], "ff": ff.init(k_ff, x_shape)[1]}
        return in_shape, params, {}

    def cross_input(v, memory, mask):
        return (v, memory) if mask is None else (v, memory, mask)

    def forward(params, x, key, train, vjp):
        h0, memory, mask = parts(x)
        run = _Run(params, _split(key, 9), train, vjp)
        h = _sublayer(run, pre_ln, h0, 1, norm1, lambda v: run("self_attn", self_attn, v), drop)
        h = _sublayer(run, pre_ln, h, 2, norm2,
                      lambda v: run("cross_attn", cross_attn, cross_input(v, memory, mask)), drop)
        y = _sublayer(run, pre_ln, h, 3, norm3, lambda v: run("ff", ff, v), drop)
        return type(x)((y, *x[1:])), run

    def apply(params, state, x, *, key=None, train=False):
        return forward(params, x, key, train, vjp=False)[0], state

    # As the encoder block's, with the cross-attention's dcontext added to the memory's cotangent
    # that arrived with dy (the blocks above used the same memory). Residuals: the sub-layers' own.
    def vjp(params, state, x, *, key=None, train=False):
        y, run = forward(params, x, key, train, vjp=True)
        pullbacks = run.pullbacks

        def pullback(dy):
            dparams, dmemory = {}, dy[1]

            def ff_back(d):
                dparams["ff"], d = pullbacks["ff"](d)
                return d

            def cross_back(d):
                nonlocal dmemory
                dparams["cross_attn"], d = pullbacks["cross_attn"](d)
                dmemory = tree_add(dmemory, d[1])
                return d[0]

            def self_back(d):
                dparams["self_attn"], d = pullbacks["self_attn"](d)
                return d

            dh = _sublayer_back(pullbacks, pre_ln, dy[0], 3, ff_back, dparams)
            dh = _sublayer_back(pullbacks, pre_ln, dh, 2, cross_back, dparams)
            dx = _sublayer_back(pullbacks, pre_ln, dh, 1, self_back, dparams)
            return dparams, type(x)((dx, dmemory, *([None] if len(x) == 3 else [])))

        return y, state, pullback

    def init_cache(params, batch, max_len):
        return {"self_attn": self_attn.decode.init_cache(params["self_attn"], batch, max_len)}

    def step(params, cache, x_t, *, pos):
        h0, memory, mask = parts(x_t)
        cache = dict(cache)

        def self_step(v):
            y_t, cache["self_attn"] = self_attn.decode.step(params["self_attn"], cache["self_attn"], v, pos=pos)
            return y_t

        def cross_step(v):
            return cross_attn.decode.step(params["cross_attn"], {}, cross_input(v, memory, mask), pos=pos)[0]

        run = _Run(params, _split(None, 9), False, False)
        h = _sublayer(run, pre_ln, h0, 1, norm1, self_step, drop)
        h = _sublayer(run, pre_ln, h, 2, norm2, cross_step, drop)
        y_t = _sublayer(run, pre_ln, h, 3, norm3, lambda v: run("ff", ff, v), drop)
        return type(x_t)((y_t, *x_t[1:])), cache

    decode = Decode(init_cache, step) if is_causal else no_decode(name, "it is not causal (is_causal=False)")
    return Layer(init, apply, vjp, name, decode)
