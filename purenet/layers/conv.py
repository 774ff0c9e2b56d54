"""Convolutions, channels-last, on `lax.conv_general_dilated`: Conv1D/2D/3D, ConvTranspose1D/2D/3D.

Dimension letters: N batch, S input spatial sizes (W in 1-D; H, W in 2-D; D, H, W in 3-D), C in
channels, F out channels, G feature groups, K kernel size, s stride, d dilation, (lo, hi) padding per
spatial axis, dk = (K - 1) d the dilated kernel's extent minus one. Layouts: x (N, *S, C), w (*K, C/G, F),
y (N, *O, F), with O = (S + lo + hi - dk - 1) // s + 1 and remainder r = (S + lo + hi - dk - 1) % s
(the trailing input rows no window reaches; their gradient is zero). One implementation serves every
n = 1, 2, 3 spatial dims. Derivations of the pullbacks: docs/derivations/convolution.md.
An input of another dtype than the kernel (integers, bfloat16) is promoted with it, as Dense's `x @ w`
is; dx comes back in x's dtype (a floating-point x), dw in w's. With both in bfloat16 or float16 (a
precision policy's compute dtype), the convolutions sum in float32 (`preferred_element_type`) and round
once, and the per-tap form runs in float32 (`accumulation_dtype`).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import initializers
from purenet._checks import (as_float, check_choice, check_padding, check_params, check_per_axis, check_positive,
                             check_rank, fail)
from purenet.core import Layer, stateless
from purenet.ops import accumulation_dtype, bias_add, bias_grad

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
_LAYOUT = {1: "(N, W, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}

# ------------------------------------------------------------------------------ padding arithmetic


def _pads(padding, spatial, kernel, strides, dilation) -> tuple[tuple[int, int], ...]:
    """Explicit (lo, hi) per axis. SAME: O = ceil(S / s), the total padding split lo = total // 2."""
    if padding == "VALID":
        return ((0, 0),) * len(spatial)
    if padding != "SAME":
        return padding
    pads = []
    for size, k, s, d in zip(spatial, kernel, strides, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _out_spatial(spatial, kernel, strides, dilation, pads) -> tuple[int, ...]:
    return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1
                 for size, k, s, d, (lo, hi) in zip(spatial, kernel, strides, dilation, pads))


def _check_fits(layer: str, spatial, kernel, dilation, pads) -> None:
    """Fail unless every spatial size is positive and the dilated kernel fits in the padded input."""
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(spatial, pads))
    if any(size <= 0 for size in spatial):
        fail(layer, f"spatial sizes must be positive, got {tuple(spatial)}")
    if any(e > p for e, p in zip(extent, padded)):
        fail(layer, f"dilated kernel {extent} is larger than the padded input {padded} "
                    f"(input {tuple(spatial)}, padding {pads})")


# --------------------------------------------------------------------------- the three convolutions


def _dims(n: int, lhs: str, rhs: str, out: str) -> tuple[str, str, str]:
    """Dimension-number strings with `*` standing for the spatial letters: ('N*C', ...) -> 'NHWC'."""
    return tuple(spec.replace("*", _SPATIAL[n]) for spec in (lhs, rhs, out))


def _conv_general(lhs, rhs, *args, **kwargs):
    """`lax.conv_general_dilated` summed in `accumulation_dtype` (float32 for bfloat16 operands) and
    returned in the operands' dtype."""
    dtype = jnp.result_type(lhs, rhs)
    acc = accumulation_dtype(dtype)
    if acc == dtype:
        return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
    return lax.conv_general_dilated(lhs, rhs, *args, preferred_element_type=acc, **kwargs).astype(dtype)


def _remainders(in_spatial, out_spatial, kernel, strides, dilation, pads) -> list[int]:
    return [size + lo + hi - (k - 1) * d - 1 - (o - 1) * s
            for size, o, k, s, d, (lo, hi) in zip(in_spatial, out_spatial, kernel, strides, dilation, pads)]


