"""MiniDETR: set prediction of object boxes (Carion et al. 2020, "End-to-End Object Detection with
Transformers") at the scale of digit canvases: a CNN backbone, a Transformer encoder-decoder whose
learned object queries each predict a class (or "no object") and a box, Hungarian matching of queries
to objects outside the jitted step, and the set loss: class cross-entropy (the no-object class
down-weighted) + L1 + generalized-IoU box losses, every pullback written by hand.

Dimension letters: N batch, L decoder layers (each layer's prediction is kept for the auxiliary
losses; [:, -1] is the model's), Q queries, M ground-truth boxes (padded), K classes (K: no object).
Boxes are (cx, cy, w, h) normalized to the image, in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import check_range, fail
from purenet.combinators import serial, taped
from purenet.core import Layer, Loss
from purenet.layers import Dense, Relu, Sigmoid
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models.set_prediction import (backbone_and_decoder, check_images, class_cost, class_targets,
                                           layer_weights, matched)

EPS = 1e-7  # added to the union and the enclosing area: degenerate boxes give finite values


class DETRConfig(NamedTuple):
    """A MiniDETR (`mini_detr`): the backbone, the Transformer, the queries, the classes."""

    num_classes: int = 10
    image_size: int = 64  # H = W of the input; divisible by 2 ** len(channels)
    channels: tuple = (16, 32, 64)  # the backbone's stages (each halves the resolution)
    convs: int = 1  # 3x3 convolutions per stage
    d_model: int = 64
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 4 * d_model
    encoder_layers: int = 2
    decoder_layers: int = 2
    queries: int = 8
    dropout: float = 0.0


class DetrOutput(NamedTuple):
    """logits (N, L, Q, K + 1), boxes (N, L, Q, 4) in [0, 1] (cx, cy, w, h)."""

    logits: jax.Array
    boxes: jax.Array


class BoxTruth(NamedTuple):
    """Ground truth of a batch: classes (N, M) int (-1 past the count), boxes (N, M, 4), counts (N,)."""

    classes: jax.Array
    boxes: jax.Array
    counts: jax.Array


class DetrTargets(NamedTuple):
    """What the matching asks of each query (`detr_targets`): labels (N, L, Q) int (K: no object),
    class_weights (N, L, Q), boxes (N, L, Q, 4), box_weights (N, L, Q) (0 for unmatched queries)."""

    labels: jax.Array
    class_weights: jax.Array
    boxes: jax.Array
    box_weights: jax.Array


def mini_detr(config: DETRConfig) -> Layer:
    """The model `config` describes: images (N, S, S, C) -> DetrOutput(logits (N, L, Q, K + 1), boxes
    (N, L, Q, 4)). The backbone's last feature map is the memory the queries read; a class head
    (Dense) and a box head (Dense, ReLU, Dense, sigmoid) are shared by every decoder layer. Params
    {"backbone": (stage, ...), "transformer": {"memory", "queries", "decoder", "norm"}, "class_head",
    "box_head": {"fc1", "act", "fc2", "out"}}; state: each part's (empty) state, by the same names."""
    name = "MiniDETR"
    backbone, transformer = backbone_and_decoder(name, config)
    class_head = Dense(config.num_classes + 1)
    box_head = serial(fc1=Dense(config.d_model), act=Relu(), fc2=Dense(4), out=Sigmoid())

    def init(key, in_shape):
        check_images(name, config, in_shape)
        keys = jax.random.split(key, 4)
        params, state = {}, {}
        features, params["backbone"], state["backbone"] = backbone.init(keys[0], tuple(in_shape))
        h, params["transformer"], state["transformer"] = transformer.init(keys[1], features[-1])
        logits, params["class_head"], state["class_head"] = class_head.init(keys[2], h)
        boxes, params["box_head"], state["box_head"] = box_head.init(keys[3], h)
        return DetrOutput(logits, boxes), params, state

    def forward(tape, x):
        features = tape("backbone", backbone, x)
        h = tape("transformer", transformer, features[-1])  # (N, L, Q, F)
        return DetrOutput(tape("class_head", class_head, h), tape("box_head", box_head, h)), None

    # dh = the class head's dx + the box head's dx; the query decoder's dx is the cotangent of the
    # backbone's last stage (None at the others). Residuals: the parts' own.
    def backward(back, _, dy):
        dh = back("class_head", dy.logits) + back("box_head", dy.boxes)
        dfeature = back("transformer", dh)
        unused = (None,) * (len(config.channels) - 1)
        return back("backbone", (*unused, dfeature)), {}

    return taped(name, init, forward, backward)


