"""Combinators and Dense: shape inference at init, key splitting, errors naming layer and values."""

import jax
import jax.numpy as jnp
import pytest

from purenet.core import identity, init_model, parallel, residual, serial
from purenet.dense import Dense


def test_serial_infers_shapes_without_data(key):
    out_shape, params, state = serial(Dense(8), Dense(3)).init(key, (-1, 5))
    assert out_shape == (-1, 3)
    assert params[0]["w"].shape == (5, 8) and params[1]["b"].shape == (3,)
    assert state == ({}, {})


def test_parallel_shapes(key):
    assert parallel(Dense(2), Dense(3)).init(key, (-1, 4))[0] == (-1, 5)
    assert parallel(Dense(4), identity(), merge="sum").init(key, (-1, 4))[0] == (-1, 4)


def test_init_model_casts_params(key):
    _, params, _ = init_model(Dense(2), key, (1, 3), dtype=jnp.float64)
    assert params["w"].dtype == jnp.float64


def test_serial_splits_keys_per_child(key):
    seen = []

    def spy():
        layer = identity()

        def apply(params, state, x, *, key=None, train=False):
            seen.append(key)
            return x, state

        return layer._replace(apply=apply)

    model = serial(spy(), spy())
    model.apply(({}, {}), ({}, {}), jnp.ones((1, 2)), key=key)
    assert not jnp.array_equal(seen[0], seen[1])
    model.apply(({}, {}), ({}, {}), jnp.ones((1, 2)), key=key)
    assert jnp.array_equal(seen[0], seen[2]) and jnp.array_equal(seen[1], seen[3])


def test_serial_rejects_non_layers():
    with pytest.raises(ValueError, match=r"Serial: expects one or more Layer"):
        serial(Dense(2), "relu")


def test_parallel_rejects_unknown_merge():
    with pytest.raises(ValueError, match=r"Parallel: merge must be 'concat' or 'sum', got merge='mean'"):
        parallel(Dense(2), merge="mean")


def test_parallel_sum_rejects_unequal_shapes(key):
    with pytest.raises(ValueError, match=r"Parallel: merge='sum' needs equal output shapes"):
        parallel(Dense(2), Dense(3), merge="sum").init(key, (1, 4))


def test_residual_rejects_shape_change(key):
    with pytest.raises(ValueError, match=r"Residual: inner layer Dense maps \(1, 4\) to \(1, 3\)"):
        residual(Dense(3)).init(key, (1, 4))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_dense_rejects_bad_out_features(bad):
    with pytest.raises(ValueError, match=rf"Dense: out_features must be positive integers, got out_features={bad!r}"):
        Dense(bad)


def test_dense_rejects_rank1_at_init(key):
    with pytest.raises(ValueError, match=r"Dense: expected input of rank >= 2 \(N, \.\.\., I\), got shape \(5,\)"):
        Dense(3).init(key, (5,))


def test_dense_rejects_wrong_feature_size_at_apply(key):
    _, params, state = Dense(3).init(key, (2, 5))
    with pytest.raises(ValueError, match=r"Dense: expected input shape \(N, \.\.\., 5\), got \(2, 4\)"):
        Dense(3).apply(params, state, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Dense: expected input shape"):
        jax.jit(lambda x: Dense(3).apply(params, state, x))(jnp.ones((2, 4)))
