"""MiniCLIP: contrastive image-text pre-training (Radford et al. 2021) in miniature: an image tower and a
causal text tower mapped into one space of unit vectors, a learnable temperature, and the symmetric
cross-entropy over a batch's image-text similarities.

Dimension letters: N images, M texts, H, W, C image size, L text positions, F text features (d_model),
E the joint embedding size. The model is a function of a structured input, `CLIPInput(image (N, H, W,
C), text (M, L))`, giving logits (N, M) = s u v^T, where u (N, E) and v (M, E) are the L2-normalized
embeddings and s = exp(clip(t, 0, log max_scale)) the inverse temperature, t a parameter initialised at
log(1 / 0.07). The towers (each a Layer with its own pullback) are:

    image: image_encoder (a small CNN by default: x -> (N, D)) -> Dense E (no bias) -> L2Normalize
    text:  w[ids] + learned positions -> causal pre-LN encoder blocks -> the features at each text's
           last token (right padding with pad_id is never attended to) -> LayerNorm -> Dense E -> L2Normalize

Params {"image": {"encoder", "proj", "unit"}, "text": {"embed": {"w": (V, F)}, "body": {"pos", "blocks"},
"head": {"norm", "proj", "unit"}}, "log_scale": ()}; state {"image": ..., "text": ...}.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_positive, check_range, fail, is_int
from purenet.combinators import serial, taped
from purenet.core import Layer, Loss
from purenet.layers import (Conv2D, Dense, EncoderBlock, Flatten, L2Normalize, LayerNorm, LearnedPositions,
                            MaxPool2D, Relu)
from purenet.losses import softmax_cross_entropy_with_targets
from purenet.ops import linear, linear_dw, lookup, lookup_dw, matmul_t


class CLIPInput(NamedTuple):
    """A batch of images (N, H, W, C) float and texts (M, L) int ids, right-padded with pad_id."""

    image: Any
    text: Any


class CLIPConfig(NamedTuple):
    """The hyperparameters of `clip`: the text vocabulary and tower, the default CNN, the joint space and
    the temperature's start and clamp."""

    vocab_size: int  # text token ids, pad_id included
    max_len: int = 16  # the most text positions (the learned position table)
    embed_dim: int = 64  # E, the joint space
    channels: tuple[int, ...] = (32, 64)  # the default image CNN: a 3x3 conv + ReLU + 2x2 max-pool per entry
    image_hidden: int = 128  # the CNN's dense layer (+ ReLU) after flattening
    text_layers: int = 2
    d_model: int = 64
    heads: int = 4
    hidden: int | None = None  # the text blocks' feed-forward width; None: 4 * d_model
    init_temperature: float = 0.07  # s starts at 1 / init_temperature
    max_scale: float = 100.0  # s is clamped to [1, max_scale]
    pad_id: int = 0


def cnn_encoder(channels=(32, 64), hidden: int = 128) -> Layer:
    """The default image encoder: per entry of `channels` a 3x3 SAME convolution + ReLU + 2x2 max-pool,
    then flatten, Dense `hidden` + ReLU. x (N, H, W, C) -> (N, hidden); children conv0, act0, pool0, ..."""
    check_positive("cnn_encoder", "channels", channels)
    check_positive("cnn_encoder", "hidden", hidden)
    stages = {}
    for i, c in enumerate(channels):
        stages |= {f"conv{i}": Conv2D(c, 3, padding="SAME"), f"act{i}": Relu(), f"pool{i}": MaxPool2D(2)}
    return serial(**stages, flatten=Flatten(), dense=Dense(hidden), act=Relu())


