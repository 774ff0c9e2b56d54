"""Pooling layers: max and average pooling over windows, and global average pooling.

Dimension letters: N batch, W width, H height, C channels (channels-last: NWC for 1-D, NHWC for 2-D);
K the window, S the strides, P the padding (low, high) per spatial axis; out spatial size
floor((in + P_low + P_high - K) / S) + 1. Windows never lie wholly in the padding (each pad < window),
so every output sees at least one real element.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet.core import Layer, check_positive, fail, stateless

_LAYOUTS = {1: "(N, W, C)", 2: "(N, H, W, C)"}


class _Windows(NamedTuple):
    """Full-rank window arguments for lax (batch and channel axes get window 1, stride 1, no padding)."""

    dims: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_shape: tuple[int, ...]


def _per_axis(name: str, arg: str, value, rank: int) -> tuple[int, ...]:
    values = check_positive(name, arg, value)
    if len(values) == 1:
        values = values * rank
    if len(values) != rank:
        fail(name, f"{arg} must be an int or {rank} ints, got {arg}={value!r}")
    return values


def _check_padding(name: str, padding, window: tuple[int, ...]):
    """-> 'SAME', 'VALID' or a tuple of (low, high) pairs with 0 <= pad < window."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            fail(name, f"padding must be 'SAME', 'VALID' or (low, high) pairs, got padding={padding!r}")
        return padding.upper()
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
        ok = len(pairs) == len(window) and all(p == tuple(q) for p, q in zip(pairs, padding))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        fail(name, f"padding must be 'SAME', 'VALID' or {len(window)} (low, high) pairs, "
                   f"got padding={padding!r}")
    if not all(0 <= lo < k and 0 <= hi < k for (lo, hi), k in zip(pairs, window)):
        fail(name, f"padding must satisfy 0 <= pad < window={window}, got padding={padding!r}")
    return pairs


def _geometry(name, spatial_rank, window, strides, padding):
    """Validate the hyperparameters; -> windows(in_shape) giving the full-rank `_Windows` for a shape."""
    window = _per_axis(name, "window", window, spatial_rank)
    strides = window if strides is None else _per_axis(name, "strides", strides, spatial_rank)
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
        win = windows(x.shape)
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, win.dims, win.strides, win.pads)

    # dx: each dy goes to its window's first maximal x (select `ge`, the rule of jax.vjp for max pooling);
    # overlapping windows add. Residuals: x only (the argmax is re-found by select_and_scatter_add).
    # Tiling windows (strides == window, no padding) take `_tiled_max_vjp`, the same result 2-2.5x faster.
    def vjp(params, x):
        win = windows(x.shape)
        if win.strides == win.dims and not any(lo or hi for lo, hi in win.pads):
            return _tiled_max_vjp(x, win.dims[1:-1])
        y = apply(params, x)  # (N, out..., C)

        def pullback(dy):
            dx = lax.select_and_scatter_add_p.bind(  # (N, in..., C)
                dy, x, select_prim=lax.ge_p, window_dimensions=win.dims, window_strides=win.strides,
                padding=win.pads)
            return {}, dx

        return y, pullback

    return stateless(name, _init(windows), apply, vjp)


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
    windows = split.transpose(to_last).reshape(n, *out, c, -1)  # (N, *O, C, K)
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


# ------------------------------------------------------------------------------------------- avg


def _avg_pool(name, spatial_rank, window, strides, padding, count_include_pad) -> Layer:
    windows = _geometry(name, spatial_rank, window, strides, padding)
    if not isinstance(count_include_pad, bool):
        fail(name, f"count_include_pad must be a bool, got count_include_pad={count_include_pad!r}")

    def counts(x_shape, win: _Windows, dtype):
        """The divisor of each window: its size, or its number of real (unpadded) elements."""
        if count_include_pad:
            return jnp.array(math.prod(win.dims), dtype)
        ones = jnp.ones((1, *x_shape[1:-1], 1), dtype)
        return lax.reduce_window(ones, np.array(0, dtype), lax.add, win.dims, win.strides, win.pads)

    def window_sum(x, win: _Windows):
        return lax.reduce_window(x, np.array(0, x.dtype), lax.add, win.dims, win.strides, win.pads)

    def apply(params, x):
        del params
        win = windows(x.shape)
        return window_sum(x, win) / counts(x.shape, win, x.dtype)  # (N, out..., C)

    # dx[i] = sum over windows o covering i of dy[o] / count[o]: dilate dy / count by the stride
    # (interior padding S-1), pad by K-1-P_low / in+P_low-(out-1)S-1, sum windows of K at stride 1.
    # Residuals: none (x's shape only; the counts are recomputed from it).
    def vjp(params, x):
        y = apply(params, x)  # (N, out..., C)
        win = windows(x.shape)

        def pullback(dy):
            scaled = dy / counts(x.shape, win, dy.dtype)  # (N, out..., C)
            spread = [(k - 1 - lo, n + lo - (o - 1) * s - 1, s - 1)
                      for n, o, k, s, (lo, _) in zip(x.shape, dy.shape, win.dims, win.strides, win.pads)]
            spread = lax.pad(scaled, np.array(0, dy.dtype), spread)  # (N, in... + K - 1, C)
            ones = (1,) * x.ndim
            dx = lax.reduce_window(spread, np.array(0, dy.dtype), lax.add, win.dims, ones, "VALID")
            return {}, dx  # (N, in..., C)

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


# ---------------------------------------------------------------------------------------- global


def GlobalAvgPool() -> Layer:
    """Mean over every spatial axis. Shapes: x (N, W, C) or (N, H, W, C) -> y (N, C); no params."""

    def check(shape):
        if len(shape) not in (3, 4):
            fail("GlobalAvgPool",
                 f"expected input of rank 3 (N, W, C) or 4 (N, H, W, C), got shape {tuple(shape)}")

    def init(key, in_shape):
        del key
        check(in_shape)
        return (in_shape[0], in_shape[-1]), {}

    def apply(params, x):
        del params
        check(x.shape)
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # (N, C)

    # dx = dy / (H*W), broadcast over the spatial axes. Residuals: none (x's shape only).
    def vjp(params, x):
        y = apply(params, x)

        def pullback(dy):
            count = math.prod(x.shape[1:-1])
            return {}, lax.broadcast_in_dim(dy / count, x.shape, (0, x.ndim - 1))  # (N, spatial..., C)

        return y, pullback

    return stateless("GlobalAvgPool", init, apply, vjp)