# -------------------------------------------------------------------------------------- boxes


def _corners(box):
    """(..., 4) (cx, cy, w, h) -> x0, y0, x1, y1, w, h, each (...)."""
    cx, cy, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, w, h


def _giou_parts(a, b, xp=jnp) -> dict:
    """The pieces of GIoU(a, b) (broadcasting (..., 4) boxes) in `xp` (jax.numpy, or numpy on the host).
    min / max are selects so that a tie sends the whole gradient to b (the target), as the pullback does."""
    ax0, ay0, ax1, ay1, aw, ah = _corners(a)
    bx0, by0, bx1, by1, bw, bh = _corners(b)
    p = dict(ax0=ax0, ay0=ay0, ax1=ax1, ay1=ay1, aw=aw, ah=ah, bx0=bx0, by0=by0, bx1=bx1, by1=by1)
    p["ix"] = xp.where(ax1 < bx1, ax1, bx1) - xp.where(ax0 > bx0, ax0, bx0)  # intersection extents
    p["iy"] = xp.where(ay1 < by1, ay1, by1) - xp.where(ay0 > by0, ay0, by0)
    p["iw"], p["ih"] = xp.where(p["ix"] > 0, p["ix"], 0), xp.where(p["iy"] > 0, p["iy"], 0)
    p["ex"] = xp.where(ax1 > bx1, ax1, bx1) - xp.where(ax0 < bx0, ax0, bx0)  # enclosing box extents
    p["ey"] = xp.where(ay1 > by1, ay1, by1) - xp.where(ay0 < by0, ay0, by0)
    p["inter"] = p["iw"] * p["ih"]
    p["union"] = aw * ah + bw * bh - p["inter"] + EPS  # with EPS
    p["enclose"] = p["ex"] * p["ey"] + EPS
    return p


def generalized_iou(a, b, xp=jnp) -> jax.Array:
    """GIoU = I / U - (C - U) / C of boxes (..., 4) (cx, cy, w, h), broadcasting -> (...); I the
    intersection's area, U the union's, C the smallest enclosing box's (U and C with EPS added).
    `xp`: jax.numpy, or numpy for host arrays."""
    p = _giou_parts(a, b, xp)
    return p["inter"] / p["union"] - (p["enclose"] - p["union"]) / p["enclose"]


