"""MiniDETR of the zoo: the whole model's handwritten gradient (set loss included) against jax.grad in
float64 and float32, the GIoU loss's pullback (degenerate boxes included), Hungarian matching and the
targets it gives on hand-made cases, and mean average precision on a hand-made case."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model, compare
from purenet.core import init_model
from purenet.layers import DecoderBlock
from purenet.models import (BoxTruth, DETRConfig, DetrOutput, average_precision, detections, detr_cost, detr_loss,
                            detr_targets, hungarian_match, mini_detr)
from purenet.models.detr import generalized_iou, generalized_iou_loss
from purenet.models.set_prediction import class_targets

# One backbone stage (the multi-stage backbone: tests/models/test_maskformer.py), an encoder block, one
# decoder layer (two, the auxiliary outputs: test_maskformer.py too).
TINY = DETRConfig(num_classes=3, image_size=8, channels=(3,), d_model=8, heads=2, hidden=8, encoder_layers=1,
                  decoder_layers=1, queries=3)
# Three images: two boxes, one, none (a batch without objects in one image).
TRUTH = BoxTruth(np.array([[0, 2], [1, -1], [-1, -1]]),
                 np.array([[[0.3, 0.3, 0.2, 0.3], [0.6, 0.7, 0.3, 0.2]], [[0.5, 0.5, 0.4, 0.4], [0, 0, 0, 0]],
                           [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32), np.array([2, 1, 0]))
ASSIGNMENT = np.array([[[1, -1, 0]], [[-1, 0, -1]], [[-1, -1, -1]]])  # (N, L, Q)


def build(model, in_shape, dtype, seed=0):
    """-> (params, state) in the tree `init` gives, params drawn by numpy N(0, 0.5^2): compiling `init`
    (a random draw per leaf) costs more than the checks it serves."""
    shapes = jax.eval_shape(lambda key: init_model(model, key, in_shape, dtype=dtype)[1:], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def test_whole_model_gradient_equals_jax():  # float64 and float32 at one point
    """The encoder block and one decoder layer. The auxiliary outputs of two decoder layers (the memory's
    cotangent summed over both): MiniMaskFormer's check (tests/models/test_maskformer.py), the same
    query decoder (`set_prediction.backbone_and_decoder`); MiniDETR's heads and `detr_loss` take the
    layers as one more axis (N, L, Q); the targets' per-layer weights: class_targets of two layers in
    test_hungarian_matching_and_targets_on_a_hand_made_case."""
    model = mini_detr(TINY)
    params, state = build(model, (-1, 8, 8, 1), np.float32)
    x = np.random.default_rng(1).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    shapes = jax.eval_shape(lambda x: model.apply(params, state, x)[0], x)
    assert shapes.logits.shape == (3, 1, 3, 4) and shapes.boxes.shape == (3, 1, 3, 4)
    targets = detr_targets(ASSIGNMENT, TRUTH, num_classes=3)  # matching: tested on its own below
    report = check_model(model, detr_loss(), params, state, x, targets, dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert any("backbone" in leaf for leaf in report) and any("queries" in leaf for leaf in report)
    assert any("['memory']['blocks'][0]" in leaf for leaf in report)  # the encoder block


# pred vs target: random; pred degenerate (w = 0, then a point); identical (every min/max ties);
# disjoint (no intersection); nested; target degenerate; both the same point (U = C = 0).
BOXES = [([0.4, 0.5, 0.3, 0.2], [0.45, 0.4, 0.2, 0.3]), ([0.4, 0.5, 0.0, 0.2], [0.45, 0.4, 0.2, 0.3]),
         ([0.4, 0.5, 0.0, 0.0], [0.45, 0.4, 0.2, 0.3]), ([0.3, 0.3, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]),
         ([0.2, 0.2, 0.1, 0.1], [0.8, 0.7, 0.2, 0.1]), ([0.5, 0.5, 0.1, 0.1], [0.5, 0.45, 0.4, 0.5]),
         ([0.5, 0.5, 0.3, 0.3], [0.6, 0.5, 0.0, 0.0]), ([0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0])]


def test_generalized_iou_loss_pullback_equals_jax_with_degenerate_boxes():
    """float64 and float32 in one program at one point (the boxes in float32, cast up exactly): float64
    within 1e-10, float32 by the suite's rule with the float64 evaluation of JAX's as the truth."""
    pred, target = (np.asarray([b[i] for b in BOXES], np.float32) for i in (0, 1))
    g = np.random.default_rng(0).standard_normal(len(BOXES)).astype(np.float32)

    def ours(pred, target, g):
        loss, pullback = generalized_iou_loss(pred, target)
        return loss, pullback(g)

    def theirs(pred, target, g):
        loss, pullback = jax.vjp(lambda p: 1 - generalized_iou(p, target), pred)
        return loss, pullback(g)[0]

    @jax.jit
    def both(pred, target, g):
        return [(ours(*point), theirs(*point)) for point in
                ([a.astype(d) for a in (pred, target, g)] for d in (jnp.float64, jnp.float32))]

    (ours64, theirs64), (ours32, theirs32) = both(pred, target, g)
    compare(ours64, theirs64, what="generalized_iou_loss[float64]")
    compare(ours32, theirs32, truth=theirs64, what="generalized_iou_loss[float32]")
    for loss, dpred in (ours64, ours32):
        loss = np.asarray(loss)
        assert abs(loss[3]) < 1e-5 and loss[4] > 1 and np.all(np.isfinite(np.asarray(dpred)))
        np.testing.assert_allclose(loss[7], 1.0, atol=1e-5)  # two equal points: I = 0, U = C = 0 (+ EPS)


def test_hungarian_matching_without_scipy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # as if scipy were not installed
    with pytest.raises(ImportError, match=r"hungarian_match: .* needs scipy, .*: pip install purenet\[zoo\]"):
        hungarian_match(np.zeros((1, 2, 2)), np.array([1]))


def test_hungarian_matching_and_targets_on_a_hand_made_case():
    cost = np.array([[[5.0, 1.0], [1.0, 5.0], [3.0, 3.0]]])  # (N=1, Q=3, M=2)
    np.testing.assert_array_equal(hungarian_match(cost, np.array([2])), [[1, 0, -1]])
    np.testing.assert_array_equal(hungarian_match(cost, np.array([1])), [[-1, 0, -1]])  # only object 0 counts
    assignment = np.array([[[1, 0, -1], [-1, 0, 1]]])  # (N=1, L=2, Q=3)
    labels, class_w, match_w = class_targets(assignment, np.array([[7, 4]]), 10, 0.1, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(labels, [[[4, 7, 10], [10, 7, 4]]])
    np.testing.assert_allclose(class_w, [[[1 / 2.1, 1 / 2.1, 0.1 / 2.1], [0.1 / 2.1, 1 / 2.1, 1 / 2.1]]], rtol=1e-6)
    np.testing.assert_allclose(match_w, [[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]])
    _, class_w, match_w = class_targets(assignment, np.array([[7, 4]]), 10, 0.1, np.array([0.0, 1.0]))
    assert np.all(class_w[:, 0] == 0) and np.all(match_w[:, 0] == 0)  # a layer left out of the loss
    # A perfect prediction of query 1 for object 0: its cost is the lowest, and matching finds it.
    logits = np.full((1, 1, 3, 4), -5.0)
    logits[0, 0, 1, 2] = 5.0
    boxes = np.array([[[[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.3], [0.9, 0.9, 0.1, 0.1]]]])
    truth = BoxTruth(np.array([[2, -1]]), np.array([[[0.3, 0.3, 0.2, 0.3], [0, 0, 0, 0]]]), np.array([1]))
    cost = detr_cost(DetrOutput(logits, boxes), truth)
    assert cost.shape == (1, 1, 3, 2) and np.argmin(cost[0, 0, :, 0]) == 1
    np.testing.assert_allclose(cost[0, 0, 1, 0], -1 - 2.0, atol=1e-3)  # -p(class) - 2 GIoU, L1 = 0


def test_mean_average_precision_on_a_hand_made_case():
    a, b, c = [0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]
    near_a = [0.31, 0.3, 0.2, 0.2]  # IoU with a above 0.5: a duplicate
    scores = np.array([[0.9, 0.8, 0.7], [0.6, 0.0, 0.0]])
    labels = np.array([[0, 0, 1], [0, 2, 2]])
    boxes = np.array([[a, near_a, [0.1, 0.9, 0.1, 0.1]], [c, c, c]])
    gt_classes, gt_boxes = np.array([[0, 1], [0, -1]]), np.array([[a, b], [c, [0, 0, 0, 0]]])
    # Class 0: TP (0.9), FP (duplicate), TP (0.6) of 2: recall .5 .5 1, precision 1 .5 .67 -> AP .5 + .5 * 2/3.
    # Class 1: one FP -> 0. Class 2: detections but no ground truth -> NaN, left out of the mean.
    mean, per_class = average_precision(scores, labels, boxes, gt_classes, gt_boxes, num_classes=3)
    np.testing.assert_allclose(per_class[:2], [0.5 + 0.5 * 2 / 3, 0.0])
    assert np.isnan(per_class[2]) and mean == pytest.approx((0.5 + 0.5 * 2 / 3) / 2)
    strict, _ = average_precision(scores, labels, boxes, gt_classes, gt_boxes, num_classes=3, iou_threshold=0.99)
    assert strict == pytest.approx(mean)  # exact boxes: every true positive has IoU 1
    logits = np.log(np.array([[[[0.1, 0.6, 0.1, 0.2], [0.05, 0.05, 0.1, 0.8]]]]))  # (1, L=1, Q=2, K+1)
    found = jax.jit(detections)(DetrOutput(jnp.asarray(logits), jnp.zeros((1, 1, 2, 4))))
    np.testing.assert_allclose(found[0], [[0.6, 0.1]], rtol=1e-6)  # "no object" (0.8) is never a detection
    np.testing.assert_array_equal(found[1], [[1, 2]])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"MiniDETR: image_size \(=30\) must be divisible by 2 \*\* len\(channels\)"):
        mini_detr(DETRConfig(image_size=30))
    with pytest.raises(ValueError, match=r"MiniDETR: d_model \(=10\) must be divisible by heads \(=4\)"):
        mini_detr(DETRConfig(d_model=10))
    with pytest.raises(ValueError, match=r"MiniDETR: encoder_layers must be an integer >= 0, got encoder_layers=-1"):
        mini_detr(DETRConfig(encoder_layers=-1))
    with pytest.raises(ValueError, match=r"MiniDETR: expected images \(N, 8, 8, C\), got in_shape \(2, 16, 16, 1\)"):
        mini_detr(TINY).init(jax.random.PRNGKey(0), (2, 16, 16, 1))
    with pytest.raises(ValueError, match=r"counts must be in \[0, min\(Q, M\)\] \(=2\), got \[0, 3\]"):
        hungarian_match(np.zeros((2, 3, 2)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"DecoderBlock: cannot decode step by step: it is not causal"):
        DecoderBlock(2, 8, is_causal=False).decode.init_cache({}, 1, 3)
