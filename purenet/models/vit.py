"""MiniViT: a Vision Transformer (Dosovitskiy et al. 2021) for small images: non-overlapping patches
embedded by a strided convolution, a learned class token, learned positions, pre-LN encoder blocks, a
final LayerNorm and a Dense head on the class token.

Shapes: x (N, image_size, image_size, C) -> logits (N, num_classes); P = (image_size / patch_size)^2
patches, P + 1 tokens of d_model features. Named params: params["patches"]["w"] (p, p, C, F),
params["cls"]["token"] (F,), params["pos"]["w"] (P + 1, F), params["blocks"][i]["attn"]["w_q"], ...,
params["norm"]["gamma"], params["head"]["w"] (F, num_classes).
"""

from __future__ import annotations

from typing import NamedTuple

from purenet._checks import check_positive, fail
from purenet.combinators import serial
from purenet.core import Layer
from purenet.layers import Conv2D, Dense, Dropout, EncoderBlock, LayerNorm, LearnedPositions, Reshape
from purenet.layers.tokens import ClassToken, TokenAt


class ViTConfig(NamedTuple):
    """The hyperparameters of `vit` (the defaults: 4x4 patches of 28x28 images, 4 blocks of width 64; the
    MNIST experiment, experiments/vit_mnist.py, takes 7x7 patches)."""

    image_size: int = 28  # square images; a multiple of patch_size
    patch_size: int = 4
    d_model: int = 64
    layers: int = 4
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 2 * d_model
    num_classes: int = 10
    dropout: float = 0.0  # after the positions, on each sub-layer's output and inside the feed-forward
    activation: str = "gelu"  # "gelu_exact" for Hugging Face's ViT (`purenet.interop.load_vit`)
    eps: float = 1e-5  # the LayerNorms' epsilon (Hugging Face's ViT: 1e-12)


def vit(config: ViTConfig = ViTConfig()) -> Layer:
    """The MiniViT `config` describes: x (N, image_size, image_size, C) -> logits (N, num_classes)."""
    for name in ("image_size", "patch_size", "d_model", "layers", "heads", "num_classes"):
        check_positive("vit", name, getattr(config, name))
    if config.image_size % config.patch_size:
        fail("vit", f"image_size (={config.image_size}) must be a multiple of patch_size (={config.patch_size})")
    if config.d_model % config.heads:
        fail("vit", f"d_model (={config.d_model}) must be divisible by heads (={config.heads})")
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    blocks = [EncoderBlock(config.heads, config.hidden or 2 * config.d_model, pre_ln=True, dropout=config.dropout,
                           activation=config.activation, eps=config.eps) for _ in range(config.layers)]
    return serial(patches=Conv2D(config.d_model, config.patch_size, strides=config.patch_size),  # (N, h, w, F)
                  tokens=Reshape((-1, config.d_model)), cls=ClassToken(), pos=LearnedPositions(tokens),
                  drop=Dropout(config.dropout), blocks=serial(*blocks), norm=LayerNorm(eps=config.eps), take=TokenAt(0),
                  head=Dense(config.num_classes))
