"""Losses: handwritten VJPs vs jax.value_and_grad of their own apply (float64, float32), values vs optax,
stability at large logits, cotangent scaling, jit == eager, and one test per error message."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purenet.check import GradientMismatch, compare, needs_truth, tolerance
from purenet.combinators import serial
from purenet.core import Loss
from purenet.layers.dense import Dense
from purenet.losses import (
    TokenTargets,
    masked_softmax_cross_entropy,
    mean_squared_error,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_targets,
)
from tests.helpers import random_params

REDUCTIONS = ["mean", "sum"]
DTYPES = [jnp.float64, jnp.float32]


def exactly(message):
    return "^" + re.escape(message) + "$"


# ----------------------------------------------------------------------------- inputs per loss
# Inputs come from numpy (no compilation); make(rng, shape, dtype, scale) -> (pred, target), where
# `shape` is the prediction's shape.


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def _labels(rng, shape):
    return jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)


def _mse_inputs(rng, shape, dtype, scale):
    return _normal(rng, shape, dtype, scale), _normal(rng, shape, dtype, scale)


def _ce_inputs(rng, shape, dtype, scale):
    return _normal(rng, shape, dtype, scale), _labels(rng, shape)


def _soft_inputs(rng, shape, dtype, scale):
    weights = rng.uniform(size=shape)
    return _normal(rng, shape, dtype, scale), jnp.asarray(weights / weights.sum(-1, keepdims=True), dtype)


def _bce_inputs(rng, shape, dtype, scale):
    return _normal(rng, shape, dtype, scale), jnp.asarray(rng.uniform(size=shape), dtype)


def _masked_inputs(rng, shape, dtype, scale):
    mask = rng.uniform(size=shape[:-1]) < 0.6
    mask[0, 0] = True
    return _normal(rng, shape, dtype, scale), TokenTargets(_labels(rng, shape), jnp.asarray(mask))


LOSSES = {
    "mse": (mean_squared_error, _mse_inputs, [(4, 3), (1, 5)]),
    "ce": (softmax_cross_entropy, _ce_inputs, [(1, 3), (2, 3, 4)]),
    "ce-targets": (softmax_cross_entropy_with_targets, _soft_inputs, [(4, 5), (1, 3)]),
    "bce": (sigmoid_binary_cross_entropy, _bce_inputs, [(4, 3), (1, 1)]),
    "masked-ce": (masked_softmax_cross_entropy, _masked_inputs, [(3, 4, 5), (1, 2, 3)]),
}
CASES = [(name, shape) for name, (_, _, shapes) in LOSSES.items() for shape in shapes]
CASE_IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape in CASES]


def _inputs(name, shape, dtype, scale=3.0, seed=0):
    factory, make, _ = LOSSES[name]
    return factory, make(np.random.default_rng(seed), shape, dtype, scale)


SMOOTHED = functools.partial(masked_softmax_cross_entropy, label_smoothing=0.1)


def _float_mask_inputs(rng, shape, dtype, scale):
    """Masked cross-entropy's targets with a float mask: weights per token (0 drops one)."""
    logits, target = _masked_inputs(rng, shape, dtype, scale)
    weights = np.array(target.mask, np.float64) * rng.uniform(0.5, 2.0, size=shape[:-1])
    return logits, TokenTargets(target.labels, jnp.asarray(weights, dtype))


# Every case of LOSSES, label smoothing and a float mask: {id: (factory, make, shape)}
GRADIENT_CASES = {**{case_id: (LOSSES[name][0], LOSSES[name][1], shape) for case_id, (name, shape) in
                     zip(CASE_IDS, CASES)},
                  "masked-ce-smoothed-3x4x5": (SMOOTHED, _masked_inputs, (3, 4, 5)),
                  "masked-ce-float-mask-3x4x5": (masked_softmax_cross_entropy, _float_mask_inputs, (3, 4, 5))}