def _text_tower(config: CLIPConfig) -> Layer:
    """ids (M, L) -> unit vectors (M, E): module docstring. A text's last token is its last id that is
    not pad_id (position 0 for an all-padding row); causal attention keeps padding after it unseen."""
    name, V, F, pad = "CLIPTextTower", config.vocab_size, config.d_model, config.pad_id
    blocks = [EncoderBlock(config.heads, config.hidden or 4 * F, is_causal=True) for _ in range(config.text_layers)]
    body = serial(pos=LearnedPositions(config.max_len), blocks=serial(*blocks))  # (M, L, F)
    head = serial(norm=LayerNorm(), proj=Dense(config.embed_dim, use_bias=False), unit=L2Normalize())  # (M, E)

    def init(key, in_shape):
        if len(in_shape) != 2:
            fail(name, f"expected text ids of rank 2 (M, L), got shape {tuple(in_shape)}")
        k_embed, k_body, k_head = jax.random.split(key, 3)
        _, p_body, s_body = body.init(k_body, (*in_shape, F))
        out_shape, p_head, s_head = head.init(k_head, (in_shape[0], F))
        params = {"embed": {"w": initializers.normal(0.02)(k_embed, (V, F), jnp.float32)}, "body": p_body,
                  "head": p_head}
        return out_shape, params, {"body": s_body, "head": s_head}

    def last_token(ids):  # (M, L) -> one-hot of each text's last token (M, L, 1)
        last = jnp.maximum(jnp.sum(ids != pad, axis=1) - 1, 0)  # (M,)
        return jax.nn.one_hot(last, ids.shape[1], dtype=bool)[:, :, None]

    def check(ids):
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            fail(name, f"expected integer text ids of shape (M, L), got {ids.dtype} {tuple(ids.shape)}")

    def forward(tape, ids):  # -> (v (M, E), ids)
        check(ids)
        h = tape("body", body, lookup(tape.params["embed"]["w"], ids))  # (M, L, F)
        return tape("head", head, jnp.sum(jnp.where(last_token(ids), h, 0), axis=1)), ids  # g: (M, F)

    # dh = dg at each text's last token, 0 elsewhere; dw = the lookup's scatter of the body's input
    # cotangent to the rows of ids. Residuals: ids and the sub-layers' own.
    def backward(back, ids, dv):
        dg = back("head", dv)  # (M, F)
        de = back("body", jnp.where(last_token(ids), dg[:, None, :], 0))  # (M, L, F)
        return None, {"embed": {"w": lookup_dw(ids, de, V)}}

    return taped(name, init, forward, backward)


