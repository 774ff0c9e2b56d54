"""MiniMaskFormer of the zoo: the whole model's handwritten gradient (set loss included) against
jax.grad in float64 and float32, the mask losses' pullbacks (binary cross-entropy, dice), segments of
a class mask, semantic inference and mean IoU on hand-made cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model, compare, tolerance
from purenet.models import (MaskFormerConfig, MaskFormerOutput, hungarian_match, maskformer_cost, maskformer_loss,
                            maskformer_targets, mean_iou, mini_maskformer, segments, semantic_segmentation)
from purenet.models.maskformer import dice_loss, mask_bce
from tests.models.test_detr import build

# Two backbone stages (the pixel decoder merges both), no encoder, two decoder layers.
TINY = MaskFormerConfig(num_classes=3, image_size=8, channels=(3, 4), d_model=8, heads=2, hidden=8, decoder_layers=2,
                        queries=3, mask_dim=4)


def class_masks():
    """Three 8x8 class masks: classes 0, 1, 2 (0 is the background); the last is all background."""
    masks = np.zeros((3, 8, 8), np.int64)
    masks[0, :4, :4], masks[0, 5:, 5:], masks[1, 2:6, 1:3] = 1, 2, 2
    return masks


def test_segments_of_a_class_mask():
    truth = segments(class_masks(), num_classes=3, factor=2, max_segments=3)
    np.testing.assert_array_equal(truth.classes, [[0, 1, 2], [0, 2, -1], [0, -1, -1]])
    np.testing.assert_array_equal(truth.counts, [3, 2, 1])
    assert truth.masks.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(truth.masks[0, 1], np.kron([[1, 1, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4], 1.0))
    np.testing.assert_allclose(truth.masks[1, 1, 1:3, :2], [[0.5, 0.5], [0.5, 0.5]])  # column 1 of 0..1: a half
    np.testing.assert_allclose(truth.masks[:, :2].sum(axis=1)[1:], 1.0)  # shares of a block add up to 1
    with pytest.raises(ValueError, match=r"segments: mask 0 has 3 classes, more than max_segments=2"):
        segments(class_masks(), num_classes=3, factor=2, max_segments=2)


def test_matching_finds_the_query_that_draws_each_segment():
    truth = segments(class_masks()[:1], num_classes=3, factor=2, max_segments=3)  # segments of classes 0, 1, 2
    drawn = [2, 0, 1]  # query q draws segment drawn[q], with its class
    logits, masks = np.full((1, 1, 3, 4), -6.0), np.zeros((1, 1, 3, 4, 4))
    for q, m in enumerate(drawn):
        logits[0, 0, q, truth.classes[0, m]] = 6.0
        masks[0, 0, q] = np.where(truth.masks[0, m] > 0, 8.0, -8.0)
    cost = maskformer_cost(MaskFormerOutput(logits, masks), truth)
    assert cost.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(hungarian_match(cost, truth.counts[:, None]), [[drawn]])


# float32 on one backbone stage and one decoder layer. With two layers, the second layer's self-attention
# over the decoded queries (rows nearly alike after the first layer) leaves its w_k gradient a small
# difference of large terms: float32 there measured up to 45 times JAX's own error with YNNPACK off
# (tests/README.md, `make test-variants`), both sides dominated by the cancellation, not by a formula.
@pytest.mark.parametrize("dtype, config", [(jnp.float64, TINY), (jnp.float32, TINY._replace(channels=(3,),
                                                                                            decoder_layers=1))],
                         ids=["f64-aux", "f32"])
def test_whole_model_gradient_equals_jax(dtype, config):
    """float64: two backbone stages merged by the pixel decoder, two decoder layers (the auxiliary outputs,
    the memory's cotangent summed over both; MiniDETR's too: the same query decoder)."""
    model = mini_maskformer(config)
    params, state = build(model, (-1, 8, 8, 1), dtype)
    x = np.random.default_rng(1).uniform(size=(3, 8, 8, 1)).astype(dtype)
    shapes = jax.eval_shape(lambda x: model.apply(params, state, x)[0], x)
    layers = config.decoder_layers
    assert shapes.logits.shape == (3, layers, 3, 4) and shapes.masks.shape == (3, layers, 3, 4, 4)  # half size
    truth = segments(class_masks(), num_classes=3, factor=2, max_segments=3)  # 3, 2 and 1 segments
    assignment = np.array([[[2, 0, 1], [1, 2, 0]], [[1, -1, 0], [0, -1, 1]], [[-1, 0, -1], [0, -1, -1]]])
    targets = maskformer_targets(assignment[:, -layers:], truth, num_classes=3)
    report = check_model(model, maskformer_loss(), params, state, x, targets)
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert any("pixel_decoder" in leaf for leaf in report) and any("backbone'][0]" in leaf for leaf in report)


def test_mask_losses_pullbacks_equal_jax(dtype=jnp.float64):  # float32: the whole-model check
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal((2, 3, 4, 5)) * 3, dtype).at[0, 0, 0, 0].set(0.0)  # z = 0 exactly too
    t = jnp.asarray((rng.uniform(size=(2, 3, 4, 5)) > 0.5) * 1.0, dtype).at[1, 2].set(0.0)  # an empty target
    g = jnp.asarray(rng.standard_normal((2, 3)), dtype)

    @jax.jit
    def run(z, t, g):
        ours, ref = [], []
        for loss in (mask_bce, dice_loss):
            value, pullback = loss(z, t)
            ref_value, ref_pullback = jax.vjp(lambda z, loss=loss: loss(z, t)[0], z)
            ours.append((value, pullback(g)))
            ref.append((ref_value, ref_pullback(g)[0]))
        return ours, ref

    ours, ref = run(z, t, g)
    compare(ours, ref, rtol=tolerance(dtype), what="mask losses")
    s = jax.nn.sigmoid(z)
    expected_dice = 1 - (2 * jnp.sum(s * t, axis=(2, 3)) + 1) / (jnp.sum(s, axis=(2, 3)) + jnp.sum(t, axis=(2, 3)) + 1)
    np.testing.assert_allclose(ours[1][0], expected_dice, rtol=1e-12)


def test_semantic_inference_and_mean_iou_on_hand_made_cases():
    # Query 0 says class 1 (p 0.9) on the left half, query 1 class 2 on the top right, query 2 "no object"
    # everywhere: per pixel, sum_q p_q(k) m_q picks 1 on the left, 2 top right, 0 (only 0.05 p) elsewhere.
    logits = np.log(np.array([[0.05, 0.9, 0.05, 0.0001], [0.05, 0.05, 0.9, 0.0001], [0.2, 0.0001, 0.0001, 0.8]]))
    masks = np.full((3, 4, 4), -9.0)
    masks[0, :, :2], masks[1, :2, 2:], masks[2] = 9.0, 9.0, 9.0
    out = MaskFormerOutput(jnp.asarray(logits)[None, None], jnp.asarray(masks)[None, None])
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 0, 0], [1, 1, 0, 0]])
    infer = jax.jit(semantic_segmentation, static_argnums=1)
    np.testing.assert_array_equal(infer(out, 4)[0], expected)
    assert infer(out, 8).shape == (1, 8, 8)
    true = np.array([[1, 1, 2, 2], [1, 1, 2, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    # class 0: inter 4 (of pred 4, true 7) -> 4/7; class 1: 6 of pred 8, true 6 -> 6/8; class 2: 3/4; class 3: NaN.
    mean, per_class = mean_iou(expected, true, 4)
    np.testing.assert_allclose(per_class[:3], [4 / 7, 6 / 8, 3 / 4])
    assert np.isnan(per_class[3]) and mean == pytest.approx((4 / 7 + 6 / 8 + 3 / 4) / 3)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"MiniMaskFormer: mask_dim must be positive integers, got mask_dim=0"):
        mini_maskformer(MaskFormerConfig(mask_dim=0))
    with pytest.raises(ValueError, match=r"MiniMaskFormer: dropout must be in \[0, 1\)"):
        mini_maskformer(MaskFormerConfig(dropout=1.5))
    with pytest.raises(ValueError, match=r"mean_iou: pred and true must have the same size, got 4 and 3"):
        mean_iou(np.zeros(4, int), np.zeros(3, int), 2)
