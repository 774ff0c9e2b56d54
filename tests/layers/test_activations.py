"""Activations: forward values against jax.nn, stability at large |x|, by-name lookup, one test per error.

Pullbacks, the adjoint identity and jit are checked for every activation by the registry
(tests/cases_activations.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.layers.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                 Softmax, Softplus, Tanh)

X = jnp.array([[-3.0, -1.0, -0.25, 0.0, 0.5, 2.0, 4.0]], jnp.float64)  # (1, 7), negatives included

REFERENCES = [
    (Relu(), jax.nn.relu),
    (LeakyRelu(negative_slope=0.2), lambda x: jax.nn.leaky_relu(x, 0.2)),
    (Elu(alpha=0.5), lambda x: jax.nn.elu(x, 0.5)),
    (Gelu(), lambda x: jax.nn.gelu(x, approximate=True)),
    (Gelu(approximate=False), lambda x: jax.nn.gelu(x, approximate=False)),
    (Sigmoid(), jax.nn.sigmoid),
    (Tanh(), jnp.tanh),
    (Softplus(), jax.nn.softplus),
    (Silu(), jax.nn.silu),
    (Softmax(), jax.nn.softmax),
    (LogSoftmax(), jax.nn.log_softmax),
]


def test_forward_matches_jax_nn(key):
    @jax.jit  # every activation and its reference in one program
    def ours_and_references(x):
        return [(layer.apply({}, {}, x)[0], reference(x)) for layer, reference in REFERENCES]

    for (layer, _), (y, expected) in zip(REFERENCES, ours_and_references(X)):
        assert layer.init(key, X.shape)[0] == X.shape
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-15, err_msg=layer.name)


def test_leaky_relu_and_elu_use_their_hyperparameter(key):
    x = jnp.array([[-2.0, 3.0]])
    _, _, pullback = LeakyRelu(negative_slope=0.3).vjp({}, {}, x)
    np.testing.assert_allclose(pullback(jnp.ones_like(x))[1], [[0.3, 1.0]])
    y, _ = Elu(alpha=2.0).apply({}, {}, x)
    np.testing.assert_allclose(y, [[2.0 * np.expm1(-2.0), 3.0]])


LARGE = [Elu(), Gelu(), Gelu(approximate=False), Sigmoid(), Tanh(), Softplus(), Silu()]


def test_gradients_stay_finite_at_large_inputs():
    x = jnp.array([[-200.0, -30.0, 30.0, 200.0]], jnp.float32)

    @jax.jit  # every activation in one program
    def values_and_gradients(x):
        results = []
        for layer in LARGE:
            y, _, pullback = layer.vjp({}, {}, x)
            results.append((y, pullback(jnp.ones_like(y))[1]))
        return results

    for layer, (y, dx) in zip(LARGE, values_and_gradients(x)):
        assert jnp.all(jnp.isfinite(y)) and jnp.all(jnp.isfinite(dx)), layer.name
        limits = [0.0, 0.0 if layer.name in ("Sigmoid", "Tanh") else 1.0]  # to one unit in the last place of 1
        np.testing.assert_allclose(dx[0, [0, 3]], limits, rtol=0, atol=np.finfo(np.float32).eps, err_msg=layer.name)


def test_softmax_axis_normalizes_that_axis():
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    y, _ = Softmax(axis=1).apply({}, {}, x)
    np.testing.assert_allclose(jnp.sum(y, axis=1), jnp.ones((2, 3)), rtol=1e-12)
    log_y, _ = LogSoftmax(axis=1).apply({}, {}, x)
    np.testing.assert_allclose(jnp.exp(log_y), y, rtol=1e-12)


def test_softmax_of_huge_logits_is_finite():
    x = jnp.array([[1000.0, 0.0, -1000.0]], jnp.float32)
    y, _, pullback = Softmax().vjp({}, {}, x)
    log_y, _, log_pullback = LogSoftmax().vjp({}, {}, x)
    dy = jnp.array([[1.0, 2.0, 3.0]], jnp.float32)
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(log_y, [[0.0, -1000.0, -2000.0]])
    assert jnp.all(jnp.isfinite(pullback(dy)[1])) and jnp.all(jnp.isfinite(log_pullback(dy)[1]))


@pytest.mark.parametrize("name, expected", [("relu", "Relu"), ("leaky_relu", "LeakyRelu"), ("elu", "Elu"),
                                            ("gelu", "Gelu"), ("gelu_exact", "Gelu"), ("sigmoid", "Sigmoid"),
                                            ("tanh", "Tanh"),
                                            ("softplus", "Softplus"), ("silu", "Silu"),
                                            ("softmax", "Softmax"), ("log_softmax", "LogSoftmax")])
def test_activation_by_name(name, expected):
    assert Activation(name).name == expected


def test_gelu_names_pick_the_tanh_and_the_erf_forms():
    x = jnp.linspace(-4.0, 4.0, 17, dtype=jnp.float64)
    for name, approximate in (("gelu", True), ("gelu_exact", False)):
        y, _ = Activation(name).apply({}, {}, x)
        np.testing.assert_allclose(y, jax.nn.gelu(x, approximate=approximate), rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------------------------------ errors


def test_activation_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"^Activation: unknown activation 'rleu'; known: elu, gelu, .*tanh$"):
        Activation("rleu")


@pytest.mark.parametrize("constructor, argument", [(LeakyRelu, "negative_slope"), (Elu, "alpha")])
@pytest.mark.parametrize("value", ["0.1", None, True, float("nan")])
def test_slope_and_alpha_must_be_real_numbers(constructor, argument, value):
    with pytest.raises(ValueError, match=f"must be a finite real number, got {argument}="):
        constructor(**{argument: value})


def test_gelu_approximate_must_be_bool():
    with pytest.raises(ValueError, match=r"^Gelu: approximate must be a bool, got approximate='tanh'$"):
        Gelu(approximate="tanh")


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
def test_softmax_axis_must_be_int(constructor):
    with pytest.raises(ValueError, match=r"axis must be an int, got axis=1.0$"):
        constructor(axis=1.0)


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
@pytest.mark.parametrize("axis", [2, -3])
def test_softmax_axis_out_of_range_at_init(constructor, axis, key):
    layer = constructor(axis=axis)
    with pytest.raises(ValueError, match=rf"^{layer.name}: axis={axis} is out of range for input of rank 2, "
                                         r"shape \(4, 5\)$"):
        layer.init(key, (4, 5))
