"""Paired primitives: the math several layers and losses share, each forward beside its pullback.

Dimension letters: N... any leading dims, I in features, O out features, C channels (the last axis),
V vocabulary size. A pullback maps the cotangent of the forward's output (and what the forward kept) to
the cotangents of its inputs; `linear_dx` / `linear_dw` give one each, for callers that need only one
(a recurrent step needs dx at every step, dw once after the scan). `affine` is a layer's projection by
name (`params["w_q"]`, `params["b_q"]`), and its pullback returns the gradients under the same names.

Precision: every primitive returns its operands' dtype, and sums in at least float32
(`accumulation_dtype`): products of bfloat16 or float16 operands accumulate in float32
(`preferred_element_type`) and are rounded once at the end; softmax, logsumexp and scatter-adds run in
float32 and are cast back. float32 and float64 operands compute in their own dtype, unchanged
(docs/guides/mixed-precision.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# --------------------------------------------------------------------------------------- precision


def accumulation_dtype(*dtypes) -> jnp.dtype:
    """The dtype that sums and statistics over operands of these dtypes (or arrays) run in: their
    promoted dtype, at least float32. bfloat16 -> float32; float32 -> float32; float64 -> float64."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def _result(x: jax.Array) -> jnp.dtype:
    """The dtype a float function of x returns: x's own if floating, else the accumulation dtype."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else accumulation_dtype(x)


def dot(a: jax.Array, b: jax.Array, dimension_numbers) -> jax.Array:
    """`lax.dot_general(a, b, dimension_numbers)` summed in `accumulation_dtype` and returned in the
    operands' promoted dtype: bfloat16 operands accumulate in float32, rounded once at the end."""
    dtype = jnp.result_type(a, b)
    acc = accumulation_dtype(dtype)
    if acc == dtype:
        return lax.dot_general(a, b, dimension_numbers)
    return lax.dot_general(a, b, dimension_numbers, preferred_element_type=acc).astype(dtype)


# ------------------------------------------------------------------------------------------ linear


def linear(x: jax.Array, w: jax.Array) -> jax.Array:
    """y = x @ w over the last axis. x (N..., I), w (I, O) -> y (N..., O)."""
    return dot(x, w, (((x.ndim - 1,), (0,)), ((), ())))


# dx = dy @ w.T;  dw = x.T @ dy, summed over every leading dim.
def linear_dx(dy: jax.Array, w: jax.Array) -> jax.Array:
    """dy (N..., O), w (I, O) -> dx (N..., I)."""
    return matmul_t(dy, w)


def linear_dw(x: jax.Array, dy: jax.Array) -> jax.Array:
    """x (N..., I), dy (N..., O) -> dw (I, O): one matmul contracting every leading dim.

    The operand with fewer features goes first (dy^T x, then the small (O, I) result transposed, when
    O < I): on the CPU the transposed operand's copy costs more than the product (docs/performance.md)."""
    lead = tuple(range(x.ndim - 1))
    if dy.shape[-1] < x.shape[-1]:
        return dot(dy, x, ((lead, lead), ((), ()))).T
    return dot(x, dy, ((lead, lead), ((), ())))


def matmul_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """y = a @ b.T over the last axis, as a forward (a tied output head: h @ embedding.T).
    a (N..., K), b (M, K) -> y (N..., M)."""
    return dot(a, b, (((a.ndim - 1,), (1,)), ((), ())))


# Its pullback is linear's, the roles swapped: da = dy @ b = linear(dy, b);  db = dy.T @ a = linear_dw(dy, a).


def bias_add(y: jax.Array, b: jax.Array) -> jax.Array:
    """y + b over the last axis. y (N..., C), b (C,) -> (N..., C)."""
    return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


# db = sum of dy over every leading dim.
def bias_grad(dy: jax.Array) -> jax.Array:
    """dy (N..., C) -> db (C,)."""
    return jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))


# ------------------------------------------------------------------------------------------ affine


def _names(name: str) -> tuple[str, str]:  # "" -> ("w", "b");  "q" -> ("w_q", "b_q")
    return ("w", "b") if not name else (f"w_{name}", f"b_{name}")


def affine(x: jax.Array, params: dict, name: str = "") -> jax.Array:
    """y = x @ w + b with w = params["w_" + name] (I, O) and b = params["b_" + name] (O,) where params
    has it ("w", "b" for name ""). x (N..., I) -> y (N..., O)."""
    w, b = _names(name)
    y = linear(x, params[w])
    return bias_add(y, params[b]) if b in params else y


# dw = x.T @ dy (summed over every leading dim);  db = sum(dy);  dx = dy @ w.T.
def affine_pullback(dy: jax.Array, x: jax.Array, params: dict, name: str = "") -> tuple[dict, jax.Array]:
    """dy (N..., O), x (N..., I) -> ({"w_" + name: (I, O), "b_" + name: (O,) where params has it}, dx (N..., I))."""
    w, b = _names(name)
    dparams = {w: linear_dw(x, dy)}
    if b in params:
        dparams[b] = bias_grad(dy)
    return dparams, linear_dx(dy, params[w])


# ----------------------------------------------------------------------------------- scale, shift