# loss = 1 - I/U + (C - U)/C:  dI = -1/U, dU = I/U^2 - 1/C, dC = U/C^2 (then U = area_a + area_b - I);
# I = relu(min(a1, b1) - max(a0, b0)) per axis, C = (max(a1, b1) - min(a0, b0)) per axis route to the
# selected coordinate; x0, x1 = cx -/+ w/2. Residuals: the corners, extents and areas of _giou_parts.
def generalized_iou_loss(pred, target):
    """1 - GIoU(pred, target) per box and its pullback w.r.t. pred: pred, target (..., 4) ->
    (loss (...), pullback(dloss (...)) -> dpred (..., 4)). Derivation: docs/derivations/set_losses.md."""
    p = _giou_parts(pred, target)
    inter, union, enclose = p["inter"], p["union"], p["enclose"]
    loss = 1 - inter / union + (enclose - union) / enclose

    def pullback(g):
        d_union = g * (inter / union ** 2 - 1 / enclose)
        d_inter = -g / union - d_union
        d_enclose = g * union / enclose ** 2
        d_ix = jnp.where(p["ix"] > 0, d_inter * p["ih"], 0)
        d_iy = jnp.where(p["iy"] > 0, d_inter * p["iw"], 0)
        d_ex, d_ey = d_enclose * p["ey"], d_enclose * p["ex"]

        def axis(d_i, d_e, a0, a1, b0, b1):  # -> (d a0, d a1)
            d1 = jnp.where(a1 < b1, d_i, 0) + jnp.where(a1 > b1, d_e, 0)
            d0 = -jnp.where(a0 > b0, d_i, 0) - jnp.where(a0 < b0, d_e, 0)
            return d0, d1

        dx0, dx1 = axis(d_ix, d_ex, p["ax0"], p["ax1"], p["bx0"], p["bx1"])
        dy0, dy1 = axis(d_iy, d_ey, p["ay0"], p["ay1"], p["by0"], p["by1"])
        dw = d_union * p["ah"] + (dx1 - dx0) / 2
        dh = d_union * p["aw"] + (dy1 - dy0) / 2
        return jnp.stack([dx0 + dx1, dy0 + dy1, dw, dh], axis=-1)  # (..., 4)

    return loss, pullback


# ------------------------------------------------------------------------------------ the set loss


def detr_loss(*, class_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0) -> Loss:
    """DETR's set loss on matched targets (`detr_targets`): class_weight * sum(class_weights * CE) +
    sum(box_weights * (l1_weight * |b - t|_1 + giou_weight * (1 - GIoU(b, t)))); the weights carry the
    normalizations (per layer, by the objects in the batch). pred DetrOutput, target DetrTargets -> ()."""
    name = "DetrLoss"
    weights = [check_range(name, what, value, lambda v: v >= 0, ">= 0") for what, value in
               (("class_weight", class_weight), ("l1_weight", l1_weight), ("giou_weight", giou_weight))]
    w_class, w_l1, w_giou = weights
    ce = masked_softmax_cross_entropy(reduction="sum")

    # d logits: the cross-entropy's (softmax - onehot) * weight; d boxes = w (l1 sign(b - t) +
    # giou * GIoU pullback). Residuals: the cross-entropy's and GIoU's own, b - t.
    def vjp(pred, target):
        if not isinstance(pred, DetrOutput) or not isinstance(target, DetrTargets):
            fail(name, f"expects DetrOutput and DetrTargets, got {type(pred).__name__} and {type(target).__name__}",
                 TypeError)
        n, layers, q, k = pred.logits.shape
        ce_value, ce_back = ce.vjp(pred.logits.reshape(n, layers * q, k),
                                   TokenTargets(jnp.reshape(target.labels, (n, layers * q)),
                                                jnp.reshape(target.class_weights, (n, layers * q))))
        diff = pred.boxes - target.boxes  # (N, L, Q, 4)
        giou, giou_back = generalized_iou_loss(pred.boxes, target.boxes)  # (N, L, Q)
        box_weights = jnp.asarray(target.box_weights, pred.boxes.dtype)
        per_box = w_l1 * jnp.sum(jnp.abs(diff), axis=-1) + w_giou * giou  # (N, L, Q)
        value = w_class * ce_value + jnp.sum(box_weights * per_box)

        def pullback(g):
            g_box = g * box_weights  # (N, L, Q)
            dboxes = (w_l1 * g_box)[..., None] * jnp.sign(diff) + giou_back(w_giou * g_box)
            return DetrOutput(ce_back(w_class * g).reshape(pred.logits.shape), dboxes)

        return value, pullback

    return Loss(lambda pred, target: vjp(pred, target)[0], vjp, name)


