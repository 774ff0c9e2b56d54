"""Attention: scaled dot-product attention with a handwritten pullback, multi-head attention, and its
key/value cache for step-by-step decoding.

Dimension letters: N batch, T query positions, S key positions, H query heads, K key/value heads
(H = K G: each key/value head serves G query heads; G = 1 is multi-head, K = 1 multi-query attention),
D head size, F features, B key positions per block. Layout as `jax.nn.dot_product_attention`:
q (N, T, H, D), k and v (N, S, K, D), out (N, T, H, D); inside, heads are grouped: logits (N, K, G, T, S).

A query row with no key to attend (every key masked, or past its query length) outputs 0 and passes no
gradient. (`jax.nn.dot_product_attention` spreads a row that a mask empties uniformly over all keys, and
zeroes a row past its query length, as here.) Derivation: docs/derivations/attention.md.
Precision: logits, softmax, the online softmax's running sums and every product's accumulation are in at
least float32 (`dtype` below: float32 for bfloat16 inputs); out, dq, dk and dv come back in the inputs' dtypes.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from purenet import initializers
from purenet._checks import check_bool, check_choice, check_positive, check_range, fail, is_int
from purenet._sharding import vary_like
from purenet.core import Decode, Layer, is_shape, no_decode
from purenet.layers.positional import rotary as rotary_embedding
from purenet.layers.positional import rotary_pullback
from purenet.ops import affine, affine_pullback

RESIDUALS = ("probs", "logsumexp")
# Key positions per block when the probabilities are recomputed ("logsumexp"), by backend: a block's
# (N, K, G, T, B) logits are the largest temporary. The CPU figure was measured: docs/performance.md.
BLOCK_SIZE = {"cpu": 128}
DEFAULT_BLOCK_SIZE = 256
# Query positions per block under a causal mask, by backend: a block of queries sees only the keys up to
# its last position, so the key blocks above the diagonal are never computed. A backend not listed keeps
# one block (not measured there). At most MAX_QUERY_BLOCKS blocks (each is its own unrolled code), so a
# long sequence takes longer blocks; an attention of fewer than MIN_QUERY_BLOCK_WORK multiply-adds per
# product (N H T S D) keeps one block, its blocks' overhead being larger than the products they skip.
# The CPU figures were measured: docs/performance.md.
QUERY_BLOCK_SIZE = {"cpu": 32}
MAX_QUERY_BLOCKS = 8
MIN_QUERY_BLOCK_WORK = 2**23


class _Attn(NamedTuple):
    """Checked inputs, head-major: q (N, K, G, T, D); k and v (N, K, S, D); bias and mask
    (N|1, K|1, G|1, T, S) or None; lengths (N,) or None; the user's bias shape (for dbias) and dtypes.
    Head-major, every product contracts a minor axis or writes a small transposed result, which XLA:CPU
    runs much faster than the (N, T, H, D) layout (docs/performance.md)."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    bias: jax.Array | None
    mask: jax.Array | None
    scale: float
    causal: bool
    q_lengths: jax.Array | None
    kv_lengths: jax.Array | None
    bias_shape: tuple | None
    dtypes: tuple  # of the user's q, k, v
    t_start: int = 0  # a block of queries: the position of its first query, and
    t_total: int | None = None  # the attention's whole query length (None: q's own)


