"""Token layers for Transformers on non-text inputs: a learned class token prepended to every sequence
(`ClassToken`, as ViT and BERT's [CLS]) and the read-out of one position (`TokenAt`).

Dimension letters: N batch, T positions, F features. Neither decodes step by step (a class token sits
before the sequence; a read-out drops the time axis). Integer inputs are promoted to float (`as_float`).
"""

from __future__ import annotations

import jax.numpy as jnp

from purenet import initializers
from purenet._checks import as_float, fail, is_int
from purenet.core import Layer, stateless
from purenet.layers.positional import _check_sequence


def ClassToken(*, w_init=initializers.normal(0.02)) -> Layer:
    """y = [token; x]: one learned vector prepended to every sequence along T.

    Shapes: x (N, T, F) -> y (N, T + 1, F); params {"token": (F,)}. Default init: normal with stddev
    0.02. Positions added afterwards (`LearnedPositions(T + 1)`) give the token its own."""

    def init(key, in_shape):
        steps, features = _check_sequence("ClassToken", in_shape)
        return (in_shape[0], steps + 1, features), {"token": w_init(key, (features,), jnp.float32)}

    def apply(params, x):
        x = as_float(x)
        if x.ndim != 3 or x.shape[-1] != params["token"].shape[0]:
            fail("ClassToken", f"expected input (N, T, {params['token'].shape[0]}), got shape {tuple(x.shape)}")
        token = jnp.broadcast_to(params["token"].astype(x.dtype), (x.shape[0], 1, x.shape[2]))  # (N, 1, F)
        return jnp.concatenate([token, x], axis=1)  # (N, T + 1, F)

    # dtoken = sum over N of dy[:, 0];  dx = dy[:, 1:].  Residuals: none.
    def vjp(params, x):
        def pullback(dy):
            return {"token": jnp.sum(dy[:, 0], axis=0).astype(params["token"].dtype)}, dy[:, 1:]  # (F,), (N, T, F)

        return apply(params, x), pullback

    return stateless("ClassToken", init, apply, vjp)


def TokenAt(index: int = 0) -> Layer:
    """y = x[:, index]: one position of every sequence (index 0 reads a `ClassToken`; negative indices
    count from the end). Shapes: x (N, T, F) -> y (N, F); no params."""
    if not is_int(index):
        fail("TokenAt", f"index must be an int, got index={index!r}")
    index = int(index)

    def position(steps):
        if not -steps <= index < steps:
            fail("TokenAt", f"index (={index}) out of range for T = {steps} positions")
        return index % steps

    def init(key, in_shape):
        del key
        steps, features = _check_sequence("TokenAt", in_shape)
        position(steps)
        return (in_shape[0], features), {}

    def apply(params, x):
        del params
        if x.ndim != 3:
            fail("TokenAt", f"expected input of rank 3 (N, T, F), got shape {tuple(x.shape)}")
        return as_float(x)[:, position(x.shape[1])]  # (N, F)

    # dx = dy at position `index`, zeros elsewhere.  Residuals: none (x's shape and dtype only).
    def vjp(params, x):
        y = apply(params, x)

        def pullback(dy):
            return {}, jnp.zeros(x.shape, y.dtype).at[:, position(x.shape[1])].set(dy)  # (N, T, F)

        return y, pullback

    return stateless("TokenAt", init, apply, vjp)
