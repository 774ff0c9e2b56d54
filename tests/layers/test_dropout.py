"""Dropout: rate is the DROP probability, inverted scaling, eval identity, the pullback's mask, errors.

Train- and eval-mode pullbacks against jax.vjp are registry rows (tests/cases_activations.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.combinators import serial
from purenet.layers.dense import Dense
from purenet.layers.dropout import Dropout
from tests.helpers import random_params


def test_eval_is_identity(key):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    layer = Dropout(0.9)
    y, state = layer.apply({}, {}, x, key=key, train=False)
    y_vjp, _, pullback = layer.vjp({}, {}, x)  # eval needs no key
    dy = jnp.arange(12.0).reshape(3, 4)
    assert y is x and y_vjp is x and state == {}
    assert pullback(dy) == ({}, dy)


def test_rate_is_the_drop_probability_and_kept_units_are_scaled(key):
    rate = 0.3
    x = jnp.ones((100, 100))
    y, _ = Dropout(rate).apply({}, {}, x, key=key, train=True)
    kept = y != 0
    assert abs(float(jnp.mean(kept)) - (1 - rate)) < 0.02
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-12)


def test_pullback_reuses_the_forward_mask(key):
    rate = 0.5
    x = jnp.ones((8, 16))
    dy = np.random.default_rng(1).standard_normal(x.shape)
    y, _, pullback = Dropout(rate).vjp({}, {}, x, key=key, train=True)
    _, dx = pullback(dy)
    np.testing.assert_array_equal(dx != 0, y != 0)
    np.testing.assert_allclose(dx, jnp.where(y != 0, dy / (1 - rate), 0.0), rtol=1e-12)


def test_same_key_same_mask_other_key_other_mask(key):
    x = jnp.ones((8, 16))
    layer = Dropout(0.5)
    first, _ = layer.apply({}, {}, x, key=key, train=True)
    again, _, _ = layer.vjp({}, {}, x, key=key, train=True)
    other, _ = layer.apply({}, {}, x, key=jax.random.fold_in(key, 7), train=True)
    np.testing.assert_array_equal(first, again)
    assert jnp.any(first != other)


def test_rate_zero_keeps_everything_in_training(key):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)))
    y, _, pullback = Dropout(0.0).vjp({}, {}, x, key=key, train=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(pullback(x)[1], x)


def test_serial_gives_each_dropout_its_own_key(key):
    model = serial(Dropout(0.5), Dropout(0.5))
    _, params, state = model.init(key, (1, 64))
    x = jnp.ones((1, 64))
    _, _, pullback = model.vjp(params, state, x, key=key, train=True)
    masks = [layer.apply(p, s, x, key=k, train=True)[0] != 0
             for layer, p, s, k in zip((Dropout(0.5),) * 2, params, state, jax.random.split(key, 2))]
    assert jnp.any(masks[0] != masks[1])
    _, dx = pullback(x)
    np.testing.assert_allclose(dx, jnp.where(masks[0] & masks[1], 4.0, 0.0))


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_rate_must_be_in_zero_one(rate):
    with pytest.raises(ValueError, match=r"^Dropout: rate \(the probability of dropping a unit\) must be a "
                                         rf"number in \[0, 1\), got rate={rate!r}$"):
        Dropout(rate)


@pytest.mark.parametrize("rate", ["0.5", True, None, float("nan")])
def test_rate_must_be_a_real_number(rate):
    with pytest.raises(ValueError, match=r"^Dropout: rate \(the probability of dropping a unit\) must be a "
                                         rf"real number, got rate={rate!r}$"):
        Dropout(rate)


def test_training_needs_a_key():
    x = jnp.ones((2, 3))
    for run in (Dropout(0.5).apply, Dropout(0.5).vjp):
        with pytest.raises(ValueError, match=r"^Dropout: train=True needs a PRNG key, got key=None$"):
            run({}, {}, x, train=True)


def test_dense_then_dropout_gradient(key):
    # Dropout composes: a dropped unit passes no gradient to the Dense weights feeding it.
    model = serial(Dense(6), Dropout(0.5))
    params, state = random_params(model, (3, 4), np.float32)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)

    @jax.jit
    def forward_and_pullback(params, x):
        y, _, pullback = model.vjp(params, state, x, key=key, train=True)
        return y, pullback(jnp.ones_like(y))[0][0]

    y, dense_grads = forward_and_pullback(params, x)
    dropped_everywhere = np.all(np.asarray(y) == 0, axis=0)
    np.testing.assert_array_equal(np.asarray(dense_grads["b"]) == 0, dropped_everywhere)
