"""Pooling layers: max and average pooling over 1-, 2- and 3-D windows, global average pooling, and the
masked mean over a padded sequence's real positions.

Dimension letters: N batch, D depth, H height, W width, C channels (channels-last: NWC, NHWC, NDHWC);
K the window, S the strides, P the padding (low, high) per spatial axis; out spatial size
floor((in + P_low + P_high - K) / S) + 1; T = prod(K) the positions of a window. Windows never lie
wholly in the padding (each pad < window), so every output sees at least one real element. Integer and
boolean inputs are pooled as float32 (`as_float`). Window sums and the scatter-adds of the pullbacks run
in at least float32 (`accumulation_dtype`) and are cast back to x's dtype (bfloat16 under a precision policy).
Derivations of the pullbacks: docs/derivations/pooling.md.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet._checks import as_float, check_bool, check_padding, check_per_axis, fail
from purenet.core import Layer, stateless
from purenet.ops import accumulation_dtype

_LAYOUTS = {1: "(N, W, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}


class _Windows(NamedTuple):
    """Full-rank window arguments for lax (batch and channel axes get window 1, stride 1, no padding)."""

    dims: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_shape: tuple[int, ...]


def _check_padding(name: str, padding, window: tuple[int, ...]):
    """-> 'SAME', 'VALID' or a tuple of (low, high) pairs with 0 <= pad < window."""
    padding = check_padding(name, padding, len(window))
    if not isinstance(padding, str) and not all(lo < k and hi < k for (lo, hi), k in zip(padding, window)):
        fail(name, f"padding must satisfy 0 <= pad < window={window}, got padding={padding!r}")
    return padding


def _geometry(name, spatial_rank, window, strides, padding):
    """Validate the hyperparameters; -> windows(in_shape) giving the full-rank `_Windows` for a shape."""
    window = check_per_axis(name, "window", window, spatial_rank)
    strides = window if strides is None else check_per_axis(name, "strides", strides, spatial_rank)
    padding = _check_padding(name, padding, window)

    def windows(in_shape) -> _Windows:
        if len(in_shape) != spatial_rank + 2:
            fail(name, f"expected input of rank {spatial_rank + 2} {_LAYOUTS[spatial_rank]}, "
                       f"got shape {tuple(in_shape)}")
        spatial = tuple(in_shape[1:-1])
        pads = lax.padtype_to_pads(spatial, window, strides, padding) if isinstance(padding, str) else padding
        pads = tuple((int(lo), int(hi)) for lo, hi in pads)
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
        if any(k > p for k, p in zip(window, padded)):
            fail(name, f"window {window} is larger than the padded input {padded} (input {tuple(in_shape)})")
        out = tuple((p - k) // s + 1 for p, k, s in zip(padded, window, strides))
        return _Windows((1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)),
                        (in_shape[0], *out, in_shape[-1]))

    return windows


def _init(windows):
    def init(key, in_shape):
        del key
        return windows(in_shape).out_shape, {}

    return init


# ------------------------------------------------------------------------------------------- max


def _max_pool(name, spatial_rank, window, strides, padding) -> Layer:
    windows = _geometry(name, spatial_rank, window, strides, padding)

    def apply(params, x):
        del params
        x, win = as_float(x), windows(x.shape)
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, win.dims, win.strides, win.pads)

    # Derivation: docs/derivations/pooling.md
    # dx: each dy goes to its window's first maximal x (padding counts as -inf), overlapping windows add:
    # a scatter-add at the picked positions. Residual: those positions (int32), not x.
    # Tiling windows (strides == window, no padding) take `_tiled_max_vjp`, as reshapes and one argmax.
    def vjp(params, x):
        del params
        x, win = as_float(x), windows(x.shape)
        if win.strides == win.dims and not any(lo or hi for lo, hi in win.pads):
            return _tiled_max_vjp(x, win.dims[1:-1])
        return _window_max_vjp(x, win)

    return stateless(name, _init(windows), apply, vjp)


def _window_max_vjp(x, win: _Windows):
    """Max pooling with any windows, on public lax ops: the T strided views of x padded with -inf, one
    per window position (row-major), stacked last; max and first argmax over them; the argmax turned
    into a flat spatial index (P = prod(S) where it lies in the padding); the pullback scatter-adds dy
    there (indices P dropped). x (N, *S, C) -> (y (N, *O, C), pullback); residual: the index (N, *O, C)."""
    n, *spatial, c = x.shape
    out, window = win.out_shape[1:-1], win.dims[1:-1]
    strides, pads = win.strides[1:-1], win.pads[1:-1]
    padded = lax.pad(x, np.array(-np.inf, x.dtype), [(lo, hi, 0) for lo, hi in win.pads])
    views = [lax.slice(padded, (0, *a, 0), (n, *(i + (o - 1) * s + 1 for i, o, s in zip(a, out, strides)), c),
                       win.strides) for a in itertools.product(*map(range, window))]
    stacked = jnp.stack(views, axis=-1)  # (N, *O, C, T)
    y = jnp.max(stacked, axis=-1)  # (N, *O, C)
    pick = jnp.argmax(stacked, axis=-1).astype(jnp.int32)  # (N, *O, C): the first maximum, in [0, T)
    flat, inside = jnp.zeros_like(pick), np.bool_(True)
    for axis, (size, k, s, (lo, _)) in enumerate(zip(spatial, window, strides, pads)):
        offset = pick // math.prod(window[axis + 1:]) % k  # the pick's position in the window on this axis
        at = lax.broadcasted_iota(jnp.int32, pick.shape, axis + 1) * s + offset - lo  # its input row
        flat, inside = flat * size + at, inside & (at >= 0) & (at < size)
    flat = jnp.where(inside, flat, math.prod(spatial))  # (N, *O, C)
    scatter = lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(1,),
                                          scatter_dims_to_operand_dims=(1,), operand_batching_dims=(0, 2),
                                          scatter_indices_batching_dims=(0, flat.ndim - 1))

    def pullback(dy):
        acc = accumulation_dtype(dy)  # overlapping windows add up: in float32 at least
        dx = jnp.zeros((n, math.prod(spatial), c), acc)  # (N, P, C)
        dx = lax.scatter_add(dx, flat[..., None], dy.astype(acc), scatter, mode=lax.GatherScatterMode.FILL_OR_DROP)
        return {}, dx.reshape(x.shape).astype(dy.dtype)  # (N, *S, C)

    return y, pullback


def _tiled_max_vjp(x, window):
    """Max pooling whose windows tile x (strides == window, no padding), as reshapes and one argmax over
    each window's K = prod(window) elements laid out last: the forward is the max, the pullback puts dy
    on the first maximal element (the `ge` rule again), as a one-hot mask. The trailing rows no window
    covers get zero. x (N, *S, C) -> (y (N, *O, C), pullback); residual: the argmax (N, *O, C)."""
    n, *spatial, c = x.shape
    rank, out = len(window), [size // k for size, k in zip(spatial, window)]
    covered = x[(slice(None), *(slice(0, o * k) for o, k in zip(out, window)))]
    split = covered.reshape(n, *[d for o, k in zip(out, window) for d in (o, k)], c)  # (N, O1, K1, ..., C)
    to_last = (0, *range(1, 2 * rank, 2), 2 * rank + 1, *range(2, 2 * rank + 1, 2))  # (N, *O, C, *K)
    windows = split.transpose(to_last).reshape(n, *out, c, math.prod(window))  # (N, *O, C, K)
    first = jnp.argmax(windows, axis=-1)  # (N, *O, C)
    y = jnp.max(windows, axis=-1)

    def pullback(dy):
        onehot = first[..., None] == lax.broadcasted_iota(first.dtype, windows.shape, windows.ndim - 1)  # (N, *O, C, K)
        routed = jnp.where(onehot, dy[..., None], np.array(0, dy.dtype)).reshape(n, *out, c, *window)
        dx = routed.transpose(np.argsort(to_last)).reshape(covered.shape)  # (N, *O*K, C)
        rest = [(0, 0, 0)] + [(0, size - o * k, 0) for size, o, k in zip(spatial, out, window)] + [(0, 0, 0)]
        return {}, lax.pad(dx, np.array(0, dy.dtype), rest)  # (N, *S, C)

    return y, pullback


def MaxPool1D(window, *, strides=None, padding="VALID") -> Layer:
    """Max over windows of width `window`. Shapes: x (N, W, C) -> y (N, W_out, C); no params.

    `strides` defaults to `window`; `padding` is 'VALID', 'SAME' or ((low, high),) (padded with -inf)."""
    return _max_pool("MaxPool1D", 1, window, strides, padding)


def MaxPool2D(window, *, strides=None, padding="VALID") -> Layer:
    """Max over (KH, KW) windows. Shapes: x (N, H, W, C) -> y (N, H_out, W_out, C); no params.

    `window`/`strides` are an int or (KH, KW) (`strides` defaults to `window`); `padding` is 'VALID',
    'SAME' or ((low, high), (low, high)) (padded with -inf)."""
    return _max_pool("MaxPool2D", 2, window, strides, padding)


def MaxPool3D(window, *, strides=None, padding="VALID") -> Layer:
    """Max over (KD, KH, KW) windows. Shapes: x (N, D, H, W, C) -> y (N, D_out, H_out, W_out, C); no params.

    `window`/`strides` are an int or (KD, KH, KW) (`strides` defaults to `window`); `padding` is
    'VALID', 'SAME' or three (low, high) pairs (padded with -inf)."""
    return _max_pool("MaxPool3D", 3, window, strides, padding)


# ------------------------------------------------------------------------------------------- avg


def _avg_pool(name, spatial_rank, window, strides, padding, count_include_pad) -> Layer:
    windows = _geometry(name, spatial_rank, window, strides, padding)
    check_bool(name, "count_include_pad", count_include_pad)

    def counts(x_shape, win: _Windows, dtype):
        """The divisor of each window: its size, or its number of real (unpadded) elements."""
        if count_include_pad:
            return jnp.array(math.prod(win.dims), dtype)
        ones = jnp.ones((1, *x_shape[1:-1], 1), dtype)
        return lax.reduce_window(ones, np.array(0, dtype), lax.add, win.dims, win.strides, win.pads)

    def window_sum(x, win: _Windows):  # in x's dtype, x in accumulation_dtype
        return lax.reduce_window(x, np.array(0, x.dtype), lax.add, win.dims, win.strides, win.pads)

    def apply(params, x):
        del params
        x, win = as_float(x), windows(x.shape)
        z = x.astype(accumulation_dtype(x))
        return (window_sum(z, win) / counts(x.shape, win, z.dtype)).astype(x.dtype)  # (N, out..., C)

    # Derivation: docs/derivations/pooling.md
    # dx[i] = sum over windows o covering i of dy[o] / count[o]: dilate dy / count by the stride
    # (interior padding S-1), pad by K-1-P_low / in+P_low-(out-1)S-1, sum windows of K at stride 1.
    # Residuals: none (x's shape only; the counts are recomputed from it).
    def vjp(params, x):
        y = apply(params, x)  # (N, out..., C)
        win = windows(x.shape)

        def pullback(dy):
            acc = accumulation_dtype(dy)
            scaled = dy.astype(acc) / counts(x.shape, win, acc)  # (N, out..., C)
            spread = [(k - 1 - lo, n + lo - (o - 1) * s - 1, s - 1)
                      for n, o, k, s, (lo, _) in zip(x.shape, dy.shape, win.dims, win.strides, win.pads)]
            spread = lax.pad(scaled, np.array(0, acc), spread)  # (N, in... + K - 1, C)
            ones = (1,) * x.ndim
            dx = lax.reduce_window(spread, np.array(0, acc), lax.add, win.dims, ones, "VALID")
            return {}, dx.astype(dy.dtype)  # (N, in..., C)

        return y, pullback

    return stateless(name, _init(windows), apply, vjp)


def AvgPool1D(window, *, strides=None, padding="VALID", count_include_pad: bool = True) -> Layer:
    """Mean over windows of width `window`. Shapes: x (N, W, C) -> y (N, W_out, C); no params.

    `strides` defaults to `window`; `padding` is 'VALID', 'SAME' or ((low, high),), padded with zeros.
    `count_include_pad=True` (default, as PyTorch and Flax) divides every window by its full size;
    False divides by the number of real elements it covers (as TensorFlow's 'SAME')."""
    return _avg_pool("AvgPool1D", 1, window, strides, padding, count_include_pad)


def AvgPool2D(window, *, strides=None, padding="VALID", count_include_pad: bool = True) -> Layer:
    """Mean over (KH, KW) windows. Shapes: x (N, H, W, C) -> y (N, H_out, W_out, C); no params.

    `window`/`strides` are an int or (KH, KW) (`strides` defaults to `window`); `padding` is 'VALID',
    'SAME' or ((low, high), (low, high)), padded with zeros. `count_include_pad=True` (default, as
    PyTorch and Flax) divides every window by KH*KW; False by the number of real elements it covers."""
    return _avg_pool("AvgPool2D", 2, window, strides, padding, count_include_pad)


def AvgPool3D(window, *, strides=None, padding="VALID", count_include_pad: bool = True) -> Layer:
    """Mean over (KD, KH, KW) windows. Shapes: x (N, D, H, W, C) -> y (N, D_out, H_out, W_out, C); no params.

    `window`/`strides` are an int or (KD, KH, KW) (`strides` defaults to `window`); `padding` is
    'VALID', 'SAME' or three (low, high) pairs, padded with zeros. `count_include_pad=True` (default)
    divides every window by KD*KH*KW; False by the number of real elements it covers."""
    return _avg_pool("AvgPool3D", 3, window, strides, padding, count_include_pad)


# ---------------------------------------------------------------------------------------- global


def GlobalAvgPool() -> Layer:
    """Mean over every spatial axis. Shapes: x (N, W, C), (N, H, W, C) or (N, D, H, W, C) -> y (N, C);
    no params."""

    def check(shape):
        if len(shape) not in (3, 4, 5):
            fail("GlobalAvgPool", f"expected input of rank 3 (N, W, C), 4 (N, H, W, C) or 5 (N, D, H, W, C), "
                                  f"got shape {tuple(shape)}")

    def init(key, in_shape):
        del key
        check(in_shape)
        return (in_shape[0], in_shape[-1]), {}

    def apply(params, x):
        del params
        check(x.shape)
        return jnp.mean(as_float(x), axis=tuple(range(1, x.ndim - 1)))  # (N, C)

    # Derivation: docs/derivations/pooling.md
    # dx = dy / prod(spatial sizes), broadcast over the spatial axes. Residuals: none (x's shape only).
    def vjp(params, x):
        y = apply(params, x)

        def pullback(dy):
            count = math.prod(x.shape[1:-1])
            return {}, lax.broadcast_in_dim(dy / count, x.shape, (0, x.ndim - 1))  # (N, *S, C)

        return y, pullback

    return stateless("GlobalAvgPool", init, apply, vjp)


def MaskedMeanPool() -> Layer:
    """Mean over the positions a mask keeps: padded sequences to one vector each (a sentence embedding).

    Shapes: (x (N, T, F), mask (N, T) bool, True = a real position) -> y (N, F), y[n] = sum_t mask[n, t]
    x[n, t] / max(1, count[n]), count[n] = sum_t mask[n, t] (a row with no position kept gives 0); no
    params. dx mirrors the input: (dx, None)."""
    name = "MaskedMeanPool"

    def parts(x):
        if not (isinstance(x, (tuple, list)) and len(x) == 2):
            fail(name, f"expects (x (N, T, F), mask (N, T)), got {type(x).__name__} {x!r:.80}")
        x, mask = x
        x_shape, m_shape = (tuple(getattr(x, "shape", x)), tuple(getattr(mask, "shape", mask)))
        if len(x_shape) != 3 or m_shape != x_shape[:2]:
            fail(name, f"expects x (N, T, F) and mask (N, T), got shapes {x_shape} and {m_shape}")
        if hasattr(mask, "dtype") and mask.dtype != jnp.bool_:
            fail(name, f"mask must be boolean (True = a real position), got dtype {mask.dtype}")
        return x, mask

    def init(key, in_shape):
        del key
        x_shape, _ = parts(in_shape)
        return (x_shape[0], x_shape[2]), {}

    def weights(x, mask):  # mask / max(1, count): (N, T, 1)
        count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(x.dtype)  # (N, 1)
        return (mask.astype(x.dtype) / count)[..., None]

    def apply(params, x):
        del params
        x, mask = parts(x)
        x = as_float(x)
        return jnp.sum(x * weights(x, mask), axis=1)  # (N, F)

    # dx[n, t] = dy[n] mask[n, t] / max(1, count[n]); the mask has no cotangent. Residuals: the weights.
    def vjp(params, x):
        del params
        seq, mask = parts(x)
        seq = as_float(seq)
        w = weights(seq, mask)  # (N, T, 1)

        def pullback(dy):
            return {}, type(x)((dy[:, None, :] * w, None))  # (N, T, F)

        return jnp.sum(seq * w, axis=1), pullback

    return stateless(name, init, apply, vjp)