def _conv(x, w, strides, dilation, pads, groups):
    """y = x * w (cross-correlation). x (N, *S, C), w (*K, C/G, F) -> y (N, *O, F)."""
    n = x.ndim - 2
    return _conv_general(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=_dims(n, "N*C", "*IO", "N*C"),
                         feature_group_count=groups)


def _input_grad_pads(in_spatial, out_spatial, kernel, strides, dilation, pads) -> list[tuple[int, int]]:
    """Padding of the dilated dy in _conv_input_grad: dk - lo before, dk - hi + r after."""
    rem = _remainders(in_spatial, out_spatial, kernel, strides, dilation, pads)
    return [((k - 1) * d - lo, (k - 1) * d - hi + r) for k, d, (lo, hi), r in zip(kernel, dilation, pads, rem)]


def _swapper_trap(kernel, strides, dilation, pads_t) -> list[bool]:
    """Axes that crash XLA when it swaps the operands of a 2-D or 3-D input-gradient convolution: K = 2,
    s = 2, d = 1 and no padding. XLA's conv operand swapper mis-sizes such an axis's window and aborts
    the process (as JAX's own gradient of lax.conv_general_dilated does; docs/performance.md has the
    versions and the details). It swaps when the product of the other axes' kernel sizes exceeds that
    of dy's sizes (grouped convolutions too), e.g. K (3, 2), s 2, padding ((0, 2), (1, 1)) on a (1, 4)
    input. A 1-D convolution has no other axis, so it is never swapped."""
    return [len(kernel) > 1 and k == 2 and s == 2 and d == 1 and p == (0, 0)
            for k, s, d, p in zip(kernel, strides, dilation, pads_t)]


