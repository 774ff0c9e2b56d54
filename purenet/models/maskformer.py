"""MiniMaskFormer: semantic segmentation as mask classification (Cheng et al. 2021, "Per-Pixel
Classification is Not All You Need for Semantic Segmentation") at the scale of digit canvases. The
backbone and the query decoder are MiniDETR's; a pixel decoder (a small feature pyramid) gives
per-pixel embeddings, each query a class (or "no object") and a mask embedding, and a query's mask
logits are the dot products of its embedding with every pixel's. Hungarian matching (class + mask
costs) outside the jitted step; the loss is class cross-entropy + binary cross-entropy + dice, every
pullback written by hand. Semantic inference: per pixel, the class maximizing sum_q p_q(class) m_q.

Dimension letters: N batch, L decoder layers ([:, -1] is the model's prediction), Q queries, M ground
truth segments (padded), K classes (index K: no object), E mask embedding, h w the masks' resolution
(half the image's), P = h w pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import check_positive, check_range, fail
from purenet.combinators import parallel, select, serial, taped
from purenet.core import Layer, Loss
from purenet.layers import Conv2D, ConvTranspose2D, Dense, Relu
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models.set_prediction import (backbone_and_decoder, check_images, class_cost, class_targets,
                                           layer_weights, matched)


class MaskFormerConfig(NamedTuple):
    """A MiniMaskFormer (`mini_maskformer`): as DETRConfig, plus the mask embedding width."""

    num_classes: int = 11  # the digits and the background
    image_size: int = 64  # H = W of the input; divisible by 2 ** len(channels)
    channels: tuple = (16, 32, 64)  # the backbone's stages; the masks have the first stage's resolution
    convs: int = 1
    d_model: int = 64
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 4 * d_model
    encoder_layers: int = 0  # MaskFormer's queries read the backbone's map directly
    decoder_layers: int = 2
    queries: int = 8
    mask_dim: int = 32  # E
    dropout: float = 0.0


class MaskFormerOutput(NamedTuple):
    """logits (N, L, Q, K + 1), masks (N, L, Q, h, w): mask logits (sigmoid for probabilities)."""

    logits: jax.Array
    masks: jax.Array


class SegmentTruth(NamedTuple):
    """Ground truth of a batch: classes (N, M) int (-1 past the count), masks (N, M, h, w) in [0, 1]
    (a segment's share of each pixel), counts (N,)."""

    classes: jax.Array
    masks: jax.Array
    counts: jax.Array


class MaskTargets(NamedTuple):
    """What the matching asks of each query (`maskformer_targets`): labels (N, L, Q) int (K: no object),
    class_weights (N, L, Q), masks (N, L, Q, h, w), mask_weights (N, L, Q) (0 for unmatched queries)."""

    labels: jax.Array
    class_weights: jax.Array
    masks: jax.Array
    mask_weights: jax.Array


def pixel_decoder(stages: int, mask_dim: int) -> Layer:
    """A feature pyramid over the backbone's stages: the top map projected to `mask_dim`, then at each
    finer stage upsampled (2x2 transposed convolution, stride 2) + that stage projected, a 3x3
    convolution and ReLU; a last Dense gives the per-pixel embeddings.
    Shapes: a tuple of (N, H / 2^i, W / 2^i, C_i), i = 1..stages -> (N, H / 2, W / 2, mask_dim)."""
    level = serial(pick=select(stages - 1), proj=Dense(mask_dim))
    for i in reversed(range(stages - 1)):
        merged = parallel(up=serial(coarse=level, up=ConvTranspose2D(mask_dim, 2, strides=2)),
                          lateral=serial(pick=select(i), proj=Dense(mask_dim)), merge="sum")
        level = serial(merge=merged, conv=Conv2D(mask_dim, 3, padding="SAME"), act=Relu())
    return serial(pyramid=level, out=Dense(mask_dim))


def mini_maskformer(config: MaskFormerConfig) -> Layer:
    """The model `config` describes: images (N, S, S, C) -> MaskFormerOutput(logits (N, L, Q, K + 1),
    masks (N, L, Q, S / 2, S / 2)). The class head (Dense) and the mask embedding head (Dense, ReLU,
    Dense to E) are shared by every decoder layer. Params {"backbone", "transformer" (as MiniDETR's),
    "pixel_decoder", "class_head", "mask_head"}; state: each part's (empty) state, by the same names."""
    name = "MiniMaskFormer"
    check_positive(name, "mask_dim", config.mask_dim)
    backbone, transformer = backbone_and_decoder(name, config)
    pixels = pixel_decoder(len(config.channels), config.mask_dim)
    class_head = Dense(config.num_classes + 1)
    mask_head = serial(fc1=Dense(config.d_model), act=Relu(), fc2=Dense(config.mask_dim))
    parts = {"backbone": backbone, "transformer": transformer, "pixel_decoder": pixels, "class_head": class_head,
             "mask_head": mask_head}

    def init(key, in_shape):
        check_images(name, config, in_shape)
        keys = dict(zip(parts, jax.random.split(key, len(parts))))
        params, state, shapes = {}, {}, {}

        def part(what, shape):
            shapes[what], params[what], state[what] = parts[what].init(keys[what], shape)
            return shapes[what]

        features = part("backbone", tuple(in_shape))
        h = part("transformer", features[-1])
        n, h_, w_, _ = part("pixel_decoder", features)
        logits = part("class_head", h)
        part("mask_head", h)
        return MaskFormerOutput(logits, (n, config.decoder_layers, config.queries, h_, w_)), params, state

    def forward(tape, x):  # -> (the output, embed and pixel)
        features = tape("backbone", backbone, x)
        h = tape("transformer", transformer, features[-1])  # (N, L, Q, F)
        pixel = tape("pixel_decoder", pixels, features)  # (N, h, w, E)
        embed = tape("mask_head", mask_head, h)  # (N, L, Q, E)
        masks = jnp.einsum("nlqe,nhwe->nlqhw", embed, pixel)
        return MaskFormerOutput(tape("class_head", class_head, h), masks), (embed, pixel)

    # masks = embed . pixel: d embed = sum_hw dmasks pixel, d pixel = sum_lq dmasks embed. The backbone's
    # last stage gets the pixel decoder's and the query decoder's cotangents, the others the pixel
    # decoder's. Residuals: the parts' own, embed and pixel.
    def backward(back, saved, dy):
        embed, pixel = saved
        dfeatures = back("pixel_decoder", jnp.einsum("nlqhw,nlqe->nhwe", dy.masks, embed))
        dh = back("mask_head", jnp.einsum("nlqhw,nhwe->nlqe", dy.masks, pixel)) + back("class_head", dy.logits)
        dlast = back("transformer", dh)
        return back("backbone", (*dfeatures[:-1], dfeatures[-1] + dlast)), {}

    return taped(name, init, forward, backward)


# ------------------------------------------------------------------------------------ mask losses


def _flat(z):
    return z.reshape(*z.shape[:-2], -1)  # (..., h, w) -> (..., P)


# bce = mean_p softplus(z) - z t: dz = (sigmoid(z) - t) / P. Residuals: none beyond z and t.
def mask_bce(logits, targets):
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1], the mean over a mask's pixels
    (softplus(z) - z t, stable). logits, targets (..., h, w) -> (loss (...), pullback(dloss (...)) -> dlogits)."""
    z, t = _flat(logits), _flat(targets).astype(logits.dtype)
    loss = jnp.mean(jax.nn.softplus(z) - z * t, axis=-1)

    def pullback(g):
        return ((jax.nn.sigmoid(z) - t) * (g / z.shape[-1])[..., None]).reshape(logits.shape)

    return loss, pullback


# dice = 1 - A / B, A = 2 sum(s t) + 1, B = sum(s) + sum(t) + 1, s = sigmoid(z):
# ds = -(2 t B - A) / B^2, dz = ds s (1 - s). Residuals: s, A, B.
def dice_loss(logits, targets):
    """The dice loss 1 - (2 |s t| + 1) / (|s| + |t| + 1) of s = sigmoid(logits) against targets, per
    mask. logits, targets (..., h, w) -> (loss (...), pullback(dloss (...)) -> dlogits)."""
    s, t = jax.nn.sigmoid(_flat(logits)), _flat(targets).astype(logits.dtype)
    a = 2 * jnp.sum(s * t, axis=-1) + 1
    b = jnp.sum(s, axis=-1) + jnp.sum(t, axis=-1) + 1

    def pullback(g):
        ds = -(2 * t * b[..., None] - a[..., None]) * (g / b ** 2)[..., None]
        return (ds * s * (1 - s)).reshape(logits.shape)

    return 1 - a / b, pullback


def maskformer_loss(*, class_weight: float = 1.0, bce_weight: float = 5.0, dice_weight: float = 5.0) -> Loss:
    """The set loss on matched targets (`maskformer_targets`): class_weight * sum(class_weights * CE) +
    sum(mask_weights * (bce_weight * BCE + dice_weight * dice)) of each query's mask against its matched
    segment. pred MaskFormerOutput, target MaskTargets -> ()."""
    name = "MaskFormerLoss"
    w_class, w_bce, w_dice = [check_range(name, what, value, lambda v: v >= 0, ">= 0") for what, value in
                              (("class_weight", class_weight), ("bce_weight", bce_weight),
                               ("dice_weight", dice_weight))]
    ce = masked_softmax_cross_entropy(reduction="sum")

    # d logits: the cross-entropy's; d masks = w (bce_weight * BCE's + dice_weight * dice's pullback).
    # Residuals: theirs.
    def vjp(pred, target):
        if not isinstance(pred, MaskFormerOutput) or not isinstance(target, MaskTargets):
            fail(name, f"expects MaskFormerOutput and MaskTargets, got {type(pred).__name__} and "
                       f"{type(target).__name__}", TypeError)
        n, layers, q, k = pred.logits.shape
        ce_value, ce_back = ce.vjp(pred.logits.reshape(n, layers * q, k),
                                   TokenTargets(jnp.reshape(target.labels, (n, layers * q)),
                                                jnp.reshape(target.class_weights, (n, layers * q))))
        bce, bce_back = mask_bce(pred.masks, target.masks)  # (N, L, Q)
        dice, dice_back = dice_loss(pred.masks, target.masks)
        weights = jnp.asarray(target.mask_weights, pred.masks.dtype)
        value = w_class * ce_value + jnp.sum(weights * (w_bce * bce + w_dice * dice))

        def pullback(g):
            return MaskFormerOutput(ce_back(w_class * g).reshape(pred.logits.shape),
                                    bce_back(w_bce * g * weights) + dice_back(w_dice * g * weights))

        return value, pullback

    return Loss(lambda pred, target: vjp(pred, target)[0], vjp, name)


def maskformer_cost(outputs: MaskFormerOutput, truth: SegmentTruth, *, class_weight: float = 1.0,
                    bce_weight: float = 5.0, dice_weight: float = 5.0) -> np.ndarray:
    """The matching cost of each (query, segment) pair, in numpy on the host: -class_weight p(class) +
    bce_weight BCE + dice_weight dice of the query's mask against the segment. -> (N, L, Q, M)."""
    z = _flat(np.asarray(outputs.masks, np.float64))  # (N, L, Q, P)
    t = _flat(np.asarray(truth.masks, np.float64))  # (N, M, P)
    bce = (np.sum(np.logaddexp(0, z), axis=-1)[..., None] - np.einsum("nlqp,nmp->nlqm", z, t)) / z.shape[-1]
    s = 0.5 * (1 + np.tanh(z / 2))  # sigmoid
    dice = 1 - (2 * np.einsum("nlqp,nmp->nlqm", s, t) + 1) / (
        np.sum(s, axis=-1)[..., None] + np.sum(t, axis=-1)[:, None, None, :] + 1)
    return class_weight * class_cost(outputs.logits, np.asarray(truth.classes)) + bce_weight * bce + dice_weight * dice


