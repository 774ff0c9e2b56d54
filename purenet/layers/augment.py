"""Data augmentation as a train-only layer (Keras's RandomTranslation): it draws from the layer's `key`
when `train=True` and is the identity in eval, so `fit` needs no hook and a seed fixes the draws.

Dimension letters: N batch, H, W spatial, C channels. Integer inputs are promoted to float (`as_float`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from purenet._checks import as_float, check_int, fail
from purenet.core import Layer


def RandomShift(max_shift: int) -> Layer:
    """Translate every image by its own whole-pixel offsets (dy, dx), each uniform in [-max_shift,
    max_shift], filling with zeros: y[n, i, j] = x[n, i - dy, j - dx] when `train`, else y = x.

    Shapes: x (N, H, W, C) -> y (N, H, W, C); no params, no state. `train=True` needs a PRNG `key`.
    max_shift 0 is the identity."""
    s = check_int("RandomShift", "max_shift", max_shift, 0)

    def init(key, in_shape):
        del key
        if len(in_shape) != 4:
            fail("RandomShift", f"expected input of rank 4 (N, H, W, C), got shape {tuple(in_shape)}")
        return tuple(in_shape), {}, {}

    def corners(key, x):
        """-> the window of each example in x padded by s: its top-left corner (s - dy, s - dx), (N, 2)."""
        if x.ndim != 4:
            fail("RandomShift", f"expected input of rank 4 (N, H, W, C), got shape {tuple(x.shape)}")
        if key is None:
            fail("RandomShift", "train=True needs a PRNG key, got key=None")
        return jax.random.randint(key, (x.shape[0], 2), 0, 2 * s + 1)  # (N, 2) int32

    def shifted(x, corner):
        padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))  # (N, H + 2s, W + 2s, C)
        window = lambda p, c: lax.dynamic_slice(p, (c[0], c[1], 0), x.shape[1:])  # noqa: E731
        return jax.vmap(window)(padded, corner)  # (N, H, W, C)

    def apply(params, state, x, *, key=None, train=False):
        del params
        x = as_float(x)
        if not train or s == 0:
            return x, state
        return shifted(x, corners(key, x)), state

    # dx = dy shifted back by (-dy, -dx), zero-filled: each window of dy written into zeros, cropped.
    # Residuals: the corners (N, 2), not the mask of valid pixels.
    def vjp(params, state, x, *, key=None, train=False):
        del params
        x = as_float(x)
        if not train or s == 0:
            return x, state, lambda dy: ({}, dy)
        corner = corners(key, x)

        def pullback(dy):
            zeros = jnp.zeros((x.shape[1] + 2 * s, x.shape[2] + 2 * s, x.shape[3]), dy.dtype)  # (H+2s, W+2s, C)
            put = lambda d, c: lax.dynamic_update_slice(zeros, d, (c[0], c[1], 0))  # noqa: E731
            return {}, jax.vmap(put)(dy, corner)[:, s:s + x.shape[1], s:s + x.shape[2]]  # (N, H, W, C)

        return shifted(x, corner), state, pullback

    return Layer(init, apply, vjp, "RandomShift")