@functools.cache
def _ours_and_jax(factories):
    """A jitted function of {id: (pred, target)} and g for the ((id, factory), ...) given: for each id and
    reduction our value, pullback(g), pullback(1) and jax.value_and_grad(loss.apply), all in one program
    (one compilation per dtype, and the float32 check's float64 truth is the float64 program)."""
    losses = {(case_id, r): factory(reduction=r) for case_id, factory in factories for r in REDUCTIONS}

    @jax.jit
    def ours_and_jax(inputs, g):
        results = {}
        for (case_id, r), loss in losses.items():
            pred, target = inputs[case_id]
            g_case = g.astype(pred.dtype)  # g: float64
            value, pullback = loss.vjp(pred, target)
            results[case_id, r] = (value, pullback(g_case), pullback(jnp.ones_like(g_case)),
                                   *jax.value_and_grad(loss.apply)(pred, target))
        return results

    return losses, ours_and_jax


def _numpy(tree, dtype=None):
    """The tree's arrays as numpy (float leaves in `dtype` when given): the checks below then compile
    nothing more (an eager jnp operation compiles once per shape and dtype)."""
    def convert(a):
        a = np.asarray(a)
        return a.astype(dtype) if dtype is not None and np.issubdtype(a.dtype, np.floating) else a

    return jax.tree_util.tree_map(convert, tree)


def _check_against_jax(cases, g):
    """For every {id: (factory, pred, target)} and both reductions: our value and pullback(g) vs
    jax.value_and_grad(loss.apply), the gradient scaled by g; pullback(g) == g * pullback(1); by the
    suite's rule for pred's dtype (tests/README.md: below float64, against the same program run on the
    inputs cast up to float64)."""
    losses, ours_and_jax = _ours_and_jax(tuple((case_id, factory) for case_id, (factory, _, _) in cases.items()))
    inputs = _numpy({case_id: (pred, target) for case_id, (_, pred, target) in cases.items()})
    results = _numpy(ours_and_jax(inputs, np.float64(g)))
    with_truth = any(needs_truth(pred.dtype) for pred, _ in inputs.values())
    truths = _numpy(ours_and_jax(_numpy(inputs, np.float64), np.float64(g))) if with_truth else results

    for (case_id, r), loss in losses.items():
        pred = inputs[case_id][0]
        value, dpred, dpred_unit, value_ref, grad_ref = results[case_id, r]
        *_, value_t, grad_t = truths[case_id, r]
        g_case = np.asarray(g, pred.dtype)
        g_t = g_case.astype(np.float64)

        def bound(truth):
            return dict(truth=truth) if needs_truth(pred.dtype) else dict(rtol=tolerance(pred.dtype))

        what = f"{loss.name}[{case_id}, {r}]"
        assert value.shape == () and dpred.shape == pred.shape and dpred.dtype == pred.dtype
        assert np.all(np.isfinite(dpred)) and np.isfinite(value)
        assert np.max(np.abs(dpred)) > 0  # so the comparisons below are not 0 == 0
        compare(value, value_ref, what=f"{what}.value", **bound(value_t))
        compare(dpred, g_case * grad_ref, what=f"{what}.dpred", **bound(g_t * grad_t))
        compare(dpred, g_case * dpred_unit, what=f"{what}.dpred(g) vs g*dpred(1)", **bound(g_t * grad_t))


# ------------------------------------------------------------------------ gradients vs autodiff


def test_gradient_matches_value_and_grad():
    # Every case in float64 and float32, in one program per dtype (the float32 check's truth is the
    # float64 program); g != 1: the cotangent scales the gradient. At scale 1000 (one logit at -1000, far
    # below the others, too): stability at large logits.
    for scale, g in ((3.0, 1.7), (1000.0, -0.6)):
        for dtype in DTYPES:
            cases = {}
            for i, (case_id, (factory, make, shape)) in enumerate(GRADIENT_CASES.items()):
                pred, target = make(np.random.default_rng(i), shape, dtype, scale)
                if scale > 100:
                    pred = np.array(pred)
                    pred[(0,) * pred.ndim] = -1000.0
                cases[case_id] = factory, pred, target
            _check_against_jax(cases, g)


