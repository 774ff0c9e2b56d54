"""Weight initializers: `init(key, shape, dtype) -> array`.

These are JAX's own (`jax.nn.initializers`), re-exported under one name so every layer documents its
default and accepts any of them. Fans follow JAX's convention for kernels laid out `(..., in, out)`:
dense `(in, out)` and convolution `(*window, in / groups, out)`, the window counting into both fans.
"""

from __future__ import annotations

from jax.nn import initializers as _jinit

glorot_uniform = _jinit.glorot_uniform()
"""Glorot (Xavier) uniform: variance 2 / (fan_in + fan_out)."""
glorot_normal = _jinit.glorot_normal()
"""Glorot (Xavier) truncated normal: variance 2 / (fan_in + fan_out)."""
xavier_uniform = glorot_uniform
"""Another name of `glorot_uniform`."""
xavier_normal = glorot_normal
"""Another name of `glorot_normal`."""
he_uniform = _jinit.he_uniform()
"""He (Kaiming) uniform: variance 2 / fan_in, for ReLU networks."""
he_normal = _jinit.he_normal()
"""He (Kaiming) truncated normal: variance 2 / fan_in, for ReLU networks."""
kaiming_uniform = he_uniform
"""Another name of `he_uniform`."""
kaiming_normal = he_normal
"""Another name of `he_normal`."""
lecun_normal = _jinit.lecun_normal()
"""LeCun truncated normal: variance 1 / fan_in (Dense's and Conv's default kernel init)."""
lecun_uniform = _jinit.lecun_uniform()
"""LeCun uniform: variance 1 / fan_in."""
orthogonal = _jinit.orthogonal()
"""A random orthogonal matrix (over the last axis and the product of the others)."""
zeros = _jinit.zeros
"""All zeros (the default for biases)."""
ones = _jinit.ones
"""All ones."""


def normal(stddev: float = 1e-2):
    """Gaussian with the given standard deviation (the default for embeddings uses stddev=1)."""
    return _jinit.normal(stddev)


def uniform(scale: float = 1e-2):
    """Uniform on [0, scale)."""
    return _jinit.uniform(scale)


__all__ = [
    "glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
    "kaiming_uniform", "kaiming_normal", "lecun_normal", "lecun_uniform", "orthogonal", "zeros", "ones",
    "normal", "uniform",
]
