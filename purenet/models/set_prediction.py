"""What the set-prediction models (MiniDETR, MiniMaskFormer) share: a CNN backbone that keeps every
stage's output, a Transformer that turns a feature map into per-query features (learned object queries
read the encoded map through decoder blocks), Hungarian matching (scipy, outside the jitted step), the
class targets a matching gives, and the matching a training step runs between a jitted prediction and the
jitted gradient step (`hungarian_targets`, for `purenet.training.matched`).

Dimension letters: N batch, H W a feature map, C channels, S = H W memory tokens, F features (d_model),
Q queries, L decoder layers (every layer's output is kept: DETR's auxiliary outputs, the last one is
the prediction), M ground-truth objects (padded), K classes (index K: no object).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import check_int, check_positive, check_range, fail
from purenet.combinators import serial, taped
from purenet.core import Layer, tree_add
from purenet.layers import (Conv2D, DecoderBlock, Dense, Dropout, EncoderBlock, LayerNorm, LearnedPositions,
                            MaxPool2D, Relu, Reshape)


def cnn_backbone(channels, *, convs: int = 1) -> Layer:
    """Stages of (3x3 'SAME' convolution + ReLU) x `convs`, then 2x2 max pooling, one stage per entry of
    `channels`; every stage's output is kept (a feature pyramid).

    Shapes: x (N, H, W, C_in) -> a tuple of (N, H / 2^i, W / 2^i, channels[i - 1]), i = 1..len(channels).
    Params: a tuple of each stage's {"conv1", "act1", ..., "pool"}; state: a tuple of the stages' (empty)
    states. The pullback takes a tuple of cotangents with None at a stage whose output is not used."""
    channels = check_positive("cnn_backbone", "channels", channels)
    check_int("cnn_backbone", "convs", convs, 1)
    stages = []
    for c in channels:
        parts = {}
        for j in range(1, convs + 1):
            parts[f"conv{j}"], parts[f"act{j}"] = Conv2D(c, 3, padding="SAME"), Relu()
        stages.append(serial(**parts, pool=MaxPool2D(2)))

    def init(key, in_shape):
        if len(in_shape) != 4:
            fail("cnn_backbone", f"expected images (N, H, W, C), got in_shape {tuple(in_shape)}")
        shapes, params, states = [], [], []
        shape = tuple(in_shape)
        for stage, k in zip(stages, jax.random.split(key, len(stages))):
            shape, p, s = stage.init(k, shape)
            shapes.append(shape)
            params.append(p)
            states.append(s)
        return tuple(shapes), tuple(params), tuple(states)

    def forward(tape, x):  # -> (every stage's output, x)
        features, h = [], x
        for i, stage in enumerate(stages):
            h = tape(i, stage, h)
            features.append(h)
        return tuple(features), x

    # From the last stage down: each stage's dy is the cotangent arriving at its output plus what the
    # stage above passed down; a stage nothing above uses gets zero dparams. Residuals: the stages' own.
    def backward(back, x, dfeatures):
        d = None
        for i in reversed(range(len(stages))):
            d = back(i, tree_add(d, dfeatures[i]))  # None: nothing above uses this stage
        return (jnp.zeros_like(x) if d is None else d), {}

    return taped("CNNBackbone", init, forward, backward)


def grid_positions(side: int, features: int) -> np.ndarray:
    """A 2-D sine table for a side x side map flattened row by row: per axis, sin and cos of the row
    (or column) index at F // 4 wavelengths from 2 to 4 * side cells (zeros pad F to a multiple of 4).
    -> (side * side, features) float32."""
    quarter = features // 4
    omega = 2 * np.pi / np.geomspace(2, 4 * side, quarter) if quarter else np.zeros(0)  # (F // 4,)
    angle = np.arange(side)[:, None] * omega[None, :]  # (side, F // 4)
    axis = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)  # (side, 2 (F // 4))
    rows, cols = np.repeat(axis, side, axis=0), np.tile(axis, (side, 1))  # (side * side, 2 (F // 4)) each
    table = np.concatenate([rows, cols, np.zeros((side * side, features - 4 * quarter))], axis=1)
    return table.astype(np.float32)


def query_decoder(*, queries: int, memory_side: int, d_model: int, heads: int, hidden: int, encoder_layers: int,
                  decoder_layers: int, dropout: float = 0.0) -> Layer:
    """A feature map read by learned object queries (DETR's Transformer, pre-LN).

    memory = `encoder_layers` encoder blocks (then a LayerNorm) over the map projected to F = d_model,
    flattened to S = H W tokens (H = W = memory_side), plus learned positions initialized to a 2-D sine
    table (`grid_positions`); `queries` learned vectors (Q, F) go through `decoder_layers` decoder blocks
    (self-attention among the queries, not causal, then cross-attention to the memory), each block's
    output normalized by one shared LayerNorm. Shapes: features (N, H, W, C) -> (N, L, Q, F).
    Params {"memory": {"proj", "flat", "pos", "drop", ["blocks", "out"]}, "queries": {"w": (Q, F)},
    "decoder": (block params, ...), "norm"}; state {"memory": the memory part's (empty) state}."""
    name = "QueryDecoder"
    for what, value in (("queries", queries), ("memory_side", memory_side), ("d_model", d_model),
                        ("heads", heads), ("hidden", hidden), ("decoder_layers", decoder_layers)):
        check_positive(name, what, value)
    check_int(name, "encoder_layers", encoder_layers, 0)
    if d_model % heads:
        fail(name, f"d_model (={d_model}) must be divisible by heads (={heads})")
    block = dict(dropout=dropout)
    table = grid_positions(memory_side, d_model)
    positions = LearnedPositions(memory_side ** 2, w_init=lambda key, shape, dtype: jnp.asarray(table, dtype))
    parts = dict(proj=Dense(d_model), flat=Reshape((-1, d_model)), pos=positions,
                 drop=Dropout(dropout))
    if encoder_layers:
        parts.update(blocks=serial(*[EncoderBlock(heads, hidden, **block) for _ in range(encoder_layers)]),
                     out=LayerNorm())
    memory_layer = serial(**parts)
    blocks = [DecoderBlock(heads, hidden, is_causal=False, **block) for _ in range(decoder_layers)]
    norm = LayerNorm()

    def init(key, in_shape):
        if len(in_shape) != 4 or tuple(in_shape[1:3]) != (memory_side, memory_side):
            fail(name, f"expected a feature map (N, {memory_side}, {memory_side}, C), got in_shape "
                       f"{tuple(in_shape)}")
        n = in_shape[0]
        k_mem, k_q, k_dec = jax.random.split(key, 3)
        memory_shape, p_memory, s_memory = memory_layer.init(k_mem, tuple(in_shape))
        q_shape = (n, queries, d_model)
        params = {"memory": p_memory,
                  "queries": {"w": jax.random.normal(k_q, (queries, d_model), jnp.float32)},
                  "decoder": tuple(b.init(k, (q_shape, memory_shape))[1]
                                   for b, k in zip(blocks, jax.random.split(k_dec, decoder_layers))),
                  "norm": norm.init(key, q_shape)[1]}
        return (n, decoder_layers, queries, d_model), params, {"memory": s_memory}

    def forward(tape, x):  # -> every block's normalized output, stacked: (N, L, Q, F)
        memory = tape("memory", memory_layer, x)
        w = tape.params["queries"]["w"]
        h, outs = jnp.broadcast_to(w[None], (x.shape[0], *w.shape)), []  # (N, Q, F)
        for i, block in enumerate(blocks):
            h, _ = tape(("decoder", i), block, (h, memory))
            outs.append(tape("norm", norm, h))  # one LayerNorm shared by every block
        return jnp.stack(outs, axis=1), None

    # Blocks in reverse: a block's dy is its norm's dx (from dy[:, l]) plus the block above's dx; the
    # memory's cotangent accumulates through every block (DecoderBlock adds its own to the one given);
    # dnorm sums over the blocks; dqueries = the first block's dx summed over N. Residuals: the
    # sub-layers' own.
    def backward(back, _, dy):
        dh, dmemory = None, None
        for i in reversed(range(decoder_layers)):
            dh = tree_add(dh, back("norm", dy[:, i]))
            dh, dmemory = back(("decoder", i), (dh, dmemory))
        return back("memory", dmemory), {"queries": {"w": jnp.sum(dh, axis=0)}}

    return taped(name, init, forward, backward)


def check_config(name: str, config) -> int:
    """Validate the fields DETRConfig and MaskFormerConfig share. -> the memory's side H = W."""
    for field in ("num_classes", "image_size", "convs", "d_model", "heads", "decoder_layers", "queries"):
        check_positive(name, field, getattr(config, field))
    check_positive(name, "channels", config.channels)
    check_int(name, "encoder_layers", config.encoder_layers, 0)
    check_range(name, "dropout", config.dropout, lambda r: 0 <= r < 1, "in [0, 1)")
    if config.image_size % 2 ** len(config.channels):
        fail(name, f"image_size (={config.image_size}) must be divisible by 2 ** len(channels) "
                   f"(={2 ** len(config.channels)})")
    if config.d_model % config.heads:
        fail(name, f"d_model (={config.d_model}) must be divisible by heads (={config.heads})")
    return config.image_size // 2 ** len(config.channels)


def check_images(name: str, config, in_shape) -> None:
    """Fail unless in_shape is images (N, image_size, image_size, C)."""
    if len(in_shape) != 4 or tuple(in_shape[1:3]) != (config.image_size,) * 2:
        fail(name, f"expected images (N, {config.image_size}, {config.image_size}, C), got in_shape "
                   f"{tuple(in_shape)}")


def backbone_and_decoder(name: str, config) -> tuple[Layer, Layer]:
    """The backbone and the query decoder a DETRConfig or MaskFormerConfig describes, the config checked
    first (both models build them alike)."""
    side = check_config(name, config)
    backbone = cnn_backbone(config.channels, convs=config.convs)
    transformer = query_decoder(queries=config.queries, memory_side=side, d_model=config.d_model,
                                heads=config.heads, hidden=config.hidden or 4 * config.d_model,
                                encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
                                dropout=config.dropout)
    return backbone, transformer



# ------------------------------------------------------------------------------------------ matching


def hungarian_match(cost: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The assignment of ground-truth objects to queries of least total cost, per set (scipy's
    `linear_sum_assignment`, from the `zoo` extra, on the host: call it outside jit). cost (..., Q, M) with the first
    counts[...] columns real, counts (...) ints <= Q -> (..., Q) int32: the object each query is matched
    to, -1 for a query left to "no object"."""
    try:
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 (the zoo extra: needed here only)
    except ImportError:
        fail("hungarian_match", "Hungarian matching needs scipy, which the set-prediction models' extra "
                                "installs: pip install purenet[zoo]", ImportError)

    cost, counts = np.asarray(cost, np.float64), np.asarray(counts)
    if cost.ndim < 2 or counts.shape != cost.shape[:-2]:
        fail("hungarian_match", f"expected cost (..., Q, M) and counts of shape cost.shape[:-2], got "
                                f"{cost.shape} and {counts.shape}")
    if counts.size and (counts.min() < 0 or counts.max() > min(cost.shape[-2:])):
        fail("hungarian_match", f"counts must be in [0, min(Q, M)] (={min(cost.shape[-2:])}), got "
                                f"[{counts.min()}, {counts.max()}]")
    flat_cost, flat_counts = cost.reshape(-1, *cost.shape[-2:]), counts.reshape(-1)
    assignment = np.full(flat_cost.shape[:2], -1, np.int32)
    for i, (c, m) in enumerate(zip(flat_cost, flat_counts)):
        rows, cols = linear_sum_assignment(c[:, :m])
        assignment[i, rows] = cols
    return assignment.reshape(cost.shape[:-1])


def class_targets(assignment: np.ndarray, classes: np.ndarray, num_classes: int, no_object_weight: float,
                  layer_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a matching asks of each query. assignment (N, L, Q) from `hungarian_match`, classes (N, M)
    ground truth (-1 past the count), layer_weights (L,) (0 for a layer left out of the loss).
    -> (labels (N, L, Q) int32: the matched class, or num_classes (no object); class_weights (N, L, Q):
    1 for a matched query, `no_object_weight` for the others, divided by their sum over a layer's
    (N, Q) and times the layer's weight (DETR's weighted cross-entropy, per layer); match_weights
    (N, L, Q): 1 / (objects in the batch) for a matched query, 0 for the others, times the layer's
    weight (the normalization of the box and mask losses))."""
    matched = assignment >= 0  # (N, L, Q)
    picked = np.take_along_axis(classes[:, None, :], np.maximum(assignment, 0), axis=2)  # (N, L, Q)
    labels = np.where(matched, picked, num_classes).astype(np.int32)
    weights = np.where(matched, 1.0, no_object_weight)
    layer = np.asarray(layer_weights, np.float64)[None, :, None]  # (1, L, 1)
    class_weights = weights / weights.sum(axis=(0, 2), keepdims=True) * layer
    match_weights = matched / max(int(np.sum(classes >= 0)), 1) * layer
    return labels, class_weights.astype(np.float32), match_weights.astype(np.float32)


def matched(assignment: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each query's matched ground truth: assignment (N, L, Q), truth (N, M, ...) -> (N, L, Q, ...), the
    first object's where a query is unmatched (its weight is 0)."""
    index = np.maximum(assignment, 0)  # (N, L, Q)
    return truth[np.arange(len(truth))[:, None, None], index]


def layer_weights(decoder_layers: int, aux: bool) -> np.ndarray:
    """Every decoder layer's loss counts with `aux` (DETR's auxiliary losses), else only the last's."""
    weights = np.ones(decoder_layers) if aux else np.eye(decoder_layers)[-1]
    return weights.astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """softmax over the last axis, in numpy (the host side of the matching)."""
    e = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def class_cost(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """-p(class) of each (query, object) pair, DETR's class cost, in numpy: logits (N, L, Q, K + 1),
    classes (N, M) ints (any value past the count) -> (N, L, Q, M)."""
    index = np.broadcast_to(np.maximum(classes, 0)[:, None, None, :], (*logits.shape[:3], classes.shape[1]))
    return -np.take_along_axis(softmax(np.asarray(logits, np.float64)), index, axis=-1)


def hungarian_targets(cost: Callable, targets: Callable) -> Callable:
    """The host side of a set-prediction training step (`purenet.training.matched.make_matched_step`'s
    `match`): `cost(outputs, truth) -> (N, L, Q, M)`, `hungarian_match` per decoder layer over `truth.counts`
    (N,), then `targets(assignment, truth)`. -> match(outputs, truth) -> the loss's target."""

    def match(outputs, truth):
        cost_matrix = cost(outputs, truth)  # (N, L, Q, M)
        counts = np.broadcast_to(np.asarray(truth.counts)[:, None], cost_matrix.shape[:2])
        return targets(hungarian_match(cost_matrix, counts), truth)

    return match
