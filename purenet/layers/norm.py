"""Normalization layers: BatchNorm (per channel, over the batch), LayerNorm and RMSNorm (per example, over
features), L2Normalize (unit vectors).

Dimension letters: N batch, ... any spatial dims (W or H, W), C channels (always last).
BatchNorm and LayerNorm keep x, mean and rstd = 1/sqrt(var + eps) as residuals (as llm.c does), not the
normalized xhat: xhat = (x - mean) * rstd is recomputed in the pullback. Variances are biased (divided by
the count) and computed in two passes, mean((x - mean)^2), which loses no precision when |mean| >> std.
RMSNorm keeps x and rstd = 1/sqrt(mean(x^2) + eps) and recomputes xhat = x * rstd.
Integer and boolean inputs are normalized as float32 (`as_float`). Precision: a bfloat16 or float16 input
is normalized in float32 (`accumulation_dtype`: statistics, xhat, gamma and beta, and the pullback's means),
and y, dx and dparams are cast back to the dtypes of x and params; running statistics keep their own dtype.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from purenet._checks import as_float, check_bool, check_range, fail
from purenet._sharding import axis_bound
from purenet.core import Layer, positionwise, stateless
from purenet.ops import accumulation_dtype, scale_shift, scale_shift_pullback


def _check_options(layer: str, eps, use_scale, use_bias) -> float:
    check_bool(layer, "use_scale", use_scale)
    check_bool(layer, "use_bias", use_bias)
    return check_range(layer, "eps", eps, lambda v: 0 < v < math.inf, "a positive finite number")


def _check_in_shape(layer: str, in_shape) -> int:
    """Fail unless in_shape is (N, ..., C) with a known C > 0; -> C."""
    if len(in_shape) < 2:
        fail(layer, f"expected input of rank >= 2 (N, ..., C), got shape {tuple(in_shape)}")
    channels = in_shape[-1]
    if not isinstance(channels, int) or channels <= 0:
        fail(layer, f"the channel dimension in_shape[-1] must be a positive int, got shape {tuple(in_shape)}")
    return channels


def _check_input(layer: str, channels: int, x) -> None:
    if x.ndim < 2 or x.shape[-1] != channels:
        fail(layer, f"expected input shape (N, ..., {channels}), got {tuple(x.shape)}")


def _affine_params(channels: int, use_scale: bool, use_bias: bool) -> dict:
    params = {}
    if use_scale:
        params["gamma"] = jnp.ones((channels,), jnp.float32)
    if use_bias:
        params["beta"] = jnp.zeros((channels,), jnp.float32)
    return params


def _per_channel(v, ndim: int):
    return v.reshape((1,) * (ndim - 1) + (-1,))  # (1, ..., C)


def _like(dparams: dict, params: dict) -> dict:
    """The gradients in their params' dtypes (computed in float32 for a bfloat16 input)."""
    return {k: d.astype(params[k].dtype) for k, d in dparams.items()}


