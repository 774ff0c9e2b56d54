"""Embedding: a lookup table from integer token ids to vectors.

Dimension letters: N batch, T tokens (optional), V vocabulary size, F features.

Ids outside [0, V) cannot be rejected under `jit` (their values are not known while tracing), so they are
defined instead: they look up a row of NaN (so the mistake shows in the loss) and add nothing to the
gradient. Negative ids are not wrapped around numpy-style; -1 is out of range like V is.
"""

from __future__ import annotations

import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_positive, fail
from purenet.core import Layer, positionwise, stateless
from purenet.ops import lookup, lookup_dw


def Embedding(vocab_size: int, features: int, *, w_init=initializers.normal(1.0)) -> Layer:
    """y = w[ids]. Shapes: ids (N,) or (N, T) integers -> y (N, F) or (N, T, F); params {"w": (V, F)}.

    Default init: standard normal. `dx` is None (ids have no cotangent). Decodes position by position
    (ids (N,) -> (N, F))."""
    (vocab_size,) = check_positive("Embedding", "vocab_size", vocab_size)
    (features,) = check_positive("Embedding", "features", features)

    def init(key, in_shape):
        if len(in_shape) not in (1, 2):
            fail("Embedding", f"expected ids of rank 1 (N,) or 2 (N, T), got shape {tuple(in_shape)}")
        return (*in_shape, features), {"w": w_init(key, (vocab_size, features), jnp.float32)}

    def check(params, ids):
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            fail("Embedding", f"expected integer token ids, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            fail("Embedding", f"expected ids of rank 1 (N,) or 2 (N, T), got shape {tuple(ids.shape)}")
        if params["w"].shape != (vocab_size, features):
            fail("Embedding", f"expected w of shape ({vocab_size}, {features}), got {params['w'].shape}")

    def apply(params, ids):
        check(params, ids)
        return lookup(params["w"], ids)  # (N, T, F)

    # dw[v] = sum of dy over every position whose id is v (a row used twice gets both cotangents).
    # Residuals: the ids only.
    def vjp(params, ids):
        y = apply(params, ids)

        def pullback(dy):
            return {"w": lookup_dw(ids, dy.astype(params["w"].dtype), vocab_size)}, None  # (V, F)

        return y, pullback

    return stateless("Embedding", init, apply, vjp, decode=positionwise(apply))
