"""ViT as Hugging Face's `ViTForImageClassification`, in and out of `purenet.models.vit`.

The reference: a patch convolution (kernel = stride = patch size, with bias), a class token, learned
positions, pre-LN blocks with the exact GELU, LayerNorm eps 1e-12, a final LayerNorm and a linear
classifier on the class token. Images are NHWC here and NCHW there: the convolution's kernel is
transposed on the way, and the patches are read in the same (row-major) order. Names are
`ViTForImageClassification.state_dict()`'s.
"""

from __future__ import annotations

import math

from purenet.interop import _tensors as t
from purenet.models.vit import ViTConfig, vit

_OWNER = "load_vit"
_PATCHES = "vit.embeddings.patch_embeddings.projection.weight"
_LAYER = {"attention.attention.query": ("attn", "q"), "attention.attention.key": ("attn", "k"),
          "attention.attention.value": ("attn", "v"), "attention.output.dense": ("attn", "o"),
          "intermediate.dense": ("ff", "in"), "output.dense": ("ff", "out")}
_NORMS = {"layernorm_before": "norm1", "layernorm_after": "norm2"}


def _entries(config: ViTConfig) -> list:
    p, e = ("params",), "vit.embeddings."
    entries = [t.Entry(e + "cls_token", (*p, "cls", "token"), "lead2"),
               t.Entry(e + "position_embeddings", (*p, "pos", "w"), "lead1"),
               t.Entry(e + "patch_embeddings.projection.weight", (*p, "patches", "w"), "conv"),
               t.Entry(e + "patch_embeddings.projection.bias", (*p, "patches", "b"))]
    for i in range(config.layers):
        block, name = (*p, "blocks", i), f"vit.encoder.layer.{i}."
        for part, (child, suffix) in _LAYER.items():
            entries += [t.Entry(f"{name}{part}.weight", (*block, child, "w_" + suffix), "linear"),
                        t.Entry(f"{name}{part}.bias", (*block, child, "b_" + suffix))]
        for part, norm in _NORMS.items():
            entries += [t.Entry(f"{name}{part}.weight", (*block, norm, "gamma")),
                        t.Entry(f"{name}{part}.bias", (*block, norm, "beta"))]
    return entries + [t.Entry("vit.layernorm.weight", (*p, "norm", "gamma")),
                      t.Entry("vit.layernorm.bias", (*p, "norm", "beta")),
                      t.Entry("classifier.weight", (*p, "head", "w"), "linear"),
                      t.Entry("classifier.bias", (*p, "head", "b"))]


def _config(shapes: dict, reference: dict, overrides: dict) -> ViTConfig:
    d_model, _, patch, _ = t.shape_of(_OWNER, shapes, _PATCHES)
    tokens = t.shape_of(_OWNER, shapes, "vit.embeddings.position_embeddings")[1]
    side = math.isqrt(tokens - 1)
    if side * side != tokens - 1:
        t.fail(_OWNER, f"position_embeddings has {tokens} rows: not 1 + a square number of patches")
    if not reference.get("qkv_bias", True):
        t.fail(_OWNER, "qkv_bias=False is not supported (purenet's attention has biases on q, k, v and out)")
    return ViTConfig(image_size=side * patch, patch_size=patch, d_model=d_model,
                     layers=t.count(shapes, r"vit\.encoder\.layer\.{i}\..*"),
                     heads=int(t.setting(_OWNER, reference, overrides, "heads", "num_attention_heads")),
                     hidden=t.shape_of(_OWNER, shapes, "vit.encoder.layer.0.intermediate.dense.weight")[0],
                     num_classes=t.shape_of(_OWNER, shapes, "classifier.weight")[0],
                     activation=t.activation(_OWNER, reference.get("hidden_act", "gelu")),
                     eps=float(t.setting(_OWNER, reference, overrides, "eps", "layer_norm_eps", 1e-12)))


def _reference_config(config: ViTConfig, shapes: dict) -> dict:
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": config.d_model,
            "num_hidden_layers": config.layers, "num_attention_heads": config.heads,
            "intermediate_size": config.hidden or 2 * config.d_model,
            "hidden_act": t.reference_activation(config.activation), "layer_norm_eps": config.eps,
            "image_size": config.image_size, "patch_size": config.patch_size, "num_channels": shapes[_PATCHES][1],
            "qkv_bias": True, "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": 0.0,
            "id2label": {str(i): f"LABEL_{i}" for i in range(config.num_classes)},
            "label2id": {f"LABEL_{i}": i for i in range(config.num_classes)}}


def _in_shape(config: ViTConfig, shapes: dict) -> tuple:
    return (1, config.image_size, config.image_size, shapes[_PATCHES][1])


VIT = t.Family(_OWNER, lambda name: name, _config, vit, _in_shape, _entries, _reference_config)
"""ViT's `Family`: the table between `ViTForImageClassification`'s tensor names and `vit`'s params."""


def vit_config(path, *, heads: int | None = None) -> ViTConfig:
    """The `ViTConfig` of a ViT safetensors file: sizes from its tensors' shapes (image size from the
    position table and the patch size), the head count and eps from its metadata or config.json."""
    return t.read_config(VIT, path, overrides={"heads": heads})


def load_vit(path, *, heads: int | None = None, ignore=(), dtype=None):
    """-> (model, params, state): `purenet.models.vit` with `ViTForImageClassification`'s weights from
    `path`; images (N, H, W, C) here where the reference takes (N, C, H, W). Options as `load_gpt2`'s."""
    return t.load(VIT, path, overrides={"heads": heads}, ignore=ignore, dtype=dtype)


def save_vit(path, params, state, config: ViTConfig, *, config_json: bool = False) -> None:
    """Write `params` under `ViTForImageClassification`'s names to `path`, atomically, Hugging Face's
    config in its metadata (and in config.json beside it with `config_json`)."""
    t.save(VIT, path, params, state, config, config_json=config_json)
