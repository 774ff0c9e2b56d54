"""Params for the zoo's tests without compiling `init`: run eagerly, `init` compiles each of its random
draws as a program of its own (about 0.1 s apiece, paid again in every module: conftest.py clears the
caches), more than the checks it serves cost. `init` is only traced here (`traced_init`) for the tree,
the shapes and the output shape; numpy draws the values."""

import jax
import numpy as np

from tests.helpers import traced_init


def random_init(model, in_shape, dtype=np.float32, *, scale: float = 0.5, seed: int = 0) -> tuple:
    """-> (out_shape, params, state) of `init_model(model, key, in_shape, dtype=dtype)`'s form: every param
    drawn N(0, scale^2) by numpy; state's floating-point leaves are running statistics (BatchNorm's):
    variances ("var") 1, the others 0; integer state 0."""
    out_shape, params, state = traced_init(model, in_shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(dtype), params)

    def statistic(path, s):
        if not np.issubdtype(s.dtype, np.floating):
            return np.zeros(s.shape, s.dtype)
        return np.full(s.shape, 1.0 if jax.tree_util.keystr(path).endswith("['var']") else 0.0, dtype)

    return out_shape, params, jax.tree_util.tree_map_with_path(statistic, state)


def fan_in_init(model, in_shape, dtype=np.float32, *, seed: int = 0, bias_scale: float = 0.0) -> tuple:
    """-> (out_shape, params, state) like `random_init`, drawn at the scales of the zoo's initializers,
    for a model that must compute something (train, or decode tokens that depend on the source): every
    LayerNorm gamma 1; other 1-D leaves (biases, beta) N(0, bias_scale^2), 0 by default; embedding tables
    ("embed" in the path) N(0, 1 / F); other kernels LeCun's N(0, 1 / fan_in), fan_in = the product of
    all axes but the last. For stateless models."""
    out_shape, shapes, state = traced_init(model, in_shape)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['gamma']"):
            return np.ones(s.shape, dtype)
        if len(s.shape) == 1:
            return (bias_scale * rng.standard_normal(s.shape)).astype(dtype) if bias_scale else np.zeros(s.shape, dtype)
        fan_in = s.shape[-1] if "embed" in name else int(np.prod(s.shape[:-1]))
        return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(dtype)

    return out_shape, jax.tree_util.tree_map_with_path(draw, shapes), state
