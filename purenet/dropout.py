"""Dropout: zero each unit with probability `rate` in training, identity in eval.

`rate` is the probability of DROPPING a unit (not stax's keep probability). Kept units are scaled by
1 / (1 - rate) ("inverted" dropout), so eval needs no rescaling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purenet.core import Layer, fail


def Dropout(rate: float) -> Layer:
    """y = x * keep / (1 - rate) with keep ~ Bernoulli(1 - rate) when `train`, else y = x.

    Shapes: any -> same. No params, no state. `train=True` needs a PRNG `key`; the same key gives the
    same mask (the registry relies on that)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 <= rate < 1):
        fail("Dropout",
             f"rate (the probability of dropping a unit) must be a number in [0, 1), got rate={rate!r}")
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
        if not train:
            return x, state
        keep = keep_mask(key, x)
        return jnp.where(keep, x * scale, 0), state  # (x.shape)

    # dx = dy * keep / (1 - rate), eval: dx = dy.  Residuals: the boolean mask (1 byte a unit), kept
    # rather than recomputed from the key so the backward pass draws no random numbers.
    def vjp(params, state, x, *, key=None, train=False):
        del params
        if not train:
            return x, state, lambda dy: ({}, dy)
        keep = keep_mask(key, x)

        def pullback(dy):
            return {}, jnp.where(keep, dy * scale, 0)  # (x.shape)

        return jnp.where(keep, x * scale, 0), state, pullback

    return Layer(init, apply, vjp, "Dropout")
