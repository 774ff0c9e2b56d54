"""Dense (fully connected) layer.

Dimension letters: N batch (any leading dims), I in features, O out features.
"""

from __future__ import annotations

import jax.numpy as jnp

from purenet import initializers
from purenet._checks import as_float, check_bool, check_params, check_positive, fail
from purenet.core import Layer, positionwise, stateless
from purenet.ops import affine, affine_pullback


def Dense(out_features: int, *, use_bias: bool = True, w_init=initializers.lecun_normal,
          b_init=initializers.zeros) -> Layer:
    """y = x @ w + b. Shapes: x (N..., I) -> y (N..., O); params {"w": (I, O), "b": (O,)}. An integer
    input is promoted (to w's dtype); dx has x's dtype when x is floating-point.

    Default init: LeCun normal for `w`, zeros for `b`. Decodes position by position.

    Examples:
        >>> import jax
        >>> out_shape, params, state = Dense(3).init(jax.random.PRNGKey(0), (-1, 5))
        >>> out_shape, params["w"].shape, params["b"].shape, state
        ((-1, 3), (5, 3), (3,), {})
    """
    (out_features,) = check_positive("Dense", "out_features", out_features)
    check_bool("Dense", "use_bias", use_bias)

    def init(key, in_shape):
        if len(in_shape) < 2:
            fail("Dense", f"expected input of rank >= 2 (N, ..., I), got shape {in_shape}")
        params = {"w": w_init(key, (in_shape[-1], out_features), jnp.float32)}
        if use_bias:
            params["b"] = b_init(key, (out_features,), jnp.float32)
        return (*in_shape[:-1], out_features), params

    def apply(params, x):
        check_params("Dense", params, {"w": (None, out_features), **({"b": (out_features,)} if use_bias else {})})
        in_features = params["w"].shape[0]
        if x.ndim < 2 or x.shape[-1] != in_features:
            fail("Dense", f"expected input shape (N, ..., {in_features}), got {tuple(x.shape)}")
        return affine(as_float(x, params["w"]), params)  # (N..., O)

    # dx = dy @ w.T;  dw = x.T @ dy (summed over every leading dim);  db = sum(dy) over leading dims.
    # Residuals: x only (w is in params).
    def vjp(params, x):
        y = apply(params, x)

        def pullback(dy):
            dparams, dx = affine_pullback(dy, as_float(x, params["w"]), params)  # {"w": (I, O), "b": (O,)}, (N..., I)
            return dparams, dx.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else dx

        return y, pullback

    return stateless("Dense", init, apply, vjp, decode=positionwise(apply))
