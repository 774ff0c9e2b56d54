"""The checker itself: it passes a correct layer, fails a wrong VJP naming the leaf, and its bridge runs
our pullback inside jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import (LOW_PRECISION_FACTOR, GradientMismatch, as_jax_function, check_dot_product,
                           check_layer, check_model, compare, tolerance)
from purenet.combinators import serial
from purenet.core import Layer, Loss
from purenet.layers.dense import Dense
from tests.helpers import random_params


def _scaled_dense(w_scale=1.0, x_scale=1.0, out_features=3):
    """A Dense whose pullback scales dw and dx by the given factors (1.0: correct)."""
    inner = Dense(out_features)

    def vjp(params, state, x, *, key=None, train=False):
        y, state, pullback = inner.vjp(params, state, x)

        def wrong(dy):
            dparams, dx = pullback(dy)
            return {"w": dparams["w"] * w_scale, "b": dparams["b"]}, dx * x_scale

        return y, state, wrong

    return Layer(inner.init, inner.apply, vjp, "Skewed")


# The input for the checks whose claim is not about check_layer's defaults (a drawn x, two cotangents):
# given, and one cotangent, the checker compiles two random draws fewer.
X = np.random.default_rng(0).standard_normal((2, 4))


def _square_loss():
    def apply(pred, target):
        return 0.5 * jnp.sum((pred - target) ** 2)

    def vjp(pred, target):
        return apply(pred, target), lambda g: g * (pred - target)

    return Loss(apply, vjp, "half_sse")


def test_correct_layer_passes_with_report(key):
    report = check_layer(_scaled_dense(), (2, 4), key=key)
    assert {"Skewed.dparams['w']", "Skewed.dparams['b']", "Skewed.dx", "Skewed.y"} <= set(report)
    assert all(err.max_rel <= tolerance(jnp.float64) for err in report.values())


@pytest.mark.parametrize("w_scale, x_scale, leaf", [(1.0 + 1e-6, 1.0, r"dparams\['w'\]"),
                                                    (1.0, -1.0, r"Skewed\.dx")])
def test_wrong_vjp_fails_naming_the_leaf(key, w_scale, x_scale, leaf):
    with pytest.raises(GradientMismatch, match=leaf):
        check_layer(_scaled_dense(w_scale, x_scale), (2, 4), key=key, x=X, num_cotangents=1)


def test_wrong_vjp_fails_dot_product(key):
    with pytest.raises(GradientMismatch, match="Skewed"):
        check_dot_product(_scaled_dense(1.0, 2.0), (2, 4), key=key, x=X)


def test_float32_follows_the_low_precision_rule_and_still_catches(key):
    report = check_layer(_scaled_dense(), (2, 4), key=key, dtype=jnp.float32, x=X, num_cotangents=1)
    eps = float(jnp.finfo(jnp.float32).eps)
    assert all(LOW_PRECISION_FACTOR * eps <= e.rtol < 1e-4 for e in report.values())  # bounds from the truth
    with pytest.raises(GradientMismatch, match=r"Skewed\.dparams\['w'\]"):
        # 1e-4: the old flat tolerance
        check_layer(_scaled_dense(1 + 1e-4), (2, 4), key=key, dtype=jnp.float32, x=X, num_cotangents=1)


def test_the_rule_bounds_ours_by_the_references_own_error_against_the_truth():
    truth = jnp.array([1.0, -2.0, 4.0])
    eps = float(jnp.finfo(jnp.float32).eps)
    reference = jnp.asarray(truth * (1 + jnp.array([0.0, 0.0, 1e-5])), jnp.float32)  # off by 1e-5 of max|truth|
    ours = jnp.asarray(truth * (1 + jnp.array([0.0, 0.0, 1.5e-4])), jnp.float32)
    report = compare({"w": ours}, {"w": reference}, truth={"w": truth}, what="t")  # 1.5e-4 <= 16 x 1e-5
    np.testing.assert_allclose(report["t['w']"].rtol, LOW_PRECISION_FACTOR * 1e-5, rtol=1e-2)
    with pytest.raises(GradientMismatch, match=r"t\['w'\]: max abs error"):
        compare({"w": ours}, {"w": jnp.asarray(truth, jnp.float32)}, truth={"w": truth}, what="t")  # eps floor
    assert compare({"w": jnp.asarray(truth, jnp.float32) * (1 + eps)}, {"w": jnp.asarray(truth, jnp.float32)},
                   truth={"w": truth}, what="t")["t['w']"].rtol == LOW_PRECISION_FACTOR * eps
    with pytest.raises(ValueError, match=r"compare: t\['w'\] is float32: pass truth="):
        compare({"w": ours}, {"w": reference}, what="t")


def test_a_failure_names_every_leaf_out_of_bounds(key):
    with pytest.raises(GradientMismatch) as failure:
        check_layer(_scaled_dense(1.5, 2.0), (2, 4), key=key, x=X, num_cotangents=1)
    assert "Skewed.dx" in str(failure.value) and "Skewed.dparams['w']" in str(failure.value)
    assert "Skewed.dparams['b']" not in str(failure.value)


def test_wrong_output_shape_declaration_fails(key):
    inner = Dense(3)

    def init(key, in_shape):
        out_shape, params, state = inner.init(key, in_shape)
        return (*out_shape[:-1], 4), params, state

    with pytest.raises(GradientMismatch, match="out_shape"):
        check_layer(Layer(init, inner.apply, inner.vjp, "Liar"), (2, 4), key=key, x=X, num_cotangents=1)


def test_compare_rejects_structure_and_shape_mismatch():
    with pytest.raises(GradientMismatch, match="structure"):
        compare({"w": jnp.ones(2)}, {"v": jnp.ones(2)}, rtol=1e-10, what="t")
    with pytest.raises(GradientMismatch, match=r"t\['w'\]: shape"):
        compare({"w": jnp.ones(2)}, {"w": jnp.ones(3)}, rtol=1e-10, what="t")
    report = compare({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 2.5])}, rtol=1.0, what="t")
    np.testing.assert_allclose(report["t['w']"][:2], (0.5, 0.2))


def test_check_model_matches_and_catches():
    model = serial(Dense(5), Dense(2))
    params, state = random_params(model, (3, 4), jnp.float64)
    x, target = jnp.ones((3, 4)), jnp.zeros((3, 2))
    report = check_model(model, _square_loss(), params, state, x, target)
    assert "Serial.dparams[1]['w']" in report
    skewed = serial(Dense(5), _scaled_dense(1.5, out_features=2))
    with pytest.raises(GradientMismatch, match=r"Serial\.dparams\[1\]\['w'\]"):
        check_model(skewed, _square_loss(), params, state, x, target)


def test_bridge_runs_our_pullback_under_jax_grad():
    layer = _scaled_dense(w_scale=2.0)  # deliberately skewed: the bridge must use it, not autodiff
    params, state = random_params(layer, (2, 4), jnp.float32)
    x = jnp.ones((2, 4))
    f = as_jax_function(layer, state)

    @jax.jit
    def bridged_and_ours(params):
        dparams = jax.grad(lambda p: jnp.sum(f(p, x)))(params)
        _, _, pullback = layer.vjp(params, state, x)
        return dparams, pullback(jnp.ones((2, 3)))[0], f(params, x), layer.apply(params, state, x)[0]

    dparams, ours, y_bridged, y = bridged_and_ours(params)
    np.testing.assert_allclose(dparams["w"], ours["w"])
    np.testing.assert_allclose(y_bridged, y)


def test_float64_without_x64_fails_instead_of_a_false_alarm(key):
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match=r"check_layer: dtype=float64 needs 64-bit mode, which is off: call "
                                             r"jax\.config\.update\('jax_enable_x64', True\)"):
            check_layer(Dense(2), (2, 3), key=key, dtype=jnp.float64)
        with pytest.raises(ValueError, match=r"check_dot_product: dtype=float64 needs 64-bit mode"):
            check_dot_product(Dense(2), (2, 3), key=key)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_the_layer_contract_is_checked_before_comparing(key):
    inner = Dense(3)

    def pullback_returns_dx_only(params, state, x, *, key=None, train=False):
        y, state, pullback = inner.vjp(params, state, x)
        return y, state, lambda dy: pullback(dy)[1]

    def apply_forgets_the_state(params, state, x, *, key=None, train=False):
        return inner.apply(params, state, x)[0]

    with pytest.raises(ValueError, match=r"check_layer: DxOnly's pullback must return \(dparams, dx\), got"):
        check_layer(Layer(inner.init, inner.apply, pullback_returns_dx_only, "DxOnly"), (2, 4), key=key)
    with pytest.raises(ValueError, match=r"check_layer: NoState.apply must return \(y, new_state\), got"):
        check_layer(Layer(inner.init, apply_forgets_the_state, inner.vjp, "NoState"), (2, 4), key=key)
