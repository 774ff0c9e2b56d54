"""The paired primitives: each pullback equals jax.vjp of its forward, in float64 and float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import ops
from purenet.check import check_function

DTYPES = [jnp.float64, jnp.float32]


def _normal(key, i, shape, dtype):
    return jax.random.normal(jax.random.fold_in(key, i), shape, dtype)


def _check(forward, ours, args, key, dtype, nondiff=()):
    """ours(*args, dy) == jax.vjp(forward, *args)'s pullback of a random dy (for the differentiable args),
    by the suite's rule for `dtype` (tests/README.md)."""
    y = jax.eval_shape(forward, *args)
    dy = _normal(key, 99, y.shape, dtype)

    def jax_pullback(*args_and_dy):
        _, pullback = jax.vjp(forward, *args_and_dy[:-1])
        return tuple(g for i, g in enumerate(pullback(args_and_dy[-1])) if i not in nondiff)

    check_function(ours, jax_pullback, *args, dy, what=forward.__name__)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_linear_and_bias(dtype, key):
    x, w, b = _normal(key, 0, (2, 3, 5), dtype), _normal(key, 1, (5, 4), dtype), _normal(key, 2, (4,), dtype)

    def affine(x, w, b):
        return ops.bias_add(ops.linear(x, w), b)

    _check(affine, lambda x, w, b, dy: (ops.linear_dx(dy, w), ops.linear_dw(x, dy), ops.bias_grad(dy)),
           (x, w, b), key, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name, keys", [("", ("w", "b")), ("q", ("w_q", "b_q")), ("out", ("w_out",))],
                         ids=["dense", "named", "no-bias"])
def test_affine_by_name(dtype, name, keys, key):
    x = _normal(key, 0, (2, 3, 5), dtype)
    params = {k: _normal(key, i + 1, (5, 4) if k.startswith("w") else (4,), dtype) for i, k in enumerate(keys)}

    def affine(x, params):
        return ops.affine(x, params, name)

    def ours(x, params, dy):
        dparams, dx = ops.affine_pullback(dy, x, params, name)
        assert set(dparams) == set(params)
        return dx, dparams

    _check(affine, ours, (x, params), key, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_matmul_t(dtype, key):
    a, b = _normal(key, 0, (2, 3, 5), dtype), _normal(key, 1, (4, 5), dtype)
    _check(ops.matmul_t, lambda a, b, dy: (ops.linear(dy, b), ops.linear_dw(dy, a)), (a, b), key, dtype)
    np.testing.assert_allclose(ops.matmul_t(a, b), a @ b.T, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("keys", [("gamma", "beta"), ("gamma",), ("beta",), ()])
def test_scale_shift(dtype, keys, key):
    xhat = _normal(key, 0, (3, 4, 6), dtype)
    params = {k: _normal(key, i + 1, (6,), dtype) for i, k in enumerate(keys)}

    def scale_shift(xhat, params):
        return ops.scale_shift(xhat, params)

    def ours(xhat, params, dy):
        dparams, dxhat = ops.scale_shift_pullback(dy, xhat, params)
        return dxhat, dparams

    _check(scale_shift, ours, (xhat, params), key, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_family(dtype, axis, key):
    x = 3 * _normal(key, 0, (2, 5, 4), dtype)

    def softmax(x):
        return ops.softmax(x, axis)

    def log_softmax(x):
        return ops.log_softmax(x, axis)

    def logsumexp(x):
        return ops.logsumexp(x, axis)

    _check(softmax, lambda x, dy: (ops.softmax_pullback(ops.softmax(x, axis), dy, axis),), (x,), key, dtype)
    _check(log_softmax, lambda x, dy: (ops.log_softmax_pullback(ops.log_softmax(x, axis), dy, axis),), (x,),
           key, dtype)
    _check(logsumexp, lambda x, dy: (ops.logsumexp_pullback(x, ops.logsumexp(x, axis), dy),), (x,), key, dtype)
    check_function(lambda x: ops.logsumexp(x, axis), lambda x: jax.nn.logsumexp(x, axis, keepdims=True), x,
                   what="logsumexp")


def test_logsumexp_is_stable_for_large_logits():
    x = jnp.array([[1000.0, 1000.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(ops.logsumexp(x), [[1000 + np.log(2)], [-1000 + np.log(2)]])
    assert np.all(np.isfinite(ops.softmax(x))) and np.all(np.isfinite(ops.log_softmax(x)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_lookup(dtype, key):
    w = _normal(key, 0, (6, 3), dtype)
    ids = jnp.array([[0, 5, 5, 2], [1, 0, 3, 5]])  # repeated rows: their cotangents add
    _check(ops.lookup, lambda w, ids, dy: (ops.lookup_dw(ids, dy, 6),), (w, ids), key, dtype, nondiff=(1,))


def test_lookup_out_of_range_is_nan_and_adds_nothing():
    w = jnp.arange(6.0).reshape(3, 2)
    ids = jnp.array([0, 3, -1])
    np.testing.assert_array_equal(np.isnan(ops.lookup(w, ids)), [[False, False], [True, True], [True, True]])
    np.testing.assert_array_equal(ops.lookup_dw(ids, jnp.ones((3, 2)), 3), [[1, 1], [0, 0], [0, 0]])