def _check_inputs(name, q, k, v, bias, mask, scale, q_lengths, kv_lengths) -> float:
    """Fail unless the arrays fit `dot_product_attention`'s layouts; -> the scale (1/sqrt(D) by default)."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        fail(name, f"expected q (N, T, H, D), k and v (N, S, K, D), got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                   f"v {tuple(v.shape)}")
    n, T, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != n or k.shape[3] != d or h % k.shape[2]:
        fail(name, f"k and v must be (N={n}, S, K, D={d}) with K dividing H={h}, got k {tuple(k.shape)}, "
                   f"v {tuple(v.shape)}")
    if mask is not None and mask.dtype != jnp.bool_:
        fail(name, f"mask must be boolean (True = attend), got dtype {mask.dtype}")
    for what, lengths in (("query_seq_lengths", q_lengths), ("key_value_seq_lengths", kv_lengths)):
        if lengths is not None and (tuple(lengths.shape) != (n,) or not jnp.issubdtype(lengths.dtype, jnp.integer)):
            fail(name, f"{what} must be integers of shape (N,) = ({n},), got {lengths.dtype} {tuple(lengths.shape)}")
    S = k.shape[1]
    for what, t in (("bias", bias), ("mask", mask)):
        if t is not None and (t.ndim != 4 or t.shape[0] not in (1, n) or t.shape[1] not in (1, h)
                              or tuple(t.shape[2:]) != (T, S)):
            fail(name, f"{what} must have shape (N or 1, H or 1, T, S) = ({n} or 1, {h} or 1, {T}, {S}), "
                       f"got {tuple(t.shape)}")
    return 1.0 / math.sqrt(d) if scale is None else check_range(name, "scale", scale, math.isfinite, "finite")


def _grouped(t, kv_heads):
    """A (N|1, H|1, T, S) bias or mask as (N|1, K|1, G|1, T, S)."""
    if t is None:
        return None
    if t.shape[1] == 1:
        return t[:, :, None]  # (N|1, 1, 1, T, S)
    return t.reshape(t.shape[0], kv_heads, t.shape[1] // kv_heads, *t.shape[2:])


def _attn(q, k, v, bias=None, mask=None, *, scale=None, is_causal=False, q_lengths=None, kv_lengths=None) -> _Attn:
    """The inputs of `dot_product_attention`, checked by the caller, as an `_Attn` (head-major)."""
    n, T, h, d = q.shape
    kv_heads = k.shape[2]
    q_heads = jnp.transpose(q.reshape(n, T, kv_heads, h // kv_heads, d), (0, 2, 3, 1, 4))  # (N, K, G, T, D)
    return _Attn(q_heads, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), _grouped(bias, kv_heads),
                 _grouped(mask, kv_heads), 1.0 / math.sqrt(d) if scale is None else scale, bool(is_causal),
                 q_lengths, kv_lengths, None if bias is None else tuple(bias.shape), (q.dtype, k.dtype, v.dtype))


# ------------------------------------------------------------------------------------ one block


def _valid(a: _Attn, s_idx, padded: bool, mask_block):
    """Which (query, key) pairs may attend, for key positions s_idx (B,) (with `padded`, those >= S
    pad the last block): a bool broadcastable to (N, K, G, T, B), or None when all may."""
    T = a.q.shape[3]
    t_idx = (a.t_start + jnp.arange(T)).reshape(1, 1, 1, T, 1)
    s_idx = s_idx.reshape(1, 1, 1, 1, -1)
    conditions = []  # each (N|1, K|1, G|1, T|1, B|1)
    if padded:
        conditions.append(s_idx < a.k.shape[2])
    if a.causal:
        conditions.append(t_idx >= s_idx)
    if a.kv_lengths is not None:
        conditions.append(s_idx < a.kv_lengths.reshape(-1, 1, 1, 1, 1))
    if a.q_lengths is not None:
        conditions.append(t_idx < a.q_lengths.reshape(-1, 1, 1, 1, 1))
    if mask_block is not None:
        conditions.append(mask_block)
    if not conditions:
        return None
    valid = conditions[0]
    for c in conditions[1:]:
        valid = valid & c
    return valid


def _logits(a: _Attn, k_block, bias_block, dtype):
    """s = scale q . k + bias for one block of keys: k_block (N, K, B, D) -> (N, K, G, T, B) in `dtype`."""
    s = jnp.einsum("nkgtd,nksd->nkgts", a.q, k_block, preferred_element_type=dtype) * jnp.asarray(a.scale, dtype)
    return s if bias_block is None else s + bias_block.astype(dtype)


def _keep(a: _Attn, key, rate, block_index, size, width=None):
    """Dropout's keep mask of one block of `size` keys, (N, K, G, T, size), from `key` folded with the
    block index, so the dense and the blocked forms (and the pullback's recomputation) draw the same
    mask. Drawn over the attention's every query row and sliced to a query block's rows (and to the
    first `width` keys of a block cut short), so a block keeps what the whole would."""
    n, kv_heads, groups, T, _ = a.q.shape
    total = T if a.t_total is None else a.t_total
    keep = jax.random.bernoulli(jax.random.fold_in(key, block_index), 1.0 - rate, (n, kv_heads, groups, total, size))
    keep = keep if total == T else keep[..., a.t_start:a.t_start + T, :]
    return keep if width is None or width == size else keep[..., :width]


# ----------------------------------------------------------------------------------- the two forms


class _Blocks(NamedTuple):
    """The keys split into `count` blocks of `size` (the last one `padded` when size does not divide
    S): k, v (count, N, K, B, D), bias and mask (count, N|1, K|1, G|1, T, B) or None, and each block's
    first key position (count,)."""

    size: int
    count: int
    padded: bool
    k: jax.Array
    v: jax.Array
    bias: jax.Array | None
    mask: jax.Array | None
    starts: jax.Array


def _split_keys(a: _Attn, size: int) -> _Blocks:
    S = a.k.shape[2]
    size = min(size, S)  # a causal query block's few keys: one block of them, no padding
    count = -(-S // size)
    pad = count * size - S

    def blocks(t, axis, fill):  # t's key axis -> a leading block axis: (count, ..., B, ...)
        if t is None:
            return None
        t = jnp.pad(t, [(0, pad if i == axis else 0) for i in range(t.ndim)], constant_values=fill)
        return jnp.moveaxis(t.reshape(*t.shape[:axis], count, size, *t.shape[axis + 1:]), axis, 0)

    return _Blocks(size, count, pad > 0, blocks(a.k, 2, 0), blocks(a.v, 2, 0), blocks(a.bias, 4, 0),
                   blocks(a.mask, 4, False), jnp.arange(count, dtype=jnp.int32) * size)


def _dense_forward(a: _Attn, dtype, size, dropout):
    """Softmax over all keys at once. -> (out (N, K, G, T, D), p (N, K, G, T, S), keep or None)."""
    S = a.k.shape[2]
    s = _logits(a, a.k, a.bias, dtype)  # (N, K, G, T, S)
    valid = _valid(a, jnp.arange(S), False, a.mask)
    if valid is not None:
        s = jnp.where(valid, s, -jnp.inf)
    peak = jnp.max(s, axis=-1, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0)  # a row with no key: every e below is 0
    e = jnp.exp(s - peak)
    total = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(total > 0, total, 1)  # (N, K, G, T, S); rows with no key are all 0
    keep = None
    if dropout is not None:
        key, rate = dropout
        count = -(-S // size)
        keep = jnp.concatenate([_keep(a, key, rate, j, size) for j in range(count)], -1)[..., :S]
        p_used = jnp.where(keep, p / (1 - rate), 0)
    else:
        p_used = p
    out = jnp.einsum("nkgts,nksd->nkgtd", p_used.astype(a.v.dtype), a.v, preferred_element_type=dtype)
    return out.astype(a.v.dtype), p, keep


def _blocked_forward(a: _Attn, dtype, size, dropout):
    """Online softmax over blocks of keys (a `lax.scan`): a running max m, sum l and output acc per
    row, rescaled by exp(m_old - m_new) as each block arrives. -> (out, lse (N, K, G, T, 1))."""
    blocks = _split_keys(a, size)
    rows = (*a.q.shape[:-1], 1)

    def step(carry, block):
        m, l, acc = carry  # (N, K, G, T, 1) x2, (N, K, G, T, D)
        k_b, v_b, bias_b, mask_b, start, j = block
        s = _logits(a, k_b, bias_b, dtype)  # (N, K, G, T, B)
        valid = _valid(a, start + jnp.arange(blocks.size), blocks.padded, mask_b)
        if valid is not None:
            s = jnp.where(valid, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True))
        m_use = jnp.where(jnp.isfinite(m_new), m_new, 0)
        rescale = jnp.exp(m - m_use)  # 0 while no key has been seen
        e = jnp.exp(s - m_use)
        l = l * rescale + jnp.sum(e, axis=-1, keepdims=True)
        if dropout is not None:
            key, rate = dropout
            e = jnp.where(_keep(a, key, rate, j, size, blocks.size), e / (1 - rate), 0)
        acc = acc * rescale + jnp.einsum("nkgts,nksd->nkgtd", e.astype(a.v.dtype), v_b, preferred_element_type=dtype)
        return (m_new, l, acc), None

    init = (jnp.full(rows, -jnp.inf, dtype), jnp.zeros(rows, dtype), jnp.zeros(a.q.shape, dtype))
    init = vary_like(init, a.q, a.k, a.v, a.bias)
    xs = (blocks.k, blocks.v, blocks.bias, blocks.mask, blocks.starts, jnp.arange(blocks.count))
    (m, l, acc), _ = lax.scan(step, init, xs)
    any_key = l > 0
    out = (acc / jnp.where(any_key, l, 1)).astype(a.v.dtype)
    lse = jnp.where(any_key, jnp.where(jnp.isfinite(m), m, 0) + jnp.log(jnp.where(any_key, l, 1)), 0)
    return out, lse


# ------------------------------------------------------------------------------------- pullbacks
# With p the probabilities, dp = do v^T and delta = rowsum(p dp) = rowsum(o * do):
# ds = p (dp - delta);  dq = scale ds k;  dk = scale ds^T q;  dv = p^T do;  dbias = ds.
# Dropout scales p and dp by keep / (1 - rate); delta keeps its form, o being the dropped output.
# dk and dv are computed transposed, (N, K, D, S) = q^T ds and do^T p: the small operands move.


def _reduce_bias(ds, a: _Attn):
    """ds (N, K, G, T, B) summed to the bias's broadcast shape (N|1, K|1, G|1, T, B)."""
    axes = tuple(i for i, size in enumerate(a.bias.shape[:3]) if size == 1)
    return jnp.sum(ds, axis=axes, keepdims=True) if axes else ds


def _finish(a: _Attn, dq, dk_t, dv_t, dbias):
    """Back to the user's layouts: dq (N, T, H, D), dk and dv (N, S, K, D) from (N, K, D, S)."""
    n, kv_heads, groups, T, d = a.q.shape
    dq = jnp.transpose(dq, (0, 3, 1, 2, 4)).reshape(n, T, kv_heads * groups, d)
    dk, dv = (jnp.transpose(t, (0, 3, 1, 2)) for t in (dk_t, dv_t))
    dbias = None if a.bias is None else dbias.reshape(a.bias_shape).astype(a.bias.dtype)
    return dq.astype(a.dtypes[0]), dk.astype(a.dtypes[1]), dv.astype(a.dtypes[2]), dbias


def _delta(dout, out, dtype):
    """rowsum(o * do) -> (N, K, G, T, 1)."""
    return jnp.sum(dout.astype(dtype) * out.astype(dtype), axis=-1, keepdims=True)


def _dense_pullback(a: _Attn, dtype, out, p, keep, rate, dout, dkv):
    """dout (N, K, G, T, D) and dkv, the (dk, dv) (N, K, D, W >= S) that earlier query blocks summed, ->
    head-major (dq (N, K, G, T, D), dk and dv with this block's added over keys 0..S-1, dbias (.., T, S)
    or None)."""
    p_used = p if keep is None else jnp.where(keep, p / (1 - rate), 0)
    dv_t = jnp.einsum("nkgtd,nkgts->nkds", dout, p_used.astype(dout.dtype), preferred_element_type=dtype)
    dp = jnp.einsum("nkgtd,nksd->nkgts", dout, a.v, preferred_element_type=dtype)
    if keep is not None:
        dp = jnp.where(keep, dp / (1 - rate), 0)
    ds = p * (dp - _delta(dout, out, dtype))  # (N, K, G, T, S)
    scale = jnp.asarray(a.scale, dtype)
    dq = jnp.einsum("nkgts,nksd->nkgtd", ds, a.k.astype(dtype)) * scale
    dk_t = jnp.einsum("nkgtd,nkgts->nkds", a.q.astype(dtype), ds) * scale
    S = a.k.shape[2]
    dk_acc, dv_acc = (acc.at[..., :S].add(t) for acc, t in zip(dkv, (dk_t, dv_t)))
    return dq, dk_acc, dv_acc, None if a.bias is None else _reduce_bias(ds, a)


def _blocked_pullback(a: _Attn, dtype, size, dropout, out, lse, dout, dkv):
    """The probabilities recomputed block by block from the logsumexp: p = exp(s - lse). Arguments and
    results as `_dense_pullback`'s; each key block adds its dk and dv into the accumulators in place (a
    scan's carry), so query blocks share one pair (W >= the keys' blocks times their size)."""
    blocks = _split_keys(a, size)
    delta = _delta(dout, out, dtype)
    scale = jnp.asarray(a.scale, dtype)

    def added(acc, t, start):  # acc[..., start:start + B] += t
        block_sum = lax.dynamic_slice_in_dim(acc, start, t.shape[-1], -1) + t
        return lax.dynamic_update_slice_in_dim(acc, block_sum, start, -1)

    def step(carry, block):
        dq, dk_acc, dv_acc = carry
        k_b, v_b, bias_b, mask_b, start, j = block
        s = _logits(a, k_b, bias_b, dtype)  # (N, K, G, T, B)
        p = jnp.exp(s - lse)
        valid = _valid(a, start + jnp.arange(blocks.size), blocks.padded, mask_b)
        if valid is not None:
            p = jnp.where(valid, p, 0)
        dp = jnp.einsum("nkgtd,nksd->nkgts", dout, v_b, preferred_element_type=dtype)
        p_used = p
        if dropout is not None:
            key, rate = dropout
            keep = _keep(a, key, rate, j, size, blocks.size)
            p_used, dp = jnp.where(keep, p / (1 - rate), 0), jnp.where(keep, dp / (1 - rate), 0)
        ds = p * (dp - delta)
        dq = dq + jnp.einsum("nkgts,nksd->nkgtd", ds, k_b.astype(dtype)) * scale
        dk_t = jnp.einsum("nkgtd,nkgts->nkds", a.q.astype(dtype), ds) * scale  # (N, K, D, B)
        dv_t = jnp.einsum("nkgtd,nkgts->nkds", dout, p_used.astype(dout.dtype), preferred_element_type=dtype)
        dbias_b = None if a.bias is None else _reduce_bias(ds, a)
        return (dq, added(dk_acc, dk_t, start), added(dv_acc, dv_t, start)), dbias_b

    xs = (blocks.k, blocks.v, blocks.bias, blocks.mask, blocks.starts, jnp.arange(blocks.count))
    dq0 = vary_like(jnp.zeros(a.q.shape, dtype), a.q, a.k, a.v, a.bias, dout)
    (dq, dk_acc, dv_acc), dbias = lax.scan(step, (dq0, *dkv), xs)
    if dbias is not None:  # (count, ..., B) -> (..., S)
        dbias = jnp.moveaxis(dbias, 0, -2)
        dbias = dbias.reshape(*dbias.shape[:-2], dbias.shape[-2] * dbias.shape[-1])[..., :a.k.shape[2]]
    return dq, dk_acc, dv_acc, dbias


# ------------------------------------------------------------------------------------ public API


def _check_block_size(name, block_size, what="block_size"):  # None: the backend's default
    if block_size is not None and (not is_int(block_size) or block_size < 1):
        fail(name, f"{what} must be a positive integer, got {what}={block_size!r}")


def _query_blocks(a: _Attn, size: int | None) -> list[_Attn]:
    """A causal attention as blocks of `size` queries, each with only the keys it may see (s < the
    block's last position + 1; the key blocks above the diagonal are left out), or [a] unsplit (not
    causal, `size` None or >= T). Each block's bias and mask are its rows (a mask of one row is kept
    whole) and its keys."""
    T, S = a.q.shape[3], a.k.shape[2]
    if not a.causal or size is None or size >= T:
        return [a]
    size = max(size, -(-T // MAX_QUERY_BLOCKS))

    def cut(t, start, stop, keys):  # (N|1, K|1, G|1, T|1, S) -> the block's rows and keys
        return None if t is None else t[..., start:stop, :keys] if t.shape[3] > 1 else t[..., :keys]

    blocks = []
    for start in range(0, T, size):
        stop = min(start + size, T)
        keys = min(stop, S)
        blocks.append(a._replace(q=a.q[..., start:stop, :], k=a.k[..., :keys, :], v=a.v[..., :keys, :],
                                 bias=cut(a.bias, start, stop, keys), mask=cut(a.mask, start, stop, keys),
                                 t_start=start, t_total=T))
    return blocks


def _attention_vjp(a: _Attn, residuals: str, block_size: int | None, dropout, query_block_size: int | None = None):
    """`dot_product_attention_vjp` on inputs its caller has checked: `a` from `_attn`, `block_size` and
    `query_block_size` None for the backend's defaults, `dropout` (key, rate) or None.
    -> (out (N, T, H, D), pullback)."""
    n, kv_heads, groups, T, d = a.q.shape
    S = a.k.shape[2]
    backend = jax.default_backend()
    size = BLOCK_SIZE.get(backend, DEFAULT_BLOCK_SIZE) if block_size is None else block_size
    size = min(size, S)  # one block size for both forms, so dropout draws the same mask
    dtype = jnp.promote_types(a.dtypes[0], jnp.float32)  # logits and softmax in float32 at least
    if query_block_size is None and math.prod(a.q.shape) * S >= MIN_QUERY_BLOCK_WORK:
        query_block_size = QUERY_BLOCK_SIZE.get(backend)  # the backend's, for an attention with enough work
    blocks = _query_blocks(a, query_block_size)
    outs, pullbacks = [], []
    for block in blocks:
        if residuals == "probs":
            out, p, keep = _dense_forward(block, dtype, size, dropout)
            rate = None if dropout is None else dropout[1]
            pullbacks.append(partial(_dense_pullback, block, dtype, out, p, keep, rate))
        else:
            out, lse = _blocked_forward(block, dtype, size, dropout)
            pullbacks.append(partial(_blocked_pullback, block, dtype, size, dropout, out, lse))
        outs.append(out)
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)  # (N, K, G, T, D)

    width = S if residuals == "probs" else -(-S // size) * size  # the keys' blocks, padded

    # Query blocks in turn: each its rows of dq (and dbias), each adding to one pair of dk, dv.
    def attention_pullback(dout):  # (N, T, H, D) -> head-major (N, K, G, T, D), each block its rows
        dout = jnp.transpose(dout.reshape(n, T, kv_heads, groups, d), (0, 2, 3, 1, 4)).astype(a.dtypes[2])
        dkv = vary_like((jnp.zeros((n, kv_heads, d, width), dtype),) * 2, a.q, a.k, a.v, a.bias, dout)
        dq, dbias = [], []
        for block, pullback in zip(blocks, pullbacks):
            dq_block, *dkv, dbias_block = pullback(dout[..., block.t_start:block.t_start + block.q.shape[3], :], dkv)
            dq.append(dq_block)
            if dbias_block is not None:  # (..., T_block, S_block) -> (..., T_block, S)
                dbias.append(jnp.pad(dbias_block, [(0, 0)] * 4 + [(0, S - dbias_block.shape[-1])]))
        dq = dq[0] if len(dq) == 1 else jnp.concatenate(dq, axis=3)
        dbias = jnp.concatenate(dbias, axis=3) if dbias else None
        return _finish(a, dq, dkv[0][..., :S], dkv[1][..., :S], dbias)

    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(n, T, kv_heads * groups, d), attention_pullback


def dot_product_attention_vjp(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                              query_seq_lengths=None, key_value_seq_lengths=None, residuals="probs",
                              block_size=None, query_block_size=None, dropout_rate=0.0, dropout_key=None):
    """Scaled dot-product attention and its pullback: -> (out, pullback), pullback(dout) ->
    (dquery, dkey, dvalue, dbias) (dbias None without a bias). Arguments as `dot_product_attention`.

    residuals="probs" keeps the (N, H, T, S) probabilities; "logsumexp" keeps q, k, v, the output and
    the per-row logsumexp (N, H, T) and runs forward and pullback over blocks of `block_size` keys
    (default `BLOCK_SIZE` by backend), so temporaries grow with T * block_size, not T * S.
    With `is_causal`, the queries are taken in blocks of `query_block_size` (default `QUERY_BLOCK_SIZE`
    by backend, for attentions of at least `MIN_QUERY_BLOCK_WORK` N H T S D; at most `MAX_QUERY_BLOCKS`
    blocks), each with only the keys up to its last position, so the products above the diagonal are
    skipped (same results); a size >= T keeps one block.
    `dropout_rate` drops probabilities in training with `dropout_key` (the same mask in both forms)."""
    name = "dot_product_attention"
    check_choice(name, "residuals", residuals, RESIDUALS)
    _check_block_size(name, block_size)
    _check_block_size(name, query_block_size, "query_block_size")
    rate = check_range(name, "dropout_rate", dropout_rate, lambda r: 0 <= r < 1, "in [0, 1)")
    if rate > 0 and dropout_key is None:
        fail(name, f"dropout_rate={rate} needs a dropout_key, got None")
    scale = _check_inputs(name, query, key, value, bias, mask, scale, query_seq_lengths, key_value_seq_lengths)
    a = _attn(query, key, value, bias, mask, scale=scale, is_causal=is_causal, q_lengths=query_seq_lengths,
              kv_lengths=key_value_seq_lengths)
    return _attention_vjp(a, residuals, block_size, (dropout_key, rate) if rate > 0 else None, query_block_size)


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, residuals="probs",
                          block_size=None, query_block_size=None, dropout_rate=0.0, dropout_key=None):
    """softmax(scale * q k^T + bias, masked) v, per head. Shapes: query (N, T, H, D), key and value
    (N, S, K, D) with K dividing H (grouped / multi-query heads), bias and mask (N or 1, H or 1, T, S)
    -> out (N, T, H, D). As `jax.nn.dot_product_attention`: `mask` True = attend, `is_causal` lets
    query t attend keys s <= t, `scale` defaults to 1/sqrt(D), lengths (N,) ints mask padded queries
    and keys. A row with no key to attend outputs 0 (module docstring). `residuals="logsumexp"` computes
    over blocks of keys; a causal attention takes its queries in blocks that skip the keys above the
    diagonal (see `dot_product_attention_vjp`)."""
    return dot_product_attention_vjp(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                     query_seq_lengths=query_seq_lengths,
                                     key_value_seq_lengths=key_value_seq_lengths, residuals=residuals,
                                     block_size=block_size, query_block_size=query_block_size,
                                     dropout_rate=dropout_rate, dropout_key=dropout_key)[0]


# ------------------------------------------------------------------------------- multi-head layer


class KeyValues(NamedTuple):
    """A context's keys and values, projected once for a cross-attention's decode steps (which then
    skip the projection at every step): k and v (N, S, K D). Made by `project_context`."""

    k: jax.Array
    v: jax.Array


def project_context(params, context) -> KeyValues:
    """k = context w_k + b_k and v = context w_v + b_v of a cross-attention's params (biases where the
    params have them). Shapes: context (N, S, Fc) -> KeyValues(k, v), each (N, S, K D). A decode step
    of that `MultiHeadAttention(cross=True)` takes them in place of the context and gives the same
    output, without projecting the whole context again for every position it decodes."""
    if "w_k" not in params or "w_v" not in params:
        fail("project_context", f"expected a cross-attention's params (w_k, w_v, ...), got {sorted(params)}")
    if context.ndim != 3 or context.shape[-1] != params["w_k"].shape[0]:
        fail("project_context", f"expected a context of shape (N, S, {params['w_k'].shape[0]}), "
                                f"got {tuple(context.shape)}")
    return KeyValues(affine(context, params, "k"), affine(context, params, "v"))


class _MHA(NamedTuple):
    """The options of a MultiHeadAttention that its projections, checks and decode read (checked by its
    constructor)."""

    heads: int
    kv_heads: int
    cross: bool
    fused_qkv: bool
    rotary: bool
    rotary_base: float


_NAME = "MultiHeadAttention"


def _parts(m: _MHA, x):
    """-> (queries (N, T, F), context (N, S, Fc), mask or None) of an input (or an in_shape)."""
    structured = isinstance(x, (tuple, list)) and not is_shape(x)
    if m.cross:
        if not structured or len(x) not in (2, 3):
            fail(_NAME, f"cross=True expects (x, context) or (x, context, mask), got {_describe(x)}")
        return x[0], x[1], x[2] if len(x) == 3 else None
    if structured:
        if len(x) != 2:
            fail(_NAME, f"self-attention expects x or (x, mask), got {_describe(x)}")
        return x[0], x[0], x[1]
    return x, x, None


def _check_call(m: _MHA, params, x, c, mask):
    """The one check of a call's arrays against the params (what `init` could not know): x (N, T, F),
    c (N, S, Fc) or a decode step's `KeyValues`, mask bool (N|1, T, S), (N|1, 1|H, T, S), a key padding
    mask (N, S) (True = a real key), or None. -> the mask as (N|1, 1|H, T|1, S)."""
    width = params["w_qkv" if m.fused_qkv else "w_q"].shape[0]
    if x.ndim != 3 or x.shape[-1] != width:
        fail(_NAME, f"expected x of shape (N, T, {width}), got {tuple(x.shape)}")
    n, T = x.shape[:2]
    if isinstance(c, KeyValues):
        kv_width = m.kv_heads * (params["w_o"].shape[0] // m.heads)
        if c.k.shape != c.v.shape or c.k.ndim != 3 or c.k.shape[0] != n or c.k.shape[-1] != kv_width:
            fail(_NAME, f"expected KeyValues k and v of shape ({n}, S, {kv_width}), got {tuple(c.k.shape)} and "
                        f"{tuple(c.v.shape)}")
        S = c.k.shape[1]
    else:
        c_width = width if m.fused_qkv else params["w_k"].shape[0]
        if c.ndim != 3 or c.shape[-1] != c_width or c.shape[0] != n:
            fail(_NAME, f"expected context of shape ({n}, S, {c_width}), got {tuple(c.shape)}")
        S = c.shape[1]
    if mask is None:
        return None
    key_padding = mask.ndim == 2
    mask = mask[:, None, None, :] if key_padding else mask[:, None] if mask.ndim == 3 else mask
    if (mask.dtype != jnp.bool_ or mask.ndim != 4 or mask.shape[0] not in (1, n) or mask.shape[1] not in (1, m.heads)
            or tuple(mask.shape[2:]) != ((1, S) if key_padding else (T, S))):
        fail(_NAME, f"mask must be boolean (N, T, S), (N, 1 or {m.heads}, T, S) or a key padding mask (N, S) "
                    f"with N={n} (or 1), T={T}, S={S}, True = attend, got {mask.dtype} "
                    f"{tuple(mask.shape[:1] + mask.shape[3:]) if key_padding else tuple(mask.shape)}")
    return mask


def _project(m: _MHA, params, x, c, q_pos, k_pos):
    """q = x w_q + b_q (N, T, H, D); k = c w_k + b_k and v = c w_v + b_v (N, S, K, D), or the three from
    one x w_qkv + b_qkv (fused), or k and v given as `KeyValues`; q and k rotated by their positions
    (T,) and (S,) when `rotary`."""
    d = params["w_o"].shape[0] // m.heads
    if m.fused_qkv:
        q, k, v = jnp.split(affine(x, params, "qkv"), [m.heads * d, (m.heads + m.kv_heads) * d], axis=-1)
    else:
        q = affine(x, params, "q")
        k, v = c if isinstance(c, KeyValues) else (affine(c, params, "k"), affine(c, params, "v"))
    n, T, S = x.shape[0], x.shape[1], k.shape[1]
    q, k, v = q.reshape(n, T, m.heads, d), k.reshape(n, S, m.kv_heads, d), v.reshape(n, S, m.kv_heads, d)
    if m.rotary:
        q, k = rotary_embedding(q, q_pos, base=m.rotary_base), rotary_embedding(k, k_pos, base=m.rotary_base)
    return q, k, v


def _input_cotangent(m: _MHA, x, dx, dc):
    """dx mirroring the input x: cross (dx, dcontext[, None]); self dx + dc (the context is x), None at a mask."""
    if m.cross:
        return type(x)((dx, dc) if len(x) == 2 else (dx, dc, None))
    dx = dx if dc is None else dx + dc
    return type(x)((dx, None)) if isinstance(x, (tuple, list)) else dx


def MultiHeadAttention(num_heads: int, *, num_kv_heads: int | None = None, head_dim: int | None = None,
                       out_features: int | None = None, cross: bool = False, is_causal: bool = False,
                       fused_qkv: bool = False, use_bias: bool = True, dropout: float = 0.0,
                       rotary: bool = False, rotary_base: float = 10000.0, residuals: str = "probs",
                       block_size: int | None = None, query_block_size: int | None = None,
                       w_init=initializers.lecun_normal,
                       b_init=initializers.zeros) -> Layer:
    """Multi-head attention: q = x w_q, k = c w_k, v = c w_v split into heads, attention per head
    (`dot_product_attention`), then y = heads w_o. Self-attention (c = x) or `cross` (c = a context).

    Shapes: self: x (N, T, F) or (x, mask); cross: (x, context (N, S, Fc)) or (x, context, mask); mask
    bool (N, T, S) or (N, 1|H, T, S), True = attend, or a key padding mask (N, S), True at the real
    (not padding) keys, as PyTorch's `key_padding_mask` negated -> y (N, T, out_features or F). H = num_heads query
    heads of size D = head_dim (default F // H); K = num_kv_heads (default H) key/value heads, K | H
    (K = 1: multi-query). Params {"w_q": (F, H D), "w_k", "w_v": (Fc, K D), "w_o": (H D, F_out), "b_*"},
    or {"w_qkv": (F, (H + 2K) D), "b_qkv", "w_o", "b_o"} with `fused_qkv` (self only). `rotary` rotates q
    and k by their positions (RoPE). `dropout` drops attention probabilities in training (needs a key).
    `residuals`, `block_size`, `query_block_size`: see `dot_product_attention_vjp`. Decodes step by step
    with a key/value cache when self-attention is causal; cross-attention steps on (x_t, context[, mask
    row (N, S)]), where the context may be the `KeyValues` that `project_context(params, context)` made
    once."""
    name = _NAME
    (heads,) = check_positive(name, "num_heads", num_heads)
    (kv_heads,) = check_positive(name, "num_kv_heads", heads if num_kv_heads is None else num_kv_heads)
    if heads % kv_heads:
        fail(name, f"num_kv_heads (={kv_heads}) must divide num_heads (={heads})")
    for flag, value in (("cross", cross), ("is_causal", is_causal), ("fused_qkv", fused_qkv),
                        ("use_bias", use_bias), ("rotary", rotary)):
        check_bool(name, flag, value)
    if fused_qkv and cross:
        fail(name, "fused_qkv=True projects q, k and v from one input: it needs cross=False")
    rate = check_range(name, "dropout", dropout, lambda r: 0 <= r < 1, "in [0, 1)")
    check_range(name, "rotary_base", rotary_base, lambda b: b > 0, "> 0")
    check_choice(name, "residuals", residuals, RESIDUALS)
    _check_block_size(name, block_size)
    _check_block_size(name, query_block_size, "query_block_size")
    if head_dim is not None:
        check_positive(name, "head_dim", head_dim)
    if out_features is not None:
        check_positive(name, "out_features", out_features)
    m = _MHA(heads, kv_heads, cross, fused_qkv, rotary, rotary_base)

    def init(key, in_shape):
        x_shape, c_shape, m_shape = _parts(m, in_shape)
        for what, shape in (("x", x_shape), ("context", c_shape)):
            if len(shape) != 3:
                fail(name, f"expected {what} of rank 3 (N, T, F), got shape {tuple(shape)}")
        features, c_features = x_shape[-1], c_shape[-1]
        d = head_dim or features // heads
        if not head_dim and features % heads:
            fail(name, f"the features (={features}) must be divisible by num_heads (={heads}), or give head_dim")
        if rotary and d % 2:
            fail(name, f"rotary=True rotates pairs of features: the head size must be even, got head_dim={d}")
        if m_shape is not None and not (len(m_shape) in (3, 4) and tuple(m_shape[-2:]) == (x_shape[1], c_shape[1])
                                        or len(m_shape) == 2 and m_shape[-1] == c_shape[1]):
            fail(name, f"mask must have shape (N, T, S), (N, 1|H, T, S) or (N, S) (a key padding mask) with "
                       f"T={x_shape[1]}, S={c_shape[1]}, got {tuple(m_shape)}")
        keys = iter(jax.random.split(key, 8))
        out = out_features or features
        if fused_qkv:
            shapes = {"w_qkv": (features, (heads + 2 * kv_heads) * d)}
        else:
            shapes = {"w_q": (features, heads * d), "w_k": (c_features, kv_heads * d),
                      "w_v": (c_features, kv_heads * d)}
        shapes["w_o"] = (heads * d, out)
        params = {}
        for w, shape in shapes.items():
            params[w] = w_init(next(keys), shape, jnp.float32)
            if use_bias:
                params["b" + w[1:]] = b_init(next(keys), shape[-1:], jnp.float32)
        return (*x_shape[:2], out), params, {}

    def forward(params, x, key, train):
        queries, context, mask = _parts(m, x)
        mask = _check_call(m, params, queries, context, mask)
        dropping = train and rate > 0
        if dropping and key is None:
            fail(name, f"train=True with dropout={rate} needs a PRNG key, got key=None")
        q_pos, k_pos = jnp.arange(queries.shape[1]), jnp.arange(context.shape[1])
        q, k, v = _project(m, params, queries, context, q_pos, k_pos)  # (N, T, H, D), (N, S, K, D) x2
        a = _attn(q, k, v, mask=mask, is_causal=is_causal)
        out, attn_pullback = _attention_vjp(a, residuals, block_size, (key, rate) if dropping else None,
                                            query_block_size)
        heads_out = out.reshape(*out.shape[:2], out.shape[2] * out.shape[3])  # (N, T, H D)
        y = affine(heads_out, params, "o")  # (N, T, F_out)
        return y, (queries, context, q_pos, k_pos, heads_out, attn_pullback)

    def apply(params, state, x, *, key=None, train=False):
        return forward(params, x, key, train)[0], state

    # dheads = dy w_o^T; attention's pullback gives dq, dk, dv; rotation's pullback is the inverse
    # rotation; dx (and dcontext) = the projections' pullbacks, summed where x feeds several.
    # Residuals: x, the context, the heads' output and the attention's own (see `residuals`).
    def vjp(params, state, x, *, key=None, train=False):
        y, (queries, context, q_pos, k_pos, heads_out, attn_pullback) = forward(params, x, key, train)

        def pullback(dy):
            dparams, dheads = affine_pullback(dy, heads_out, params, "o")  # (N, T, H D)
            dq, dk, dv, _ = attn_pullback(dheads.reshape(*dheads.shape[:2], heads, dheads.shape[-1] // heads))
            if rotary:
                dq, dk = rotary_pullback(dq, q_pos, base=rotary_base), rotary_pullback(dk, k_pos, base=rotary_base)
            dq, dk, dv = (t.reshape(*t.shape[:2], t.shape[2] * t.shape[3]) for t in (dq, dk, dv))
            if fused_qkv:
                dqkv, dx = affine_pullback(jnp.concatenate([dq, dk, dv], -1), queries, params, "qkv")
                return dparams | dqkv, _input_cotangent(m, x, dx, None)
            dw_q, dx = affine_pullback(dq, queries, params, "q")  # dx (N, T, F)
            dw_k, dc_k = affine_pullback(dk, context, params, "k")  # dc_k (N, S, Fc)
            dw_v, dc_v = affine_pullback(dv, context, params, "v")
            return dparams | dw_q | dw_k | dw_v, _input_cotangent(m, x, dx, dc_k + dc_v)

        return y, state, pullback

    if cross or is_causal:
        decode = _mha_decode(m)
    else:
        decode = no_decode(name, "self-attention without is_causal lets a position see later ones")
    return Layer(init, apply, vjp, name, decode)


def _mha_decode(m: _MHA) -> Decode:
    """MultiHeadAttention's decode. Self-attention (causal): the cache holds every position's k and v so
    far in fixed-size buffers (N, max_len, K, D) and the index of the next free slot; a step attends over
    slots 0 .. index. Cross-attention: no cache; a step attends over the whole context (or its
    `KeyValues`), masked by the step's row of the mask."""

    def init_cache(params, batch, max_len):
        if m.cross:
            return {}
        buffer = jnp.zeros((batch, max_len, m.kv_heads, params["w_o"].shape[0] // m.heads), params["w_o"].dtype)
        return {"k": buffer, "v": buffer, "index": jnp.zeros((), jnp.int32)}

    def attend(params, q, k, v, mask):  # q (N, 1, H, D), k and v (N, S, K, D) -> y_t (N, F_out)
        out = _attention_vjp(_attn(q, k, v, mask=mask), "probs", None, None)[0]  # (N, 1, H, D)
        return affine(out.reshape(out.shape[0], math.prod(out.shape[1:])), params, "o")

    def cross_step(params, cache, x_t, *, pos):
        if not isinstance(x_t, (tuple, list)) or len(x_t) not in (2, 3):
            fail(_NAME, f"a cross-attention step takes (x_t, context) or (x_t, context, mask_t), got {_describe(x_t)}")
        x1, context = x_t[0][:, None], x_t[1]  # (N, 1, F); (N, S, Fc) or KeyValues
        mask = _check_call(m, params, x1, context, None if len(x_t) == 2 else x_t[2][:, None])  # (N, 1, 1, S)
        S = (context.k if isinstance(context, KeyValues) else context).shape[1]
        q, k, v = _project(m, params, x1, context, jnp.asarray(pos, jnp.int32)[None], jnp.arange(S))
        return attend(params, q, k, v, mask), cache

    def self_step(params, cache, x_t, *, pos):
        if isinstance(x_t, (tuple, list)):
            fail(_NAME, "a self-attention decode step takes x_t (N, F) alone, no mask: the cache masks "
                        "the positions not yet written")
        x1 = x_t[:, None]  # (N, 1, F)
        _check_call(m, params, x1, x1, None)
        pos = jnp.asarray(pos, jnp.int32)[None]
        q, k, v = _project(m, params, x1, x1, pos, pos)  # (N, 1, H, D), (N, 1, K, D) x2
        index = cache["index"]
        keys = lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), index, axis=1)
        values = lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype), index, axis=1)
        written = (jnp.arange(keys.shape[1]) <= index)[None, None, None, :]  # (1, 1, 1, max_len)
        return attend(params, q, keys, values, written), {"k": keys, "v": values, "index": index + 1}

    return Decode(init_cache, cross_step if m.cross else self_step)


def _describe(x) -> str:
    """The shapes of an input (or an in_shape), for messages."""
    return str(jax.tree_util.tree_map(lambda a: tuple(a.shape) if hasattr(a, "shape") else a, x, is_leaf=is_shape))