def maskformer_targets(assignment: np.ndarray, truth: SegmentTruth, *, num_classes: int,
                       no_object_weight: float = 0.1, aux: bool = True) -> MaskTargets:
    """The loss's targets from a matching: assignment (N, L, Q) (`hungarian_match`), truth of the batch
    (numpy). `aux`: every decoder layer's prediction counts in the loss, else the last's."""
    labels, class_w, mask_w = class_targets(assignment, np.asarray(truth.classes), num_classes, no_object_weight,
                                            layer_weights(assignment.shape[1], aux))
    return MaskTargets(labels, class_w, matched(assignment, np.asarray(truth.masks, np.float32)), mask_w)


def segments(masks: np.ndarray, *, num_classes: int, factor: int, max_segments: int) -> SegmentTruth:
    """Semantic ground truth as segments: one per class present in each per-pixel class mask, its
    pixels' share of each `factor` x `factor` block (the model's mask resolution).
    masks (N, S, S) ints in [0, num_classes) -> SegmentTruth with M = max_segments."""
    masks = np.asarray(masks)
    n, size, _ = masks.shape
    if size % factor:
        fail("segments", f"the masks' size (={size}) must be divisible by factor (={factor})")
    r = size // factor
    share = np.zeros((n, num_classes, r, r), np.float32)
    for k in range(num_classes):  # the mean of the one-hot over each block
        share[:, k] = (masks == k).reshape(n, r, factor, r, factor).mean(axis=(2, 4))
    classes = np.full((n, max_segments), -1, np.int32)
    out = np.zeros((n, max_segments, r, r), np.float32)
    counts = np.zeros(n, np.int32)
    for i in range(n):
        present = np.flatnonzero(share[i].reshape(num_classes, -1).max(axis=1) > 0)
        if len(present) > max_segments:
            fail("segments", f"mask {i} has {len(present)} classes, more than max_segments={max_segments}")
        classes[i, :len(present)], out[i, :len(present)], counts[i] = present, share[i, present], len(present)
    return SegmentTruth(classes, out, counts)


def semantic_segmentation(outputs: MaskFormerOutput, size: int) -> jax.Array:
    """MaskFormer's semantic inference on the last decoder layer: per pixel, the class k maximizing
    sum_q p_q(k) sigmoid(mask_q), the class scores resized bilinearly to size x size.
    -> (N, size, size) int, classes in [0, K)."""
    probs = jax.nn.softmax(outputs.logits[:, -1], axis=-1)[..., :-1]  # (N, Q, K)
    scores = jnp.einsum("nqk,nqhw->nkhw", probs, jax.nn.sigmoid(outputs.masks[:, -1]))
    scores = jax.image.resize(scores, (*scores.shape[:2], size, size), "bilinear")
    return jnp.argmax(scores, axis=1)


def mean_iou(pred: np.ndarray, true: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Intersection over union per class over every pixel of the set (one confusion matrix), and
    their mean over the classes that occur (in pred or true). pred, true (...) ints in [0, num_classes)
    -> (mean, IoU per class (K,), NaN for a class in neither)."""
    pred, true = np.asarray(pred).ravel(), np.asarray(true).ravel()
    if pred.shape != true.shape:
        fail("mean_iou", f"pred and true must have the same size, got {pred.size} and {true.size}")
    confusion = np.bincount(true * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou
