"""FeedForward: values against the formulas written with jax.nn, parameter names, dropout, errors.

Pullbacks against jax.vjp (plain, SwiGLU, GEGLU, no bias, out_features, dropout in training) are registry
rows (tests/layers/cases_feedforward.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.layers.feedforward import FeedForward
from tests.helpers import traced_init


def _normal(key, i, shape):
    """Drawn by numpy (seed i; `key` unused): jax.random compiles a draw per shape."""
    return np.random.default_rng(i).standard_normal(shape)


def _params(layer, key, in_shape):
    """(out_shape, params, state) of init, only traced: params standard normal (biases nonzero, so a
    missing bias term shows), float64, drawn by numpy."""
    out_shape, shapes, state = traced_init(layer, in_shape, key)
    params = {k: _normal(key, i + 1, v.shape) for i, (k, v) in enumerate(shapes.items())}
    return out_shape, params, state


ACTIVATIONS = {"gelu": lambda v: jax.nn.gelu(v, approximate=True), "relu": jax.nn.relu, "silu": jax.nn.silu}


@pytest.mark.parametrize("activation", ["gelu", "relu", "silu"])
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_values_match_the_formula(activation, gated, key):
    layer = FeedForward(7, activation=activation, gated=gated, out_features=3)
    out_shape, p, state = _params(layer, key, (-1, 5, 4))
    x = _normal(key, 0, (2, 5, 4))
    y, new_state = layer.apply(p, state, x, train=True)  # no dropout: train changes nothing
    act = ACTIVATIONS[activation]

    def affine(v, name):
        return v @ p[f"w_{name}"] + p[f"b_{name}"][None, None]

    hidden = act(affine(x, "gate")) * affine(x, "in") if gated else act(affine(x, "in"))
    assert out_shape == (-1, 5, 3) and state == {} and new_state == {}
    np.testing.assert_allclose(y, affine(hidden, "out"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, names, shapes", [
    ({}, ["w_in", "b_in", "w_out", "b_out"], [(4, 6), (6,), (6, 4), (4,)]),
    ({"gated": True, "out_features": 2}, ["w_in", "b_in", "w_gate", "b_gate", "w_out", "b_out"],
     [(4, 6), (6,), (4, 6), (6,), (6, 2), (2,)]),
    ({"gated": True, "use_bias": False}, ["w_in", "w_gate", "w_out"], [(4, 6), (4, 6), (6, 4)]),
])
def test_parameter_names_and_shapes(kwargs, names, shapes, key):
    _, params, _ = FeedForward(6, **kwargs).init(key, (3, 4))
    assert list(params) == names and [params[k].shape for k in names] == shapes
    if "w_gate" in params:
        assert not jnp.allclose(params["w_in"], params["w_gate"])  # each matrix from its own key


def test_dropout_drops_hidden_units_in_training_only(key):
    rate = 0.5
    layer = FeedForward(400, activation="relu", dropout=rate, use_bias=False)
    params = {"w_in": jnp.ones((1, 400)), "w_out": jnp.ones((400, 1))}  # y = sum of the kept hidden units
    x = jnp.ones((1, 1))

    @jax.jit  # every call in one program
    def calls(params, key):
        y_eval, _ = layer.apply(params, {}, x)
        y_train, _ = layer.apply(params, {}, x, key=key, train=True)
        y_again, _, pullback = layer.vjp(params, {}, x, key=key, train=True)
        other, _ = layer.apply(params, {}, x, key=jax.random.fold_in(key, 1), train=True)
        return y_eval, y_train, y_again, pullback(jnp.ones((1, 1)))[0], other

    y_eval, y_train, y_again, dparams, other = calls(params, key)
    assert float(y_eval[0, 0]) == 400.0
    kept = float(y_train[0, 0]) * (1 - rate)  # kept units count 1 / (1 - rate) each
    assert abs(kept - 400 * (1 - rate)) < 40 and kept == round(kept)
    np.testing.assert_array_equal(y_again, y_train)  # same key, same mask
    assert int(np.sum(dparams["w_in"] != 0)) == round(kept)  # the pullback uses the forward's mask
    assert float(other[0, 0]) != float(y_train[0, 0])


def test_dropout_needs_a_key_only_when_it_drops(key):
    x = jnp.ones((2, 3))
    layer = FeedForward(4, dropout=0.1)
    _, params, state = _params(layer, key, x.shape)
    with pytest.raises(ValueError, match=r"^FeedForward: train=True with dropout=0.1 needs a PRNG key, got key=None$"):
        layer.vjp(params, state, x, train=True)
    layer.apply(params, state, x)  # eval: no key needed
    FeedForward(4).apply(params, state, x, train=True)  # dropout 0: no key needed


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_hidden_must_be_positive(bad):
    with pytest.raises(ValueError, match=rf"^FeedForward: hidden must be positive integers, got hidden={bad!r}$"):
        FeedForward(bad)


def test_out_features_must_be_positive():
    with pytest.raises(ValueError, match=r"^FeedForward: out_features must be positive integers, got out_features=0$"):
        FeedForward(4, out_features=0)


@pytest.mark.parametrize("bad", ["swish", "GELU", None])
def test_unknown_activation(bad):
    with pytest.raises(ValueError, match=rf"^FeedForward: activation must be one of \(.*'gelu'.*\), "
                                         rf"got activation={bad!r}$"):
        FeedForward(4, activation=bad)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "0.1"])
def test_dropout_in_zero_one(bad):
    with pytest.raises(ValueError, match=r"^FeedForward: dropout \(the probability of dropping a hidden unit\) "
                                         rf"must be (a number in \[0, 1\)|a real number), got dropout={bad!r}$"):
        FeedForward(4, dropout=bad)


@pytest.mark.parametrize("name", ["gated", "use_bias"])
def test_flags_must_be_bool(name):
    with pytest.raises(ValueError, match=rf"^FeedForward: {name} must be a bool, got {name}=1$"):
        FeedForward(4, **{name: 1})


def test_shape_errors(key):
    layer = FeedForward(4)
    with pytest.raises(ValueError, match=r"^FeedForward: expected input of rank >= 2 \(N, \.\.\., F\), "
                                         r"got shape \(5,\)$"):
        layer.init(key, (5,))
    with pytest.raises(ValueError, match=r"^FeedForward: the feature dimension in_shape\[-1\] must be a positive int, "
                                         r"got shape \(2, -1\)$"):
        layer.init(key, (2, -1))
    _, params, state = _params(layer, key, (2, 3, 5))
    with pytest.raises(ValueError, match=r"^FeedForward: expected input shape \(N, \.\.\., 5\), got \(2, 3, 4\)$"):
        layer.apply(params, state, jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^FeedForward: expected input shape \(N, \.\.\., 5\), got \(5,\)$"):
        layer.vjp(params, state, jnp.ones((5,)))
