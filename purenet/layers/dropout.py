"""Dropout: zero each unit with probability `rate` in training, identity in eval.

`rate` is the probability of DROPPING a unit (not stax's keep probability). Kept units are scaled by
1 / (1 - rate) ("inverted" dropout), so eval needs no rescaling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purenet._checks import as_float, check_range, fail
from purenet.core import Layer, positionwise


def Dropout(rate: float) -> Layer:
    """y = x * keep / (1 - rate) with keep ~ Bernoulli(1 - rate) when `train`, else y = x.

    Shapes: any -> same (integer inputs promoted to float32). No params, no state. `train=True` with
    rate > 0 needs a PRNG `key`; the same key gives the same mask (the registry relies on that). rate 0
    is the identity, key or not.
    Decoding is inference: its step is the identity."""
    rate = check_range("Dropout", "rate", rate, lambda v: 0 <= v < 1, "a number in [0, 1)",
                       what="rate (the probability of dropping a unit)")
    scale = 1.0 / (1.0 - rate)

    def init(key, in_shape):
        del key
        return tuple(in_shape), {}, {}

    def keep_mask(key, x):
        if key is None:
            fail("Dropout", "train=True needs a PRNG key, got key=None")
        return jax.random.bernoulli(key, 1.0 - rate, x.shape)  # (x.shape) bool

    def apply(params, state, x, *, key=None, train=False):
        del params
        x = as_float(x)
        if not train or rate == 0:
            return x, state
        keep = keep_mask(key, x)
        return jnp.where(keep, x * scale, 0), state  # (x.shape)

    # dx = dy * keep / (1 - rate), eval: dx = dy.  Residuals: the boolean mask (1 byte a unit), kept
    # rather than recomputed from the key so the backward pass draws no random numbers.
    def vjp(params, state, x, *, key=None, train=False):
        del params
        x = as_float(x)
        if not train or rate == 0:
            return x, state, lambda dy: ({}, dy)
        keep = keep_mask(key, x)

        def pullback(dy):
            return {}, jnp.where(keep, dy * scale, 0)  # (x.shape)

        return jnp.where(keep, x * scale, 0), state, pullback

    return Layer(init, apply, vjp, "Dropout", positionwise(lambda params, x: x))
