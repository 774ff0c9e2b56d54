"""Every registry row: shapes, pullback vs jax.vjp (float64, float32), adjoint identity, jit == eager."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import CASES

from purenet.check import check_dot_product, check_layer, compare, random_input, tolerance
from purenet.core import init_model

DTYPES = [jnp.float64, jnp.float32]


def _x(case, key, dtype):
    if case.make_x is not None:
        return case.make_x(key, case.in_shape)
    return random_input(key, case.in_shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pullback_matches_jax(case, dtype, key):
    layer = case.build()
    x = _x(case, jax.random.fold_in(key, 1), dtype)
    report = check_layer(layer, case.in_shape, key=key, dtype=dtype, x=x, train=case.train)
    assert all(e.max_rel <= tolerance(dtype) for e in report.values())


@pytest.mark.parametrize("case", [c for c in CASES if c.make_x is None], ids=lambda c: c.id)
def test_dot_product_identity(case, key):
    check_dot_product(case.build(), case.in_shape, key=key, dtype=jnp.float64, train=case.train)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_jit_equals_eager(case, key):
    layer = case.build()
    k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
    _, params, state = init_model(layer, k_init, case.in_shape, dtype=jnp.float64)
    x = _x(case, k_x, jnp.float64)

    def step(params, state, x, key):
        y, new_state, pullback = layer.vjp(params, state, x, key=key, train=case.train)
        dy = jax.random.normal(k_dy, y.shape, y.dtype)
        return y, new_state, pullback(dy)

    eager = step(params, state, x, k_layer)
    jitted = jax.jit(step)(params, state, x, k_layer)
    compare(jitted, eager, rtol=1e-12, what=case.id)
    y_apply, _ = jax.jit(lambda p, s, x, k: layer.apply(p, s, x, key=k, train=case.train))(params, state, x, k_layer)
    np.testing.assert_allclose(y_apply, eager[0], rtol=1e-12, atol=1e-12)
