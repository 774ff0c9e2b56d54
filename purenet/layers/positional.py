"""Positional information: rotary embeddings (a paired function for attention), learned and sinusoidal
position tables added to the input.

Dimension letters: N batch, T positions, H heads, D head features (even), F features.
`rotary` / `rotary_pullback` are a forward beside its pullback, used by attention on queries and keys;
`LearnedPositions` and `SinusoidalPositions` are layers `y = x + P[:T]` whose decode step adds row `pos`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from purenet import initializers
from purenet._checks import as_float, check_positive, check_range, fail, is_int
from purenet.core import Decode, Layer, stateless
from purenet.ops import lookup

# ----------------------------------------------------------------------------------------- rotary


def _rotary_cos_sin(owner: str, x, positions, base):
    """cos and sin of theta[n, t, i] = positions[n, t] * base^(-2i/D), i < D/2, shaped (1 or N, T, 1, D/2)
    in x's dtype (computed in at least float32), after checking x (N, T, H, D) and positions."""
    base = check_range(owner, "base", base, lambda v: 0 < v < math.inf, "a positive finite number")
    if x.ndim != 4:
        fail(owner, f"expected input of rank 4 (N, T, H, D), got shape {tuple(x.shape)}")
    batch, steps, _, features = x.shape
    if features % 2:
        fail(owner, f"the head dimension D = x.shape[-1] must be even, got shape {tuple(x.shape)}")
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        fail(owner, f"positions must be integers, got dtype {positions.dtype}")
    if positions.ndim == 0:
        positions = jnp.broadcast_to(positions, (1, steps))
    elif positions.shape == (steps,):
        positions = positions.reshape(1, steps)
    elif positions.shape != (batch, steps):
        fail(owner, f"positions must have shape () or (T,) = ({steps},) or (N, T) = ({batch}, {steps}) for "
                    f"x of shape {tuple(x.shape)}, got {tuple(positions.shape)}")
    compute = jnp.promote_types(x.dtype, jnp.float32)
    inv_freq = jnp.asarray(base ** (-2.0 * np.arange(features // 2) / features), compute)  # (D/2,)
    theta = positions.astype(compute)[:, :, None, None] * inv_freq.reshape(1, 1, 1, -1)  # (1|N, T, 1, D/2)
    return jnp.cos(theta).astype(x.dtype), jnp.sin(theta).astype(x.dtype)


def _rotate(x, cos, sin):
    """Rotate each pair (x_i, x_{i + D/2}) by the angle whose cosine and sine are given."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (N, T, H, D/2) each
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # (N, T, H, D)


def rotary(x, positions, *, base: float = 10000.0):
    """Rotary position embedding, "rotate half" form (GPT-NeoX, LLaMA): feature i pairs with i + D/2 and
    the pair turns by theta = positions[t] * base^(-2i/D):
    out_i = x_i cos - x_{i+D/2} sin, out_{i+D/2} = x_{i+D/2} cos + x_i sin.

    Shapes: x (N, T, H, D), D even; positions integers () (one position for every t: a decode step,
    x (N, 1, H, D)), (T,) or (N, T), traced values allowed -> (N, T, H, D)."""
    x = as_float(x)
    cos, sin = _rotary_cos_sin("rotary", x, positions, base)
    return _rotate(x, cos, sin)


# Derivation: docs/derivations/rotary.md
# Each pair is multiplied by a rotation matrix R(theta), orthogonal, so the pullback is R(theta)^T = R(-theta):
# dx_i = dy_i cos + dy_{i+D/2} sin, dx_{i+D/2} = dy_{i+D/2} cos - dy_i sin. Needs only the positions.
def rotary_pullback(dy, positions, *, base: float = 10000.0):
    """dy (N, T, H, D) -> dx (N, T, H, D): the inverse rotation of `rotary` (same positions and base)."""
    cos, sin = _rotary_cos_sin("rotary_pullback", dy, positions, base)
    return _rotate(dy, cos, -sin)


# ------------------------------------------------------------------------------- added positions


def _check_sequence(owner: str, in_shape, max_len: int | None = None) -> tuple[int, int]:
    """Fail unless in_shape is (N, T, F) with known T > 0 (and T <= max_len) and F > 0; -> (T, F)."""
    if len(in_shape) != 3:
        fail(owner, f"expected input of rank 3 (N, T, F), got shape {tuple(in_shape)}")
    steps, features = in_shape[1:]
    if not (is_int(steps) and steps > 0 and is_int(features) and features > 0):
        fail(owner, f"T = in_shape[1] and F = in_shape[2] must be positive ints, got shape {tuple(in_shape)}")
    if max_len is not None and steps > max_len:
        fail(owner, f"sequence length T (={steps}) > max_len (={max_len}), got shape {tuple(in_shape)}")
    return int(steps), int(features)


def _check_pos(owner: str, pos, max_len: int | None) -> None:
    """A concrete `pos` outside [0, max_len) fails; a traced one cannot be checked (see the callers)."""
    if is_int(pos) and (pos < 0 or (max_len is not None and pos >= max_len)):
        fail(owner, f"pos must be in [0, {max_len if max_len is not None else 'inf'}), got pos={pos}")


def _added(name: str, table, max_len: int | None) -> tuple:
    """`apply(params, x) = x + table(params, arange(T), x)` for x (N, T, F), and the `Decode` that adds
    `table(params, [pos], x_t)` to x_t (N, F); `table(params, positions (P,), x) -> (P, F)`."""

    def apply(params, x):
        _check_sequence(name, x.shape, max_len)
        x = as_float(x)
        return x + table(params, jnp.arange(x.shape[1]), x).reshape(1, *x.shape[1:])  # (N, T, F)

    def init_cache(params, batch, decode_len):
        del params, batch
        if max_len is not None and decode_len > max_len:
            fail(name, f"cannot decode max_len={decode_len} positions, the table has max_len={max_len}")
        return {}

    def step(params, cache, x_t, *, pos):
        if x_t.ndim != 2:
            fail(name, f"a decode step expects x_t of rank 2 (N, F), got shape {tuple(x_t.shape)}")
        _check_pos(name, pos, max_len)
        x_t = as_float(x_t)
        return x_t + table(params, jnp.reshape(pos, (1,)), x_t), cache  # (N, F) + (1, F)

    return apply, Decode(init_cache, step)


def LearnedPositions(max_len: int, *, w_init=initializers.normal(0.02)) -> Layer:
    """y = x + w[:T]: a learned vector per position. Shapes: x (N, T, F), T <= max_len -> y (N, T, F);
    params {"w": (max_len, F)}. Default init: normal with stddev 0.02.

    Decodes step by step: x_t (N, F) at `pos` -> x_t + w[pos]; a traced `pos` outside [0, max_len)
    gives a row of NaN (it cannot be rejected under jit; a concrete one fails)."""
    (max_len,) = check_positive("LearnedPositions", "max_len", max_len)

    def init(key, in_shape):
        _, features = _check_sequence("LearnedPositions", in_shape, max_len)
        return tuple(in_shape), {"w": w_init(key, (max_len, features), jnp.float32)}

    def table(params, positions, x):
        if params["w"].shape[1] != x.shape[-1]:
            fail("LearnedPositions", f"expected input with F = {params['w'].shape[1]} features, got "
                                     f"shape {tuple(x.shape)}")
        return lookup(params["w"], positions)  # (len(positions), F)

    apply, decode = _added("LearnedPositions", table, max_len)

    # dx = dy;  dw[:T] = sum of dy over N, dw[T:] = 0.  Residuals: none (T is static).
    def vjp(params, x):
        y = apply(params, x)

        def pullback(dy):
            dw = jnp.sum(dy, axis=0).astype(params["w"].dtype)  # (T, F)
            return {"w": jnp.pad(dw, ((0, max_len - dw.shape[0]), (0, 0)))}, dy  # (max_len, F), (N, T, F)

        return y, pullback

    return stateless("LearnedPositions", init, apply, vjp, decode=decode)


def sinusoid_table(positions, features: int, dtype=jnp.float32):
    """The "Attention Is All You Need" table: PE[t, 2k] = sin(t / 10000^(2k/F)), PE[t, 2k+1] =
    cos(t / 10000^(2k/F)). positions (P,) ints, maybe traced -> (P, F) in `dtype` (computed in at least
    float32). For odd F the last feature F - 1 = 2k is a sine with the frequency of pair k, as if the
    table for F + 1 were cut to F columns."""
    j = np.arange(features)
    inv_freq = 10000.0 ** (-2.0 * (j // 2) / features)  # (F,) float64 constants
    compute = jnp.promote_types(dtype, jnp.float32)
    theta = jnp.asarray(positions).astype(compute)[:, None] * jnp.asarray(inv_freq, compute)[None, :]  # (P, F)
    return jnp.where(jnp.asarray(j % 2 == 0)[None, :], jnp.sin(theta), jnp.cos(theta)).astype(dtype)


def SinusoidalPositions() -> Layer:
    """y = x + PE[:T], PE the fixed sine/cosine table of `sinusoid_table` (base 10000; odd F ends on a
    sine). Shapes: x (N, T, F) -> y (N, T, F); no params. Decodes step by step: x_t (N, F) + PE[pos]."""

    def init(key, in_shape):
        del key
        _check_sequence("SinusoidalPositions", in_shape)
        return tuple(in_shape), {}

    def table(params, positions, x):
        del params
        return sinusoid_table(positions, x.shape[-1], x.dtype)  # (len(positions), F)

    apply, decode = _added("SinusoidalPositions", table, None)

    # dx = dy (the table is a constant).  Residuals: none.
    def vjp(params, x):
        return apply(params, x), lambda dy: ({}, dy)

    return stateless("SinusoidalPositions", init, apply, vjp, decode=decode)