def _conv_input_grad(dy, w, in_spatial, strides, dilation, pads, groups):
    """dx for y = _conv(x, w): dy dilated by s, correlated with the flipped kernel, I and O swapped
    per group. dy (N, *O, F), w (*K, C/G, F) -> dx (N, *S, C)."""
    n = dy.ndim - 2
    *kernel, c_per_group, f = w.shape
    pads_t = _input_grad_pads(in_spatial, dy.shape[1:-1], kernel, strides, dilation, pads)
    trap = _swapper_trap(kernel, strides, dilation, pads_t)
    # On such axes pad one more row after and drop it: the same dx, and XLA's rewrite stays correct.
    # (Dilating dy beforehand with lax.pad does not help: XLA folds that pad back into the convolution.)
    pads_t = [(lo, hi + 1) if t else (lo, hi) for (lo, hi), t in zip(pads_t, trap)]
    w_t = lax.rev(w, tuple(range(n))).reshape(*kernel, c_per_group, groups, f // groups)
    w_t = jnp.moveaxis(w_t, -2, -3).reshape(*kernel, groups * c_per_group, f // groups)  # (*K, C, F/G)
    dx = _conv_general(dy, w_t, (1,) * n, pads_t, lhs_dilation=strides, rhs_dilation=dilation,
                       dimension_numbers=_dims(n, "N*C", "*OI", "N*C"), feature_group_count=groups)
    return lax.slice(dx, (0,) * dx.ndim, (dx.shape[0], *in_spatial, dx.shape[-1])) if any(trap) else dx


def _conv_kernel_grad(x, dy, kernel, strides, dilation, pads, groups):
    """dw for y = _conv(x, w): x (channels as batch) correlated with dy (as kernel, dilated by s),
    window stride d; groups pair x's channel blocks with dy's. x (N, *S, C), dy (N, *O, F) -> (*K, C/G, F)."""
    n = x.ndim - 2
    rem = _remainders(x.shape[1:-1], dy.shape[1:-1], kernel, strides, dilation, pads)
    pads_w = [(lo, hi - r) for (lo, hi), r in zip(pads, rem)]
    return _conv_general(x, dy, dilation, pads_w, rhs_dilation=strides, dimension_numbers=_dims(n, "C*N", "I*O", "*NC"),
                         batch_group_count=groups)


# ----------------------------------------------- one input channel: per-tap formulation (grayscale, 1-D)
# Derivation: docs/derivations/convolution.md
# XLA's CPU convolution is slow with few channels, so with C = 1 a sum over the kernel's T = prod(K) taps
# runs instead, forward and dw alike; a padded convolution takes lax.conv's dw, which is faster there than
# the taps' (slices of the padded input). Measurements: docs/performance.md.
# With C = 1 and G = 1:
#   tap_t = x shifted by t*d, strided by s                      (N, *O), one per tap t
#   y[f]  = sum_t w[t, f] tap_t                                 (F, N, *O), channels moved last after
#   dw[t] = dy^T tap_t  (dy as (F, N*O), tap_t as (N*O,))       (F,) per tap: one matrix-vector product
#   dx    = sum_t tap_t^T (dy w[t])                             each term scattered back by lax.pad


def _taps(x, kernel, strides, dilation, pads, out_spatial):
    """The T shifted, strided views of a one-channel input. x (N, *S, 1) -> T arrays (N, *O)."""
    padded = jnp.pad(x[..., 0], ((0, 0), *pads))  # (N, *S + lo + hi)
    taps = []
    for offsets in itertools.product(*map(range, kernel)):
        start = (0, *(i * d for i, d in zip(offsets, dilation)))
        limit = (x.shape[0], *(b + (o - 1) * s + 1 for b, o, s in zip(start[1:], out_spatial, strides)))
        taps.append(lax.slice(padded, start, limit, (1, *strides)))
    return taps


def _taps_conv(x, w, strides, dilation, pads, out_spatial):
    """y = _conv(x, w) for C = G = 1. x (N, *S, 1), w (*K, 1, F) -> y (N, *O, F)."""
    w_taps = w.reshape(-1, w.shape[-1])  # (T, F)
    taps = _taps(x, w.shape[:-2], strides, dilation, pads, out_spatial)
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    y_t = sum(w_taps[t][expand] * tap[None] for t, tap in enumerate(taps))  # (F, N, *O)
    return jnp.moveaxis(y_t, 0, -1)


def _taps_kernel_grad(x, dy, kernel, strides, dilation, pads):
    """dw for C = G = 1. x (N, *S, 1), dy (N, *O, F) -> dw (*K, 1, F)."""
    f = dy.shape[-1]
    dy_t = jnp.moveaxis(dy, -1, 0).reshape(f, -1)  # (F, N*O)
    taps = _taps(x, kernel, strides, dilation, pads, dy.shape[1:-1])
    return jnp.stack([dy_t @ tap.reshape(-1) for tap in taps]).reshape(*kernel, 1, f)


def _taps_input_grad(dy, w, in_spatial, strides, dilation, pads):
    """dx for C = G = 1. dy (N, *O, F), w (*K, 1, F) -> dx (N, *S, 1)."""
    kernel, out_spatial = w.shape[:-2], dy.shape[1:-1]
    per_tap = dy @ w.reshape(-1, w.shape[-1]).T  # (N, *O, T)
    padded = [size + lo + hi for size, (lo, hi) in zip(in_spatial, pads)]
    dx = jnp.zeros((dy.shape[0], *padded), dy.dtype)
    for t, offsets in enumerate(itertools.product(*map(range, kernel))):
        spread = [(0, 0, 0)] + [(i * d, p - i * d - (o - 1) * s - 1, s - 1)
                                for i, d, p, o, s in zip(offsets, dilation, padded, out_spatial, strides)]
        dx = dx + lax.pad(per_tap[..., t], np.array(0, dy.dtype), spread)  # (N, *S + lo + hi)
    crop = tuple(slice(lo, lo + size) for size, (lo, _) in zip(in_spatial, pads))
    return dx[(slice(None), *crop)][..., None]


def _promoted(x, w):
    """x and w in one floating dtype, as Dense's `x @ w` promotes them (integer x with float32 w: both
    float32; bfloat16 x with float32 w: both float32)."""
    dtype = jnp.promote_types(as_float(x, w).dtype, w.dtype)
    return x.astype(dtype), w.astype(dtype)


def _like(grad, x):
    """A cotangent in x's dtype where x is floating-point (the dtype of the primal, as the contract asks),
    else as computed."""
    return grad.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else grad


def _init_params(key, w_shape, out_channels, use_bias, w_init, b_init):
    k_w, k_b = jax.random.split(key)
    params = {"w": w_init(k_w, w_shape, jnp.float32)}
    if use_bias:
        params["b"] = b_init(k_b, (out_channels,), jnp.float32)
    return params


# ------------------------------------------------------------------------------------------ layers


_ALGORITHMS = ("auto", "xla", "taps")


def _checked_config(name, n, out_channels, kernel_size, strides, padding, dilation, feature_group_count):
    """A convolution's arguments validated, per axis where they may be one int
    -> (out_channels, groups, kernel, strides, dilation, padding)."""
    (out_channels,) = check_positive(name, "out_channels", out_channels)
    (groups,) = check_positive(name, "feature_group_count", feature_group_count)
    kernel = check_per_axis(name, "kernel_size", kernel_size, n)
    strides = check_per_axis(name, "strides", strides, n)
    dilation = check_per_axis(name, "dilation", dilation, n)
    padding = check_padding(name, padding, n)
    if out_channels % groups:
        fail(name, f"out_channels (={out_channels}) is not divisible by feature_group_count (={groups})")
    return out_channels, groups, kernel, strides, dilation, padding


def _check_input(name, n, shape, in_channels) -> None:
    """An input of rank n + 2 whose channels (last axis) are the ones the layer was built for."""
    check_rank(name, shape, n + 2, _LAYOUT[n])
    if shape[-1] != in_channels:
        fail(name, f"expected input shape (N, ..., {in_channels}), got {tuple(shape)}")


def _convolution(name, n, out_channels, kernel_size, strides, padding, dilation, feature_group_count,
                 use_bias, w_init, b_init, algorithm) -> Layer:
    check_choice(name, "algorithm", algorithm, _ALGORITHMS)
    if algorithm == "taps" and feature_group_count != 1:
        fail(name, f"algorithm='taps' needs feature_group_count=1, got {feature_group_count}")
    out_channels, groups, kernel, strides, dilation, padding = _checked_config(
        name, n, out_channels, kernel_size, strides, padding, dilation, feature_group_count)

    def geometry(shape, in_channels):
        """Validate an input shape; -> (explicit pads, output spatial sizes)."""
        _check_input(name, n, shape, in_channels)
        pads = _pads(padding, shape[1:-1], kernel, strides, dilation)
        _check_fits(name, shape[1:-1], kernel, dilation, pads)
        return pads, _out_spatial(shape[1:-1], kernel, strides, dilation, pads)

    def use_taps(in_channels):
        """'taps' for one input channel (fails otherwise); 'auto' picks it for C = G = 1 on the CPU."""
        if algorithm == "taps" and in_channels != 1:
            fail(name, f"algorithm='taps' needs 1 input channel, got input with {in_channels}")
        one_channel = in_channels == 1 and groups == 1
        return algorithm == "taps" or (algorithm == "auto" and one_channel and jax.default_backend() == "cpu")

    def forward(x, w):
        pads, out_spatial = geometry(x.shape, w.shape[-2] * groups)
        if use_taps(x.shape[-1]):  # the taps' sums in float32 at least
            acc = accumulation_dtype(x)
            y = _taps_conv(x.astype(acc), w.astype(acc), strides, dilation, pads, out_spatial)
            return y.astype(x.dtype), pads  # (N, *O, F)
        return _conv(x, w, strides, dilation, pads, groups), pads  # (N, *O, F)

    def init(key, in_shape):
        check_rank(name, in_shape, n + 2, _LAYOUT[n])
        use_taps(in_shape[-1])
        if in_shape[-1] % groups:
            fail(name, f"in channels (={in_shape[-1]}) are not divisible by feature_group_count (={groups})")
        _, out_spatial = geometry(in_shape, in_shape[-1])
        w_shape = (*kernel, in_shape[-1] // groups, out_channels)
        params = _init_params(key, w_shape, out_channels, use_bias, w_init, b_init)
        return (in_shape[0], *out_spatial, out_channels), params

    def checked(params, x):
        """-> (x, w) promoted to one dtype, after checking params against this layer's hyperparameters."""
        check_params(name, params, {"w": (*kernel, None, out_channels), **({"b": (out_channels,)} if use_bias else {})})
        return _promoted(x, params["w"])

    def apply(params, x):
        y, _ = forward(*checked(params, x))  # (N, *O, F)
        return bias_add(y, params["b"]) if use_bias else y

    # Derivation: docs/derivations/convolution.md
    # dx = (dy dilated by s) * flip(w) with I/O swapped, rhs dilation d, pads (dk - lo, dk - hi + r);
    # dw = x * dy over N and *O (x's channels as batch), window stride d, pads (lo, hi - r); db = sum(dy).
    # (One input channel: the per-tap forms above.) Residuals: x only (w is in params).
    def vjp(params, x_in):
        x, w = checked(params, x_in)
        y, pads = forward(x, w)  # (N, *O, F)

        def pullback(dy):
            dy = dy.astype(x.dtype)
            if use_taps(x.shape[-1]):  # the taps' sums in float32 at least
                acc = accumulation_dtype(x)
                x_a, w_a, dy_a = x.astype(acc), w.astype(acc), dy.astype(acc)
                dx = _taps_input_grad(dy_a, w_a, x.shape[1:-1], strides, dilation, pads)  # (N, *S, 1)
                if any(lo or hi for lo, hi in pads):  # padded: lax.conv's dw (see the per-tap comment)
                    dw = _conv_kernel_grad(x, dy, kernel, strides, dilation, pads, groups)
                else:
                    dw = _taps_kernel_grad(x_a, dy_a, kernel, strides, dilation, pads)  # (*K, 1, F)
            else:
                dx = _conv_input_grad(dy, w, x.shape[1:-1], strides, dilation, pads, groups)  # (N, *S, C)
                dw = _conv_kernel_grad(x, dy, kernel, strides, dilation, pads, groups)  # (*K, C/G, F)
            dparams = {"w": dw.astype(params["w"].dtype)}
            if use_bias:
                dparams["b"] = bias_grad(dy).astype(params["b"].dtype)  # (F,)
            return dparams, _like(dx, x_in)

        return (bias_add(y, params["b"]) if use_bias else y), pullback

    return stateless(name, init, apply, vjp)


def Conv1D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
           feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
           b_init=initializers.zeros, algorithm: str = "auto") -> Layer:
    """1-D convolution (cross-correlation), y = x * w + b. Shapes: x (N, W, C) -> y (N, O, F);
    params {"w": (K, C/G, F), "b": (F,)}.

    kernel_size, strides, dilation: int or 1-tuple. padding: 'SAME' (O = ceil(W / s)), 'VALID' or
    ((lo, hi),). feature_group_count G splits C and F into G blocks (G = C: depthwise). Default init:
    LeCun normal for `w` (fan_in = K * C/G, as for Dense), zeros for `b`. algorithm: see Conv2D."""
    return _convolution("Conv1D", 1, out_channels, kernel_size, strides, padding, dilation,
                        feature_group_count, use_bias, w_init, b_init, algorithm)


def Conv2D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
           feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
           b_init=initializers.zeros, algorithm: str = "auto") -> Layer:
    """2-D convolution (cross-correlation), y = x * w + b. Shapes: x (N, H, W, C) -> y (N, OH, OW, F);
    params {"w": (KH, KW, C/G, F), "b": (F,)}.

    kernel_size, strides, dilation: int or pair. padding: 'SAME' (O = ceil(S / s), extra pad on the
    high side), 'VALID' or ((lo, hi), (lo, hi)). feature_group_count G splits C and F into G blocks
    (G = C: depthwise). Default init: LeCun normal for `w` (fan_in = KH * KW * C/G), zeros for `b`.
    algorithm: 'xla' runs `lax.conv_general_dilated` and its two transposes; 'taps' (one input channel,
    G = 1) sums the kernel's taps as shifted slices for the forward and both gradients (a padded one
    takes lax.conv's dw, which measured faster), faster on the CPU for C = 1 (LeNet-5's training step:
    README table); 'auto' (default) takes 'taps' for C = G = 1 on the CPU backend and 'xla' otherwise.
    Both give the same values to rounding."""
    return _convolution("Conv2D", 2, out_channels, kernel_size, strides, padding, dilation,
                        feature_group_count, use_bias, w_init, b_init, algorithm)


def Conv3D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
           feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
           b_init=initializers.zeros, algorithm: str = "auto") -> Layer:
    """3-D convolution (cross-correlation), y = x * w + b. Shapes: x (N, D, H, W, C) -> y (N, OD, OH, OW, F);
    params {"w": (KD, KH, KW, C/G, F), "b": (F,)}.

    kernel_size, strides, dilation: int or triple. padding: 'SAME' (O = ceil(S / s)), 'VALID' or three
    (lo, hi) pairs. feature_group_count G splits C and F into G blocks. Default init: LeCun normal for
    `w` (fan_in = KD * KH * KW * C/G), zeros for `b`. algorithm: as for Conv2D ('taps' sums
    KD * KH * KW shifted slices for one input channel)."""
    return _convolution("Conv3D", 3, out_channels, kernel_size, strides, padding, dilation,
                        feature_group_count, use_bias, w_init, b_init, algorithm)