def BatchNorm(*, momentum: float = 0.9, eps: float = 1e-5, axis_name=None, use_scale: bool = True,
              use_bias: bool = True, unbiased_running_var: bool = False) -> Layer:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel, over all axes but the last.

    Shapes: x (N, ..., C) -> y (N, ..., C); params {"gamma": (C,), "beta": (C,)}; state {"mean": (C,),
    "var": (C,)} (running statistics, init zeros / ones in float32, kept in their own dtype: `init_model`
    casts them with the params). `train=True` uses the batch statistics and returns new = momentum * old +
    (1 - momentum) * batch, the batch variance biased (PyTorch's momentum is 1 - this one; README), or
    unbiased (times count / (count - 1)) in the running variance with `unbiased_running_var`, as PyTorch; it
    needs at least 2 values per channel (N times the spatial sizes), else fails while tracing. Eval uses
    the running statistics. With `axis_name`, the batch statistics (and the matching means in the backward
    pass) are `lax.pmean`-ed over that named axis (equal shard sizes assumed) where it is bound (inside
    `jax.shard_map`, `make_train_step(mesh=...)`, `jax.vmap(axis_name=)`); where it is not (one device, no
    mesh) the layer is a plain BatchNorm over its own batch, as PyTorch's SyncBatchNorm outside a process
    group: one model definition serves one device and many. (A mesh axis of another name is not caught:
    give the layer the mesh's axis name.)"""
    momentum = check_range("BatchNorm", "momentum", momentum, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    eps = _check_options("BatchNorm", eps, use_scale, use_bias)
    check_bool("BatchNorm", "unbiased_running_var", unbiased_running_var)

    def init(key, in_shape):
        del key
        channels = _check_in_shape("BatchNorm", in_shape)
        state = {"mean": jnp.zeros((channels,), jnp.float32), "var": jnp.ones((channels,), jnp.float32)}
        return tuple(in_shape), _affine_params(channels, use_scale, use_bias), state

    def batch_mean(v, synced):
        m = jnp.mean(v, axis=tuple(range(v.ndim - 1)), keepdims=True)  # (1, ..., C)
        return lax.pmean(m, axis_name) if synced else m

    def normalize(state, x, train, synced):
        """-> (new_state, mean, rstd), mean and rstd shaped (1, ..., C)."""
        _check_input("BatchNorm", state["mean"].shape[0], x)
        count = math.prod(x.shape[:-1]) * (lax.axis_size(axis_name) if synced and train else 1)
        if train and count < 2:
            fail("BatchNorm", f"train=True needs at least 2 values per channel to take batch statistics over, "
                              f"got input of shape {tuple(x.shape)} ({count} per channel): use a batch of 2 or "
                              f"more (fit drops a last batch of one example), or train=False")
        if not train:  # x is in accumulation_dtype: at least float32
            mean = _per_channel(state["mean"], x.ndim).astype(x.dtype)
            rstd = lax.rsqrt(_per_channel(state["var"], x.ndim).astype(x.dtype) + eps)
            return state, mean, rstd
        mean = batch_mean(x, synced)
        var = batch_mean(jnp.square(x - mean), synced)

        def update(old, batch):
            return (momentum * old + (1 - momentum) * batch.reshape(-1)).astype(old.dtype)

        running_var = var * (count / (count - 1)) if unbiased_running_var else var  # normalizing takes var
        new_state = {"mean": update(state["mean"], mean), "var": update(state["var"], running_var)}
        return new_state, mean, lax.rsqrt(var + eps)

    def apply(params, state, x, *, key=None, train=False):
        del key
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        new_state, mean, rstd = normalize(state, z, train, axis_name is not None and axis_bound(axis_name))
        return scale_shift((z - mean) * rstd, params).astype(x.dtype), new_state

    # Derivation: docs/derivations/batchnorm.md
    # train: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means as in the forward;
    # eval:  dx = rstd * dxhat (running statistics are constants).
    # Residuals: x, mean and rstd (1, ..., C); xhat is recomputed.
    def vjp(params, state, x, *, key=None, train=False):
        del key
        x = as_float(x)
        synced = axis_name is not None and axis_bound(axis_name)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        new_state, mean, rstd = normalize(state, z, train, synced)
        y = scale_shift((z - mean) * rstd, params).astype(x.dtype)  # (N, ..., C)

        def pullback(dy):
            xhat = (z - mean) * rstd  # (N, ..., C)
            dparams, dxhat = scale_shift_pullback(dy.astype(z.dtype), xhat, params)
            if not train:
                return _like(dparams, params), (rstd * dxhat).astype(x.dtype)
            dx = rstd * (dxhat - batch_mean(dxhat, synced) - xhat * batch_mean(dxhat * xhat, synced))
            return _like(dparams, params), dx.astype(x.dtype)

        return y, new_state, pullback

    return Layer(init, apply, vjp, "BatchNorm")


def LayerNorm(*, eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True) -> Layer:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, statistics over the last axis of each example.

    Shapes: x (N, ..., C) -> y (N, ..., C); params {"gamma": (C,), "beta": (C,)}. No state: train and
    eval are the same. Decodes position by position."""
    eps = _check_options("LayerNorm", eps, use_scale, use_bias)

    def init(key, in_shape):
        del key
        channels = _check_in_shape("LayerNorm", in_shape)
        return tuple(in_shape), _affine_params(channels, use_scale, use_bias)

    def feature_mean(v):
        return jnp.mean(v, axis=-1, keepdims=True)  # (N, ..., 1)

    def normalize(params, x):
        """-> (mean, rstd), both shaped (N, ..., 1)."""
        channels = next(iter(params.values())).shape[0] if params else x.shape[-1]
        _check_input("LayerNorm", channels, x)
        mean = feature_mean(x)
        return mean, lax.rsqrt(feature_mean(jnp.square(x - mean)) + eps)

    def apply(params, x):
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        mean, rstd = normalize(params, z)
        return scale_shift((z - mean) * rstd, params).astype(x.dtype)

    # Derivation: docs/derivations/layernorm.md
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over the last axis.
    # Residuals: x, mean and rstd (N, ..., 1); xhat is recomputed.
    def vjp(params, x):
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        mean, rstd = normalize(params, z)
        y = scale_shift((z - mean) * rstd, params).astype(x.dtype)  # (N, ..., C)

        def pullback(dy):
            xhat = (z - mean) * rstd  # (N, ..., C)
            dparams, dxhat = scale_shift_pullback(dy.astype(z.dtype), xhat, params)
            dx = rstd * (dxhat - feature_mean(dxhat) - xhat * feature_mean(dxhat * xhat))
            return _like(dparams, params), dx.astype(x.dtype)

        return y, pullback

    return stateless("LayerNorm", init, apply, vjp, decode=positionwise(apply))


def RMSNorm(*, eps: float = 1e-6, use_scale: bool = True) -> Layer:
    """y = gamma * x / sqrt(mean(x^2) + eps), the mean over the last axis of each example (no centering,
    no bias). Shapes: x (N, ..., C) -> y (N, ..., C); params {"gamma": (C,)}. No state: train and eval
    are the same. Decodes position by position."""
    eps = _check_options("RMSNorm", eps, use_scale, False)

    def init(key, in_shape):
        del key
        channels = _check_in_shape("RMSNorm", in_shape)
        return tuple(in_shape), _affine_params(channels, use_scale, False)

    def normalize(params, x):
        """-> rstd, shaped (N, ..., 1)."""
        _check_input("RMSNorm", params["gamma"].shape[0] if use_scale else x.shape[-1], x)
        return lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)

    def apply(params, x):
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        return scale_shift(z * normalize(params, z), params).astype(x.dtype)

    # Derivation: docs/derivations/rmsnorm.md
    # dx = rstd * (dxhat - xhat * mean(dxhat * xhat)), mean over the last axis, xhat = x * rstd.
    # Residuals: x and rstd (N, ..., 1); xhat is recomputed.
    def vjp(params, x):
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        rstd = normalize(params, z)
        y = scale_shift(z * rstd, params).astype(x.dtype)  # (N, ..., C)

        def pullback(dy):
            xhat = z * rstd  # (N, ..., C)
            dparams, dxhat = scale_shift_pullback(dy.astype(z.dtype), xhat, params)
            dx = rstd * (dxhat - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
            return _like(dparams, params), dx.astype(x.dtype)

        return y, pullback

    return stateless("RMSNorm", init, apply, vjp, decode=positionwise(apply))


def L2Normalize(*, eps: float = 1e-12) -> Layer:
    """y = x / sqrt(sum(x^2) + eps), the sum over the last axis of each example: unit vectors, whose dot
    products are cosine similarities (CLIP's embeddings). Shapes: x (N, ..., C) -> y (N, ..., C); no
    params. Decodes position by position."""
    eps = check_range("L2Normalize", "eps", eps, lambda v: 0 < v < math.inf, "a positive finite number")

    def init(key, in_shape):
        del key
        _check_in_shape("L2Normalize", in_shape)
        return tuple(in_shape), {}

    def rnorm(x):
        return lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)  # (N, ..., 1)

    def apply(params, x):
        del params
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        return (z * rnorm(z)).astype(x.dtype)

    # dx = r (dy - y sum(dy * y)), r = 1/sqrt(sum(x^2) + eps), sums over the last axis (exact with eps:
    # dr/dx = -r^3 x). Residuals: y and r (N, ..., 1).
    def vjp(params, x):
        del params
        x = as_float(x)
        z = x.astype(accumulation_dtype(x))  # (N, ..., C)
        r = rnorm(z)
        y = z * r  # (N, ..., C)

        def pullback(dy):
            dy = dy.astype(y.dtype)
            return {}, (r * (dy - y * jnp.sum(dy * y, axis=-1, keepdims=True))).astype(x.dtype)

        return y.astype(x.dtype), pullback

    return stateless("L2Normalize", init, apply, vjp, decode=positionwise(apply))
