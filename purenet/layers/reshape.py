"""Reshaping layers: Flatten and Reshape. The batch axis N is kept; only the rest is rearranged.

Both pullbacks reshape dy back to x's shape (None stays None: an integer input, ids, has no cotangent);
residuals: none (x's shape only).
"""

from __future__ import annotations

import math

from purenet._checks import fail, is_int
from purenet.core import Layer, stateless


def Flatten() -> Layer:
    """Collapse every non-batch axis. Shapes: x (N, d1, ..., dk) -> y (N, d1*...*dk); no params."""

    def check(shape):
        if len(shape) < 2:
            fail("Flatten", f"expected input of rank >= 2 (N, ...), got shape {tuple(shape)}")

    def init(key, in_shape):
        del key
        check(in_shape)
        return (in_shape[0], math.prod(in_shape[1:])), {}

    def apply(params, x):
        del params
        check(x.shape)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (N, prod)

    def vjp(params, x):
        y = apply(params, x)
        return y, lambda dy: ({}, None if dy is None else dy.reshape(x.shape))  # (N, d1, ..., dk)

    return stateless("Flatten", init, apply, vjp)


def Reshape(shape) -> Layer:
    """Reshape every example to `shape` (one entry may be -1, inferred). Shapes: x (N, ...) -> y (N, *shape).

    The batch axis is not part of `shape`; sizes must match: Reshape((2, -1)) maps (N, 3, 4) to (N, 2, 6)."""
    target = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    valid = all(is_int(d) and (d > 0 or d == -1) for d in target)
    if not target or not valid or target.count(-1) > 1:
        fail("Reshape", f"shape must be positive integers with at most one -1, got shape={shape!r}")

    def resolve(in_shape):
        """-> the output shape (N, *target) with -1 inferred, failing unless sizes match."""
        if len(in_shape) < 2:
            fail("Reshape", f"expected input of rank >= 2 (N, ...), got shape {tuple(in_shape)}")
        size, known = math.prod(in_shape[1:]), math.prod(d for d in target if d != -1)
        inferred = tuple(size // known if d == -1 else d for d in target)
        if size % known or math.prod(inferred) != size:
            fail("Reshape", f"cannot reshape {tuple(in_shape[1:])} ({size} elements per example) "
                            f"to shape={target}")
        return (in_shape[0], *inferred)

    def init(key, in_shape):
        del key
        return resolve(in_shape), {}

    def apply(params, x):
        del params
        return x.reshape(resolve(x.shape))  # (N, *shape)

    def vjp(params, x):
        y = apply(params, x)
        return y, lambda dy: ({}, None if dy is None else dy.reshape(x.shape))  # (N, ...)

    return stateless("Reshape", init, apply, vjp)