def test_check_catches_a_wrong_pullback():
    def forgets_the_mean(*, reduction):  # the value of "mean" with the pullback of "sum"
        del reduction
        mean, total = softmax_cross_entropy(reduction="mean"), softmax_cross_entropy(reduction="sum")
        return Loss(mean.apply, lambda z, y: (mean.apply(z, y), total.vjp(z, y)[1]), "Wrong")

    _, (logits, labels) = _inputs("ce", (2, 3, 4), jnp.float64)
    with pytest.raises(GradientMismatch, match=r"Wrong\[wrong, mean\]\.dpred"):
        _check_against_jax({"wrong": (forgets_the_mean, logits, labels)}, g=1.0)


def test_large_logits_closed_form():
    @jax.jit
    def values_and_gradients():
        value, pullback = softmax_cross_entropy(reduction="sum").vjp(
            jnp.array([[1000.0, 0.0], [0.0, 1000.0], [-1000.0, 1000.0]]), jnp.array([0, 0, 0]))
        binary, binary_pullback = sigmoid_binary_cross_entropy(reduction="sum").vjp(
            jnp.array([1000.0, -1000.0, 1000.0]), jnp.array([1.0, 0.0, 0.0]))
        return value, pullback(1.0), binary, binary_pullback(1.0)

    value, dlogits, binary, dbinary = values_and_gradients()
    np.testing.assert_allclose(value, 3000.0, rtol=1e-12)
    np.testing.assert_allclose(dlogits, [[0.0, 0.0], [-1.0, 1.0], [-1.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(binary, 1000.0, rtol=1e-12)
    np.testing.assert_allclose(dbinary, [0.0, 0.0, 1.0], atol=1e-12)


# ---------------------------------------------------------------------------- values vs optax


def _optax_value(name, pred, target, reduction):
    reduce = jnp.mean if reduction == "mean" else jnp.sum
    if name == "mse":
        return 2 * reduce(optax.l2_loss(pred, target))
    if name == "ce":
        return reduce(optax.softmax_cross_entropy_with_integer_labels(pred, target))
    if name == "ce-targets":
        return reduce(optax.softmax_cross_entropy(pred, target))
    if name == "bce":
        return reduce(optax.sigmoid_binary_cross_entropy(pred, target))
    per_token = optax.softmax_cross_entropy_with_integer_labels(pred, target.labels)
    total = jnp.sum(jnp.where(target.mask, per_token, 0.0))
    return total / jnp.sum(target.mask) if reduction == "mean" else total


def test_value_matches_optax():
    @jax.jit  # every case, both reductions, in one program
    def ours_and_optax(inputs):
        return {(name, shape, r): (LOSSES[name][0](reduction=r).apply(pred, target),
                                   _optax_value(name, pred, target, r))
                for (name, shape), (pred, target) in inputs.items() for r in REDUCTIONS}

    for scale in (3.0, 1000.0):  # the same shapes: one compilation
        inputs = {(name, shape): _inputs(name, shape, jnp.float64, scale)[1] for name, shape in CASES}
        for case, (value, reference) in ours_and_optax(inputs).items():
            np.testing.assert_allclose(value, reference, rtol=1e-12, err_msg=str(case))


def test_mse_is_the_mean_over_every_element():
    pred, target = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[0.0, 0.0], [0.0, 8.0]])
    assert float(mean_squared_error().apply(pred, target)) == (1 + 4 + 9 + 16) / 4
    assert float(mean_squared_error(reduction="sum").apply(pred, target)) == 30.0


@jax.jit
def _soft_and_integer(logits, labels):
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    soft_value, soft_pullback = softmax_cross_entropy_with_targets().vjp(logits, onehot)
    value, pullback = softmax_cross_entropy().vjp(logits, labels)
    return (soft_value, soft_pullback(1.3)), (value, pullback(1.3))


def test_soft_targets_with_one_hot_equal_integer_labels():
    _, (logits, labels) = _inputs("ce", (2, 3, 4), jnp.float64)
    soft, integer = _soft_and_integer(logits, labels)
    chex.assert_trees_all_close(soft, integer, rtol=1e-12)


# ----------------------------------------------------------------------------- masked specifics


def test_masked_mean_counts_only_unmasked_tokens():
    _, (logits, labels) = _inputs("ce", (2, 3, 4), jnp.float64)
    mask = np.array([[True, False, True], [False, False, True]])
    padded = jnp.where(mask, labels, -100)  # labels under the mask may hold any integer (padding)

    @jax.jit
    def masked_and_kept(logits):
        value, pullback = masked_softmax_cross_entropy().vjp(logits, TokenTargets(padded, jnp.asarray(mask)))
        ref_value, ref_pullback = softmax_cross_entropy().vjp(logits[mask], labels[mask])  # kept tokens only
        return value, pullback(1.0), ref_value, ref_pullback(1.0)

    value, dlogits, ref_value, ref_dlogits = masked_and_kept(logits)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(dlogits[mask], ref_dlogits, rtol=1e-12)
    assert float(jnp.max(jnp.abs(dlogits[~mask]))) == 0.0


def test_masked_float_mask_weights_tokens():
    # (Its pullback against jax.value_and_grad: the case masked-ce-float-mask of
    # test_gradient_matches_value_and_grad.)
    _, (logits, labels) = _inputs("ce", (1, 3, 4), jnp.float64, scale=1.0)
    weights = jnp.array([[0.5, 0.0, 2.0]])

    @jax.jit
    def ours_and_optax(logits):
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return masked_softmax_cross_entropy().apply(logits, TokenTargets(labels, weights)), per_token

    value, per_token = ours_and_optax(logits)
    np.testing.assert_allclose(value, np.sum(weights * per_token) / 2.5, rtol=1e-12)


def test_masked_fully_masked_batch_is_zero():
    _, (logits, labels) = _inputs("ce", (2, 3, 4), jnp.float64)
    target = TokenTargets(labels, jnp.zeros((2, 3), bool))

    @jax.jit  # both reductions, ours and JAX's, in one program
    def ours_and_jax(logits):
        results = []
        for reduction in REDUCTIONS:
            loss = masked_softmax_cross_entropy(reduction=reduction)
            value, pullback = loss.vjp(logits, target)
            results.append((value, pullback(1.0), *jax.value_and_grad(loss.apply)(logits, target)))
        return results

    for value, dlogits, value_ref, grad_ref in ours_and_jax(logits):
        assert float(value) == 0.0 and float(np.max(np.abs(dlogits))) == 0.0
        assert float(value_ref) == 0.0 and float(np.max(np.abs(grad_ref))) == 0.0


def test_masked_label_smoothing_value_matches_optax():
    # (Its pullback against jax.value_and_grad: the case masked-ce-smoothed of
    # test_gradient_matches_value_and_grad.)
    _, (logits, target) = _inputs("masked-ce", (3, 4, 5), jnp.float64)

    @jax.jit
    def values(logits, target):
        smoothed = optax.smooth_labels(jax.nn.one_hot(target.labels, 5, dtype=jnp.float64), 0.1)
        per_token = optax.softmax_cross_entropy(logits, smoothed)  # (3, 4)
        weights = target.mask.astype(jnp.float64)
        return (SMOOTHED().apply(logits, target), jnp.sum(weights * per_token) / jnp.sum(weights),
                masked_softmax_cross_entropy(label_smoothing=0.0).apply(logits, target),
                masked_softmax_cross_entropy().apply(logits, target))

    smoothed, expected, zero_smoothing, plain = values(logits, target)
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12)
    np.testing.assert_allclose(zero_smoothing, plain, rtol=0)
    with pytest.raises(ValueError, match=exactly(
            "MaskedSoftmaxCrossEntropy: label_smoothing must be in [0, 1), got label_smoothing=1.0")):
        masked_softmax_cross_entropy(label_smoothing=1.0)


