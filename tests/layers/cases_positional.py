"""Registry rows: rotary (through a small test Layer), LearnedPositions, SinusoidalPositions."""

import jax.numpy as jnp

from purenet.core import Decode, stateless
from purenet.layers.positional import LearnedPositions, SinusoidalPositions, rotary, rotary_pullback
from tests.registry import Case


def Rotary(*, base=10000.0):
    """`rotary` as a registry Layer: x (N, T, H, D) -> rotary(x, arange(T)). Its decode step rotates
    x_t (N, H, D) as x (N, 1, H, D) with positions (1,) = [pos], the form attention decodes with."""

    def init(key, in_shape):
        del key
        return tuple(in_shape), {}

    def apply(params, x):
        del params
        return rotary(x, jnp.arange(x.shape[1]), base=base)

    def vjp(params, x):
        return apply(params, x), lambda dy: ({}, rotary_pullback(dy, jnp.arange(dy.shape[1]), base=base))

    def step(params, cache, x_t, *, pos):
        del params
        return rotary(x_t[:, None], jnp.reshape(pos, (1,)), base=base)[:, 0], cache

    return stateless("Rotary", init, apply, vjp, decode=Decode(lambda params, batch, max_len: {}, step))


CASES = [
    Case("rotary-t5", Rotary, {"base": 100.0}, (2, 5, 2, 4)),
    Case("learned-positions-t5", LearnedPositions, {}, (2, 5, 3), args=(7,)),
    Case("sinusoidal-positions-odd-f", SinusoidalPositions, {}, (2, 4, 5)),
]