def detr_cost(outputs: DetrOutput, truth: BoxTruth, *, class_weight: float = 1.0, l1_weight: float = 5.0,
              giou_weight: float = 2.0) -> np.ndarray:
    """DETR's matching cost of each (query, object) pair, in numpy on the host: -class_weight p(class) +
    l1_weight |b - t|_1 - giou_weight GIoU(b, t). -> (N, L, Q, M)."""
    boxes = np.asarray(outputs.boxes, np.float64)[:, :, :, None, :]  # (N, L, Q, 1, 4)
    gt = np.asarray(truth.boxes, np.float64)[:, None, None, :, :]  # (N, 1, 1, M, 4)
    return (class_weight * class_cost(outputs.logits, np.asarray(truth.classes))
            + l1_weight * np.sum(np.abs(boxes - gt), axis=-1) - giou_weight * generalized_iou(boxes, gt, np))


def detr_targets(assignment: np.ndarray, truth: BoxTruth, *, num_classes: int, no_object_weight: float = 0.1,
                 aux: bool = True) -> DetrTargets:
    """The loss's targets from a matching: assignment (N, L, Q) (`hungarian_match`), truth of the batch
    (numpy). `aux`: every decoder layer's prediction is matched and counts in the loss, else the last."""
    layers = assignment.shape[1]
    labels, class_w, box_w = class_targets(assignment, np.asarray(truth.classes), num_classes, no_object_weight,
                                           layer_weights(layers, aux))
    return DetrTargets(labels, class_w, matched(assignment, np.asarray(truth.boxes, np.float32)), box_w)


def detections(outputs: DetrOutput) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The last decoder layer's predictions as detections: each query's most probable class other
    than "no object" and that probability. -> (scores (N, Q), labels (N, Q) int, boxes (N, Q, 4))."""
    probs = jax.nn.softmax(outputs.logits[:, -1], axis=-1)[..., :-1]  # (N, Q, K)
    return jnp.max(probs, axis=-1), jnp.argmax(probs, axis=-1), outputs.boxes[:, -1]


# ------------------------------------------------------------------------------------------ metric


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of (cx, cy, w, h) boxes: a (A, 4), b (B, 4) -> (A, B), 0 where the union is 0."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    lo = np.maximum(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    hi = np.minimum(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.prod(a[..., 2:], axis=-1) + np.prod(b[..., 2:], axis=-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(scores, labels, boxes, gt_classes, gt_boxes, *, num_classes: int,
                      iou_threshold: float = 0.5) -> tuple[float, np.ndarray]:
    """Mean average precision at an IoU threshold (PASCAL VOC's all-point interpolation): per class,
    detections of every image sorted by score; each is a true positive if its IoU with a not yet
    matched ground-truth box of its class in its image reaches the threshold (the best such box),
    else a false positive; AP = the area under the precision-recall curve made monotone.
    scores, labels (N, D), boxes (N, D, 4); gt_classes (N, M) (-1 past the count), gt_boxes (N, M, 4).
    -> (the mean over classes with ground truth, AP per class (K,), NaN for a class without any)."""
    scores, labels, boxes = np.asarray(scores), np.asarray(labels), np.asarray(boxes)
    gt_classes, gt_boxes = np.asarray(gt_classes), np.asarray(gt_boxes)
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        total = int(np.sum(gt_classes == c))
        if total == 0:
            continue
        image, slot = np.nonzero(labels == c)
        order = np.argsort(-scores[image, slot], kind="stable")
        hits, used = np.zeros(len(order)), set()
        for rank, (n, d) in enumerate(zip(image[order], slot[order])):
            candidates = np.flatnonzero(gt_classes[n] == c)
            if not len(candidates):
                continue
            iou = box_iou(boxes[n, d][None], gt_boxes[n, candidates])[0]
            iou[[j for j, m in enumerate(candidates) if (n, m) in used]] = -1
            best = int(np.argmax(iou))
            if iou[best] >= iou_threshold:
                hits[rank] = 1
                used.add((n, candidates[best]))
        tp = np.cumsum(hits)
        recall = np.concatenate([[0.0], tp / total, [1.0]])
        precision = np.concatenate([[0.0], tp / np.arange(1, len(tp) + 1), [0.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at recall >= r
        steps = np.flatnonzero(recall[1:] != recall[:-1])
        ap[c] = float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan"), ap