# ----------------------------------------------------------------------------------- jit, model


@pytest.mark.parametrize("name", list(LOSSES))
def test_jit_equals_eager(name):
    factory, (pred, target) = _inputs(name, LOSSES[name][2][0], jnp.float64)
    loss = factory()

    def step(pred, target, g):
        value, pullback = loss.vjp(pred, target)
        return value, pullback(g), loss.apply(pred, target)

    eager = step(pred, target, 0.9)
    jitted = jax.jit(step)(pred, target, 0.9)
    compare(jitted, eager, rtol=1e-12, what=name)
    np.testing.assert_allclose(eager[2], eager[0], rtol=1e-15)


def test_model_gradient_through_loss():
    """serial(Dense, Dense) + cross-entropy: handwritten dparams == jax.grad through apply."""
    model, loss = serial(Dense(6), Dense(4)), softmax_cross_entropy()
    params, state = random_params(model, (5, 3), jnp.float64)
    x = _normal(np.random.default_rng(1), (5, 3), jnp.float64)
    labels = jnp.array([0, 3, 1, 1, 2])

    @jax.jit
    def ours_and_jax(params):
        y, _, pullback = model.vjp(params, state, x)
        value, loss_pullback = loss.vjp(y, labels)
        reference = jax.value_and_grad(lambda p: loss.apply(model.apply(p, state, x)[0], labels))(params)
        return (value, pullback(loss_pullback(jnp.ones_like(value)))[0]), reference

    ours, reference = ours_and_jax(params)
    compare(ours, reference, rtol=1e-10, what="mlp")


