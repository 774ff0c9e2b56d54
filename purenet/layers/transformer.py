"""Transformer blocks: an encoder block (self-attention + feed-forward; causal, it is a GPT block) and a
decoder block (causal self-attention + cross-attention + feed-forward), in pre-LN or post-LN form.

Dimension letters: N batch, T positions, S memory positions, F features (d_model). A block keeps its
input's structure so blocks stack with `serial`: the encoder block maps x or (x, mask) to y or
(y, mask), the decoder block (x, memory) or (x, memory, cross_mask) to (y, memory[, cross_mask]).
Each block is a `serial` of residual sub-layers, each a `serial` of named children:

    pre-LN:   h = x + drop1(attn(norm1(x)));   y = h + drop2(ff(norm2(h)))
    post-LN:  h = norm1(x + drop1(attn(x)));   y = norm2(h + drop2(ff(h)))

(the decoder block has a cross-attention sub-layer between the two, children norm2, cross_attn, drop2,
and its feed-forward's are norm3, ff, drop3). On a structured input the sums are at x (`residual(...,
at=0)`, `at(0, ...)`): the mask passes through untouched (dx None), and the memory's cotangent is the
one that arrived from the blocks above plus this block's own. Params, state and the decode cache read
as one dict by child name, as a block's checkpoints always have: {"norm1", "attn", "norm2", "ff"}, the
decoder's {"norm1", "self_attn", "norm2", "cross_attn", "norm3", "ff"} (dropout has none).
"""

from __future__ import annotations

from typing import Callable

import jax

from purenet._checks import check_bool, check_choice, check_positive, check_range, fail
from purenet.combinators import at, residual, serial
from purenet.core import Decode, Layer, is_shape, no_decode
from purenet.layers.attention import MultiHeadAttention
from purenet.layers.dropout import Dropout
from purenet.layers.feedforward import FeedForward
from purenet.layers.norm import LayerNorm, RMSNorm

_NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def _options(name, num_heads, hidden, norm, pre_ln, dropout):
    check_positive(name, "num_heads", num_heads)
    check_positive(name, "hidden", hidden)
    check_choice(name, "norm", norm, tuple(_NORMS))
    check_bool(name, "pre_ln", pre_ln)
    return check_range(name, "dropout", dropout, lambda r: 0 <= r < 1, "in [0, 1)")


def _structured(x) -> bool:
    return isinstance(x, (tuple, list)) and not is_shape(x)


def _sublayer(n: int, name: str, layer: Layer, norm: Layer, rate: float, pre_ln: bool,
              reads: str | None) -> list[tuple[Layer, tuple[str, ...]]]:
    """One residual sub-layer of children norm{n}, `name`, drop{n}: pre-LN x + drop(layer(norm(x))),
    post-LN norm(x + drop(layer(x))). -> its pieces in order, each (a layer, its children's names).

    `reads`: None on a plain x; on a structured input (x, ...), "x" for a layer of x alone (the
    sub-layer runs at x), "all" for one that reads the whole input (attention with its mask or memory;
    the norm runs at x and the sum is added at x)."""
    if reads == "x":
        return [(at(0, piece), names) for piece, names in _sublayer(n, name, layer, norm, rate, pre_ln, None)]
    norm, add = (norm, residual) if reads is None else (at(0, norm), lambda body: residual(body, at=0))
    branch = {name: layer, f"drop{n}": Dropout(rate)}
    if pre_ln:
        branch = {f"norm{n}": norm, **branch}
        return [(add(serial(**branch)), tuple(branch))]
    return [(add(serial(**branch)), tuple(branch)), (serial(**{f"norm{n}": norm}), (f"norm{n}",))]


