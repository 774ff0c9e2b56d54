"""Dense beyond the registry: errors naming the layer and the values."""

import jax
import jax.numpy as jnp
import pytest

from purenet.layers.dense import Dense


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_dense_rejects_bad_out_features(bad):
    with pytest.raises(ValueError, match=rf"Dense: out_features must be positive integers, got out_features={bad!r}"):
        Dense(bad)


def test_dense_rejects_a_non_bool_use_bias():
    with pytest.raises(ValueError, match=r"Dense: use_bias must be a bool, got use_bias=1"):
        Dense(3, use_bias=1)


def test_dense_rejects_rank1_at_init(key):
    with pytest.raises(ValueError, match=r"Dense: expected input of rank >= 2 \(N, \.\.\., I\), got shape \(5,\)"):
        Dense(3).init(key, (5,))


def test_dense_rejects_wrong_feature_size_at_apply(key):
    _, params, state = Dense(3).init(key, (2, 5))
    with pytest.raises(ValueError, match=r"Dense: expected input shape \(N, \.\.\., 5\), got \(2, 4\)"):
        Dense(3).apply(params, state, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Dense: expected input shape"):
        jax.jit(lambda x: Dense(3).apply(params, state, x))(jnp.ones((2, 4)))