# -------------------------------------------------------------------------------------- errors

FACTORIES = [mean_squared_error, softmax_cross_entropy, softmax_cross_entropy_with_targets,
             sigmoid_binary_cross_entropy, masked_softmax_cross_entropy]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_bad_reduction(factory):
    with pytest.raises(ValueError, match=r"^\w+: reduction must be one of \('mean', 'sum'\), got reduction='none'$"):
        factory(reduction="none")


def test_mse_shape_mismatch():
    with pytest.raises(ValueError, match=exactly(
            "MeanSquaredError: target shape must equal the prediction shape (2, 3), "
            "got target shape (3, 2)")):
        mean_squared_error().apply(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


def test_ce_labels_shape():
    with pytest.raises(ValueError, match=exactly(
            "SoftmaxCrossEntropy: labels shape must equal logits.shape[:-1] (=(4,)), "
            "got labels shape (4, 1)")):
        softmax_cross_entropy().apply(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32))


def test_ce_labels_dtype():
    with pytest.raises(TypeError, match="SoftmaxCrossEntropy: labels must be integers, got dtype float"):
        softmax_cross_entropy().apply(jnp.zeros((4, 3)), jnp.zeros((4,)))


def test_ce_logits_rank():
    with pytest.raises(ValueError, match=exactly(
            "SoftmaxCrossEntropy: expected logits of rank >= 1 (N..., K), got shape ()")):
        softmax_cross_entropy().apply(jnp.zeros(()), jnp.zeros((), jnp.int32))


def test_soft_targets_shape():
    with pytest.raises(ValueError, match=exactly(
            "SoftmaxCrossEntropyWithTargets: targets shape must equal the prediction shape (4, 3), "
            "got targets shape (4,)")):
        softmax_cross_entropy_with_targets().apply(jnp.zeros((4, 3)), jnp.zeros((4,)))


def test_bce_targets_shape():
    with pytest.raises(ValueError, match=exactly(
            "SigmoidBinaryCrossEntropy: targets shape must equal the prediction shape (4,), "
            "got targets shape (4, 1)")):
        sigmoid_binary_cross_entropy().apply(jnp.zeros((4,)), jnp.zeros((4, 1)))


def test_masked_target_type():
    with pytest.raises(TypeError, match="MaskedSoftmaxCrossEntropy: target must be a TokenTargets"):
        masked_softmax_cross_entropy().apply(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32))


def test_masked_logits_rank():
    with pytest.raises(ValueError, match=exactly(
            "MaskedSoftmaxCrossEntropy: expected logits of rank 3 (N, T, K), got shape (2, 4)")):
        masked_softmax_cross_entropy().apply(
            jnp.zeros((2, 4)), TokenTargets(jnp.zeros((2,), jnp.int32), jnp.ones((2,), bool)))