def _block(name: str, forms: dict, pick: Callable, check: Callable, decode: bool) -> Layer:
    """A block run by `serial` over the pieces `forms[pick(x)]` of an input's form (pick(None): the form a
    decode step takes), with params, state and decode cache (a tuple of dicts, one per piece) read as
    one dict by child name; children without any (dropout) have no entry. `check(in_shape)` validates
    at init; `decode`: whether the block steps."""
    bodies = {form: (serial(*[piece for piece, _ in pieces]), [names for _, names in pieces])
              for form, pieces in forms.items()}

    def merged(trees):
        return {k: v for tree in trees for k, v in tree.items() if not (isinstance(v, dict) and not v)}

    def grouped(tree, groups):
        return tuple({k: tree.get(k, {}) for k in names} for names in groups)

    def init(key, in_shape):
        check(in_shape)
        body, _ = bodies[pick(in_shape)]
        out_shape, params, state = body.init(key, in_shape)
        return out_shape, merged(params), merged(state)

    def apply(params, state, x, *, key=None, train=False):
        body, groups = bodies[pick(x)]
        y, state = body.apply(grouped(params, groups), grouped(state, groups), x, key=key, train=train)
        return y, merged(state)

    # The composition's own pullback, its dparams read as one dict. Residuals: the sub-layers' own.
    def vjp(params, state, x, *, key=None, train=False):
        body, groups = bodies[pick(x)]
        y, state, inner = body.vjp(grouped(params, groups), grouped(state, groups), x, key=key, train=train)

        def pullback(dy):
            dparams, dx = inner(dy)
            return merged(dparams), dx

        return y, merged(state), pullback

    def init_cache(params, batch, max_len):
        body, groups = bodies[pick(None)]
        return merged(body.decode.init_cache(grouped(params, groups), batch, max_len))

    def step(params, cache, x_t, *, pos):
        body, groups = bodies[pick(None)]
        y_t, cache = body.decode.step(grouped(params, groups), grouped(cache, groups), x_t, pos=pos)
        return y_t, merged(cache)

    return Layer(init, apply, vjp, name, Decode(init_cache, step) if decode else
                 no_decode(name, "it is not causal (is_causal=False)"))


def EncoderBlock(num_heads: int, hidden: int, *, num_kv_heads: int | None = None, is_causal: bool = False,
                 pre_ln: bool = True, norm: str = "layer", activation: str = "gelu", gated: bool = False,
                 dropout: float = 0.0, attention_dropout: float = 0.0, rotary: bool = False,
                 fused_qkv: bool = False, residuals: str = "probs", block_size: int | None = None,
                 eps: float | None = None) -> Layer:
    """Self-attention + feed-forward with residuals (module docstring); causal, a GPT block.

    Shapes: x (N, T, F) or (x, mask (N, T, T), (N, 1|H, T, T) or a key padding mask (N, T), bool) -> the
    same structure, y (N, T, F).
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
    norm1, norm2 = _NORMS[norm](**norm_options), _NORMS[norm](**norm_options)
    forms = {masked: (_sublayer(1, "attn", attn, norm1, rate, pre_ln, "all" if masked else None)
                      + _sublayer(2, "ff", ff, norm2, rate, pre_ln, "x" if masked else None))
             for masked in (False, True)}

    def check(in_shape):
        x_shape = in_shape[0] if _structured(in_shape) else in_shape
        if len(x_shape) != 3:
            fail(name, f"expected x of rank 3 (N, T, F), got shape {tuple(x_shape)}")

    return _block(name, forms, _structured, check, is_causal)


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
    norms = [_NORMS[norm]() for _ in range(3)]
    pieces = (_sublayer(1, "self_attn", self_attn, norms[0], rate, pre_ln, "x")
              + _sublayer(2, "cross_attn", cross_attn, norms[1], rate, pre_ln, "all")
              + _sublayer(3, "ff", ff, norms[2], rate, pre_ln, "x"))  # on (x, memory[, cross_mask])

    def check(x):
        if not _structured(x) or len(x) not in (2, 3):
            fail(name, "expects (x, memory) or (x, memory, cross_mask), got "
                       f"{jax.tree_util.tree_map(lambda a: getattr(a, 'shape', a), x, is_leaf=is_shape)}")
        if is_shape(x[0]) and (len(x[0]) != 3 or len(x[1]) != 3):
            fail(name, f"expected x (N, T, F) and memory (N, S, Fm), got {tuple(x[0])} and {tuple(x[1])}")

    def pick(x):  # one form; a decode step (x None) takes the same structure
        if x is not None:
            check(x)
        return "structured"

    return _block(name, {"structured": pieces}, pick, check, is_causal)