def clip(config: CLIPConfig, *, image_encoder: Layer | None = None) -> Layer:
    """The two-tower model `config` describes (module docstring): CLIPInput(image (N, H, W, C), text
    (M, L)) -> logits (N, M). `image_encoder` maps images to features (N, D) (default: `cnn_encoder(
    config.channels, config.image_hidden)`). dx is CLIPInput(d image, None).

    The clamp enters the gradient as jnp.clip's does: dt = sum(dlogits * u v^T) s where 0 <= t <=
    log(max_scale), 0 outside (a temperature pushed past the clamp stays there, at the clamp's value)."""
    name = "MiniCLIP"
    for field in ("vocab_size", "max_len", "embed_dim", "text_layers", "d_model", "heads"):
        check_positive(name, field, getattr(config, field))
    check_range(name, "init_temperature", config.init_temperature, lambda v: 0 < v <= 1, "in (0, 1]")
    check_range(name, "max_scale", config.max_scale, lambda v: 1 / config.init_temperature <= v < math.inf,
                f">= 1 / init_temperature (={1 / config.init_temperature:g}) and finite")
    if config.d_model % config.heads:
        fail(name, f"d_model (={config.d_model}) must be divisible by heads (={config.heads})")
    if not (is_int(config.pad_id) and 0 <= config.pad_id < config.vocab_size):
        fail(name, f"pad_id must be an id in [0, vocab_size={config.vocab_size}), got pad_id={config.pad_id!r}")
    if image_encoder is None:
        image_encoder = cnn_encoder(config.channels, config.image_hidden)
    elif not isinstance(image_encoder, Layer):
        fail(name, f"image_encoder must be a Layer, got {image_encoder!r}")
    towers = {"image": serial(encoder=image_encoder, proj=Dense(config.embed_dim, use_bias=False), unit=L2Normalize()),
              "text": _text_tower(config)}
    upper = math.log(config.max_scale)

    def init(key, in_shape):
        if not isinstance(in_shape, (tuple, list)) or len(in_shape) != 2:
            fail(name, f"expects in_shape CLIPInput((N, H, W, C), (M, L)), got {in_shape}")
        params, state = {}, {}
        for k, (part, tower), shape in zip(jax.random.split(key), towers.items(), in_shape):
            _, params[part], state[part] = tower.init(k, tuple(shape))
        params["log_scale"] = jnp.asarray(math.log(1 / config.init_temperature), jnp.float32)
        return (in_shape[0][0], in_shape[1][0]), params, state

    def parts(x):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            fail(name, f"expects CLIPInput(image (N, H, W, C), text (M, L)), got {type(x).__name__}")
        return dict(zip(towers, x))

    def scale(params):  # s = exp(clip(t, 0, log max_scale)) and whether t is inside the clamp
        t = params["log_scale"]
        return jnp.exp(jnp.clip(t, 0, upper)), (t >= 0) & (t <= upper)

    def forward(tape, x):
        inputs = parts(x)
        u, v = tape("image", towers["image"], inputs["image"]), tape("text", towers["text"], inputs["text"])
        s, inside = scale(tape.params)
        sim = matmul_t(u, v)  # u v^T: (N, M)
        return s * sim, (x, u, v, s, inside, sim)

    # d sim = s dlogits; du = d sim v; dv = d sim^T u; dt = sum(dlogits * sim) s [0 <= t <= log max_scale].
    # Residuals: u, v, s and the towers' own.
    def backward(back, saved, dlogits):
        x, u, v, s, inside, sim = saved
        dsim = s * dlogits  # (N, M)
        dimage = back("image", linear(dsim, v))  # (N, E) in
        back("text", linear_dw(dsim, u))  # (M, E) in
        dx = type(x)(dimage, None) if hasattr(x, "_fields") else type(x)((dimage, None))
        return dx, {"log_scale": jnp.where(inside, jnp.sum(dlogits * sim) * s, 0).astype(s.dtype)}

    return taped(name, init, forward, backward)


def clip_loss() -> Loss:
    """The symmetric cross-entropy of CLIP over a batch's logits (N, N) (image i, text i a pair),
    with labels (N,) int saying which pairs match: image i's target is spread evenly over the texts j
    with labels[j] == labels[i] (itself included), and text j's over those images. Distinct labels
    (jnp.arange(N)) give CLIP's loss; equal labels (two images of one digit) are then both positives,
    not each other's negatives. Value: (ce(rows) + ce(columns)) / 2, each a mean over N."""
    name, cross_entropy = "CLIPLoss", softmax_cross_entropy_with_targets()

    # dlogits = (pullback_rows(g) + pullback_columns(g)^T) / 2, each (softmax - targets) g / N (the
    # targets' rows sum to 1). Residuals: those of the two cross-entropies.
    def vjp(logits, labels):
        labels = jnp.asarray(labels)
        if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
            fail(name, f"expected square logits (N, N) of N image-text pairs, got shape {tuple(logits.shape)}")
        if labels.shape != logits.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
            fail(name, f"expected integer labels of shape ({logits.shape[0]},), got {labels.dtype} "
                       f"{tuple(labels.shape)}")
        same = (labels[:, None] == labels[None, :]).astype(logits.dtype)  # (N, N), symmetric
        targets = same / jnp.sum(same, axis=1, keepdims=True)  # (N, N): rows for images and for texts
        rows, rows_pullback = cross_entropy.vjp(logits, targets)
        columns, columns_pullback = cross_entropy.vjp(logits.T, targets)

        def pullback(g):
            return (rows_pullback(g) + columns_pullback(g).T) / 2  # (N, N)

        return (rows + columns) / 2, pullback

    return Loss(lambda logits, labels: vjp(logits, labels)[0], vjp, name)