def test_masked_labels_shape():
    with pytest.raises(ValueError, match=exactly(
            "MaskedSoftmaxCrossEntropy: labels shape must equal logits.shape[:-1] (=(2, 3)), "
            "got labels shape (2, 4)")):
        masked_softmax_cross_entropy().apply(
            jnp.zeros((2, 3, 4)), TokenTargets(jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4), bool)))


def test_masked_mask_shape():
    with pytest.raises(ValueError, match=exactly(
            "MaskedSoftmaxCrossEntropy: mask shape must equal labels shape (2, 3), got mask shape (2, 4)")):
        masked_softmax_cross_entropy().apply(
            jnp.zeros((2, 3, 4)), TokenTargets(jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4), bool)))




# ------------------------------------------------------------------------------ misuse, by name


def test_a_loss_given_apply_s_pair_says_to_pass_y():
    logits = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match=exactly(
            "SoftmaxCrossEntropy: pred must be an array, got a tuple of 2 (array, dict): pass the model's y, "
            "not apply's (y, state)")):
        softmax_cross_entropy().apply((logits, {}), jnp.zeros((2,), jnp.int32))


def test_out_of_range_labels_fail_when_concrete_and_give_nan_under_jit():
    logits, labels = jnp.zeros((3, 4)), jnp.array([0, 4, -1])
    with pytest.raises(ValueError, match=exactly(
            "SoftmaxCrossEntropy: labels must be in [0, 4) (the number of classes, logits.shape[-1]), got labels "
            "in [-1, 4]")):
        softmax_cross_entropy().apply(logits, labels)
    assert np.isnan(jax.jit(softmax_cross_entropy().apply)(logits, labels))  # traced: shows in the loss
    assert np.isfinite(jax.jit(softmax_cross_entropy().apply)(logits, jnp.array([0, 3, 1])))
    masked = masked_softmax_cross_entropy()
    targets = TokenTargets(jnp.array([[0, 9]]), jnp.array([[True, False]]))  # 9 is masked out: ignored
    assert np.isfinite(masked.apply(logits[None, :2], targets))
    assert np.isfinite(jax.jit(masked.apply)(logits[None, :2], targets))
    with pytest.raises(ValueError, match=re.escape("MaskedSoftmaxCrossEntropy: labels must be in [0, 4)")):
        masked.apply(logits[None, :2], TokenTargets(jnp.array([[0, 9]]), jnp.array([[True, True]])))


def test_binary_targets_in_minus_one_plus_one_are_refused():
    bce = sigmoid_binary_cross_entropy()
    with pytest.raises(ValueError, match=exactly(
            "SigmoidBinaryCrossEntropy: targets must be probabilities in [0, 1], got targets in [-1.0, 1.0] "
            "(labels in {-1, +1}: pass (t + 1) / 2)")):
        bce.apply(jnp.zeros((4,)), jnp.array([-1.0, 1.0, 1.0, -1.0]))
    assert np.isnan(jax.jit(bce.apply)(jnp.zeros((4,)), jnp.array([-1.0, 1.0, 1.0, -1.0])))
    assert float(bce.apply(jnp.zeros((2,)), jnp.array([0.0, 1.0]))) == pytest.approx(np.log(2), rel=1e-12)


def test_the_mean_of_an_empty_batch_fails_and_its_sum_is_zero():
    with pytest.raises(ValueError, match=exactly(
            "MeanSquaredError: reduction='mean' of an empty batch is undefined (0/0), got pred of shape (0, 3)")):
        mean_squared_error().apply(jnp.zeros((0, 3)), jnp.zeros((0, 3)))
    assert float(softmax_cross_entropy(reduction="sum").apply(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))) == 0
    empty = TokenTargets(jnp.zeros((0, 2), jnp.int32), jnp.zeros((0, 2), bool))
    assert float(masked_softmax_cross_entropy().apply(jnp.zeros((0, 2, 3)), empty)) == 0  # fully masked: 0