def scale_shift(xhat: jax.Array, params: dict) -> jax.Array:
    """y = gamma * xhat + beta per channel, each term only where `params` has it ("gamma", "beta",
    both (C,)). xhat (N..., C) -> y (N..., C)."""
    y = xhat * params["gamma"].reshape((1,) * (xhat.ndim - 1) + (-1,)) if "gamma" in params else xhat
    return bias_add(y, params["beta"]) if "beta" in params else y


# dgamma = sum(dy * xhat);  dbeta = sum(dy)  (over every axis but the last);  dxhat = dy * gamma.
def scale_shift_pullback(dy: jax.Array, xhat: jax.Array, params: dict) -> tuple[dict, jax.Array]:
    """-> (dparams with the keys of `params`, dxhat (N..., C))."""
    dparams = {}
    if "gamma" in params:
        dparams["gamma"] = bias_grad(dy * xhat)  # (C,)
    if "beta" in params:
        dparams["beta"] = bias_grad(dy)  # (C,)
    dxhat = dy * params["gamma"].reshape((1,) * (dy.ndim - 1) + (-1,)) if "gamma" in params else dy
    return dparams, dxhat


# ------------------------------------------------------------------------------ softmax family


def logsumexp(x: jax.Array, axis: int = -1) -> jax.Array:
    """Stable log(sum(exp(x))) along `axis`, kept as a size-1 axis: (..., K, ...) -> (..., 1, ...), in
    x's dtype (computed in at least float32)."""
    z = x.astype(accumulation_dtype(x))
    peak = jnp.max(z, axis=axis, keepdims=True)
    return (peak + jnp.log(jnp.sum(jnp.exp(z - peak), axis=axis, keepdims=True))).astype(_result(x))


# dx = dlse * softmax(x) = dlse * exp(x - lse).
def logsumexp_pullback(x: jax.Array, lse: jax.Array, dlse: jax.Array) -> jax.Array:
    """x (..., K, ...), lse and dlse with `axis` kept at size 1 -> dx like x."""
    acc = accumulation_dtype(x, lse, dlse)
    return (dlse.astype(acc) * jnp.exp(x.astype(acc) - lse.astype(acc))).astype(_result(x))


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """exp(x) / sum(exp(x)) along `axis`, max-shifted, computed in at least float32. Any shape -> same."""
    z = x.astype(accumulation_dtype(x))
    e = jnp.exp(z - jnp.max(z, axis=axis, keepdims=True))
    return (e / jnp.sum(e, axis=axis, keepdims=True)).astype(_result(x))


# dx = y * (dy - sum(dy * y)) along axis.  Needs only y.
def softmax_pullback(y: jax.Array, dy: jax.Array, axis: int = -1) -> jax.Array:
    """dx of `y = softmax(x)` from y alone: `y * (dy - sum(dy * y))` along `axis`. Shapes: y, dy -> dx, same."""
    acc = accumulation_dtype(y, dy)
    y_a, dy_a = y.astype(acc), dy.astype(acc)
    return (y_a * (dy_a - jnp.sum(dy_a * y_a, axis=axis, keepdims=True))).astype(jnp.result_type(y, dy))


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """x - logsumexp(x) along `axis`, computed in at least float32. Any shape -> same."""
    z = x.astype(accumulation_dtype(x))
    shifted = z - jnp.max(z, axis=axis, keepdims=True)
    return (shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))).astype(_result(x))


# dx = dy - softmax(x) * sum(dy) along axis, with softmax(x) = exp(y).  Needs only y.
def log_softmax_pullback(y: jax.Array, dy: jax.Array, axis: int = -1) -> jax.Array:
    """dx of `y = log_softmax(x)` from y alone: `dy - exp(y) * sum(dy)` along `axis`. Shapes: y, dy -> dx, same."""
    acc = accumulation_dtype(y, dy)
    y_a, dy_a = y.astype(acc), dy.astype(acc)
    return (dy_a - jnp.exp(y_a) * jnp.sum(dy_a, axis=axis, keepdims=True)).astype(jnp.result_type(y, dy))


# -------------------------------------------------------------------------------------- lookup


def lookup(w: jax.Array, ids: jax.Array) -> jax.Array:
    """Rows of a table: w (V, F), ids (N...) int in [0, V) -> (N..., F); an id outside [0, V) looks
    up a row of NaN (ids are traced values, so they cannot be rejected under jit)."""
    ids = jnp.where(ids < 0, w.shape[0], ids)  # negative ids are out of range, not wrapped around
    return jnp.take(w, ids, axis=0, mode="fill", fill_value=jnp.nan)


# dw[v] = sum of dy over every position whose id is v; out-of-range ids add nothing.
def lookup_dw(ids: jax.Array, dy: jax.Array, vocab_size: int) -> jax.Array:
    """ids (N...), dy (N..., F) -> dw (V, F), in dy's dtype (summed in at least float32)."""
    ids = jnp.where(ids < 0, vocab_size, ids).reshape(-1)
    features, acc = dy.shape[-1], accumulation_dtype(dy)
    dw = jnp.zeros((vocab_size, features), acc).at[ids].add(dy.reshape(-1, features).astype(acc), mode="drop")
    return dw.astype(dy.dtype)