# ------------------------------------------------------------------------------ transposed convolutions


def _conv_transpose(name, n, out_channels, kernel_size, strides, padding, dilation, feature_group_count,
                    use_bias, w_init, b_init) -> Layer:
    out_channels, groups, kernel, strides, dilation, padding = _checked_config(
        name, n, out_channels, kernel_size, strides, padding, dilation, feature_group_count)

    def geometry(shape, in_channels):
        """Validate an input shape; -> (pads of the adjoint convolution, output spatial sizes L)."""
        _check_input(name, n, shape, in_channels)
        spatial = shape[1:-1]
        if any(size <= 0 for size in spatial):
            fail(name, f"spatial sizes must be positive, got {tuple(spatial)}")
        full = tuple((size - 1) * s + (k - 1) * d + 1 for size, k, s, d in zip(spatial, kernel, strides, dilation))
        if padding == "SAME":
            out = tuple(size * s for size, s in zip(spatial, strides))
            return _pads("SAME", out, kernel, strides, dilation), out
        pads = _pads(padding, spatial, kernel, strides, dilation)
        out = tuple(f - lo - hi for f, (lo, hi) in zip(full, pads))
        if any(size <= 0 for size in out):
            fail(name, f"padding {pads} crops the full output {full} to nothing")
        return pads, out

    def init(key, in_shape):
        check_rank(name, in_shape, n + 2, _LAYOUT[n])
        if in_shape[-1] % groups:
            fail(name, f"in channels (={in_shape[-1]}) are not divisible by feature_group_count (={groups})")
        _, out_spatial = geometry(in_shape, in_shape[-1])
        w_shape = (*kernel, in_shape[-1], out_channels // groups)
        params = _init_params(key, w_shape, out_channels, use_bias, w_init, b_init)
        return (in_shape[0], *out_spatial, out_channels), params

    def checked(params, x):
        """-> (x, w) promoted to one dtype, after checking params against this layer's hyperparameters."""
        expected = {"w": (*kernel, None, out_channels // groups), **({"b": (out_channels,)} if use_bias else {})}
        check_params(name, params, expected)
        return _promoted(x, params["w"])

    # The adjoint convolution A maps (N, *L, F) -> (N, *S, C) with kernel w_a = w with its channel axes
    # swapped, (*K, F/G, C), and G groups; y = A^T x is A's input gradient at cotangent x.
    def apply(params, x):
        x, w = checked(params, x)
        pads, out_spatial = geometry(x.shape, w.shape[-2])
        w_a = jnp.swapaxes(w, -1, -2)  # (*K, F/G, C)
        y = _conv_input_grad(x, w_a, out_spatial, strides, dilation, pads, groups)  # (N, *L, F)
        return bias_add(y, params["b"]) if use_bias else y

    # Derivation: docs/derivations/convolution.md
    # y = A^T x: dx = A dy = conv(dy, w_a); dw_a = A's kernel gradient at input dy and output cotangent
    # x (then swapped back); db = sum(dy). Residuals: x only (w is in params).
    def vjp(params, x_in):
        y = apply(params, x_in)
        x, w = checked(params, x_in)
        pads, _ = geometry(x.shape, w.shape[-2])
        w_a = jnp.swapaxes(w, -1, -2)  # (*K, F/G, C)

        def pullback(dy):
            dy = dy.astype(x.dtype)
            dx = _conv(dy, w_a, strides, dilation, pads, groups)  # (N, *S, C)
            dw_a = _conv_kernel_grad(dy, x, kernel, strides, dilation, pads, groups)  # (*K, F/G, C)
            dparams = {"w": jnp.swapaxes(dw_a, -1, -2).astype(params["w"].dtype)}  # (*K, C, F/G)
            if use_bias:
                dparams["b"] = bias_grad(dy).astype(params["b"].dtype)  # (F,)
            return dparams, _like(dx, x_in)

        return y, pullback

    return stateless(name, init, apply, vjp)


def ConvTranspose1D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
                    feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
                    b_init=initializers.zeros) -> Layer:
    """1-D transposed convolution, the transpose of Conv1D (geometry, groups and init as ConvTranspose2D).

    Shapes: x (N, W, C) -> y (N, L, F); params {"w": (K, C, F/G), "b": (F,)}; L = (W-1)s + dk + 1 for
    'VALID', W*s for 'SAME', (W-1)s + dk + 1 - lo - hi for ((lo, hi),)."""
    return _conv_transpose("ConvTranspose1D", 1, out_channels, kernel_size, strides, padding, dilation,
                           feature_group_count, use_bias, w_init, b_init)


def ConvTranspose2D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
                    feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
                    b_init=initializers.zeros) -> Layer:
    """Transposed convolution (decoders' "deconvolution"): each input pixel stamps the kernel, s apart.

    y[n, i*s + j*d - lo, g*F/G + f] += x[n, i, c] w[j, c, f] per axis, for c in group g = c // (C/G), kept
    for positions 0 <= p < L: L = (H-1)s + dk + 1 for 'VALID' (lo = 0), H*s for 'SAME' (lo = max(dk + 1 -
    s, 0) // 2), (H-1)s + dk + 1 - lo - hi for explicit ((lo, hi), (lo, hi)) (a crop). It is exactly the
    transpose (gradient in x) of Conv2D with the same padding, strides, dilation and groups on an input
    of size L, whose kernel is w with its last two axes swapped. Shapes: x (N, H, W, C) -> y (N, LH, LW, F);
    params {"w": (KH, KW, C, F/G), "b": (F,)} (PyTorch's split: all C inputs, F/G outputs per group).
    Default init: LeCun normal for `w` (JAX's fans of that shape: fan_in = KH * KW * C), zeros for `b`."""
    return _conv_transpose("ConvTranspose2D", 2, out_channels, kernel_size, strides, padding, dilation,
                           feature_group_count, use_bias, w_init, b_init)


def ConvTranspose3D(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1,
                    feature_group_count: int = 1, use_bias: bool = True, w_init=initializers.lecun_normal,
                    b_init=initializers.zeros) -> Layer:
    """3-D transposed convolution, the transpose of Conv3D (geometry, groups and init as ConvTranspose2D).

    Shapes: x (N, D, H, W, C) -> y (N, LD, LH, LW, F); params {"w": (KD, KH, KW, C, F/G), "b": (F,)};
    per axis L = (S-1)s + dk + 1 for 'VALID', S*s for 'SAME', (S-1)s + dk + 1 - lo - hi for (lo, hi)."""
    return _conv_transpose("ConvTranspose3D", 3, out_channels, kernel_size, strides, padding, dilation,
                           feature_group_count, use_bias, w_init, b_init)
