"""ResNet-18 as torchvision's `resnet18()`, in and out of `purenet.models.resnet`.

The reference: a 7x7/2 stem convolution (padding 3), BatchNorm, ReLU, a 3x3/2 max pool (padding 1),
four stages of BasicBlocks (the first block of stages 2-4 strides by 2 with a 1x1/2 projection shortcut,
`downsample`), BatchNorm eps 1e-5 and momentum 0.1 (purenet's 0.9) with an unbiased running variance,
global average pooling and `fc`. Images are NHWC here and NCHW there (kernels transposed on the way).
Widths, block counts and classes come from the file, so a ResNet-34's BasicBlocks read too. The running
statistics go to `state`; `num_batches_tracked` is not used (a fixed momentum) and is written as 0.
"""

from __future__ import annotations

import numpy as np

from purenet.interop import _tensors as t
from purenet.models.resnet import TORCHVISION_RESNET18, ResNetConfig, resnet

_OWNER = "load_resnet18"
_BN = {"weight": ("params", "gamma"), "bias": ("params", "beta"), "running_mean": ("state", "mean"),
       "running_var": ("state", "var")}


def _conv_bn(conv: str, bn: str, path: tuple, conv_key: str, bn_key: str) -> list:
    entries = [t.Entry(f"{conv}.weight", ("params", *path, conv_key, "w"), "conv")]
    return entries + [t.Entry(f"{bn}.{name}", (tree, *path, bn_key, leaf)) for name, (tree, leaf) in _BN.items()]


def _blocks(config: ResNetConfig):
    """-> [(stage s, block b, projects)] of torchvision's names layer{s + 1}.{b}."""
    width_in, out = config.widths[0], []
    for s, (width, count) in enumerate(zip(config.widths, config.blocks)):
        for b in range(count):
            out.append((s, b, (s > 0 and b == 0) or width != width_in))
            width_in = width
    return out


def _entries(config: ResNetConfig) -> list:
    entries = _conv_bn("conv1", "bn1", ("stem",), "conv", "bn")
    for s, b, project in _blocks(config):
        name, path = f"layer{s + 1}.{b}", ("stages", s, b, "sum")
        entries += _conv_bn(f"{name}.conv1", f"{name}.bn1", (*path, "main"), "conv1", "bn1")
        entries += _conv_bn(f"{name}.conv2", f"{name}.bn2", (*path, "main"), "conv2", "bn2")
        if project:
            entries += _conv_bn(f"{name}.downsample.0", f"{name}.downsample.1", (*path, "shortcut"), "conv", "bn")
    return entries + [t.Entry("fc.weight", ("params", "head", "w"), "linear"),
                      t.Entry("fc.bias", ("params", "head", "b"))]


def _config(shapes: dict, reference: dict, overrides: dict) -> ResNetConfig:
    del reference, overrides
    stages = 0
    while any(name.startswith(f"layer{stages + 1}.") for name in shapes):
        stages += 1
    if not stages:
        t.fail(_OWNER, "the file has no tensor layer1.*: not a torchvision ResNet")
    blocks = tuple(t.count(shapes, rf"layer{s + 1}\.{{i}}\..*") for s in range(stages))
    widths = tuple(t.shape_of(_OWNER, shapes, f"layer{s + 1}.0.conv1.weight")[0] for s in range(stages))
    if any(f"layer{s + 1}.0.conv3.weight" in shapes for s in range(stages)):
        t.fail(_OWNER, "the file holds Bottleneck blocks (conv3): only BasicBlock ResNets (18, 34) are supported")
    return TORCHVISION_RESNET18._replace(widths=widths, blocks=blocks,
                                         num_classes=t.shape_of(_OWNER, shapes, "fc.weight")[0])


def _in_shape(config: ResNetConfig, shapes: dict) -> tuple:
    return (2, 64, 64, shapes["conv1.weight"][1])


def _reference_config(config: ResNetConfig, shapes: dict) -> dict:
    if (config.stem_kernel, config.stem_strides, config.stem_pool, config.padding, config.bn_unbiased) != (
            7, 2, True, "symmetric", True):
        t.fail("save_resnet18", "torchvision's ResNet has the stem and padding of TORCHVISION_RESNET18, got "
                                f"{config}")
    return {"architecture": "torchvision.models.ResNet", "block": "BasicBlock", "layers": list(config.blocks),
            "widths": list(config.widths), "num_classes": config.num_classes, "in_channels": shapes["conv1.weight"][1]}


def _extra(config: ResNetConfig) -> dict:
    names = ["bn1"] + [f"layer{s + 1}.{b}.{bn}" for s, b, project in _blocks(config)
                       for bn in ("bn1", "bn2", *(("downsample.1",) if project else ()))]
    return {f"{name}.num_batches_tracked": np.zeros((), np.int64) for name in names}


RESNET18 = t.Family(_OWNER, lambda name: name, _config, resnet, _in_shape, _entries, _reference_config,
                    buffers=lambda name: name.endswith(".num_batches_tracked"), extra=_extra)
"""ResNet-18's `Family`: the table between torchvision's `state_dict()` names and `resnet`'s params and state."""


def resnet18_config(path) -> ResNetConfig:
    """The `ResNetConfig` of a torchvision ResNet safetensors file (`TORCHVISION_RESNET18` with the
    file's widths, block counts and classes)."""
    return t.read_config(RESNET18, path)


def load_resnet18(path, *, ignore=(), dtype=None):
    """-> (model, params, state): `purenet.models.resnet` with torchvision's ResNet-18 weights and running
    statistics from `path` (a safetensors file of its `state_dict()`); images (N, H, W, C) here where
    torchvision takes (N, C, H, W). Options as `load_gpt2`'s."""
    return t.load(RESNET18, path, ignore=ignore, dtype=dtype)


def save_resnet18(path, params, state, config: ResNetConfig) -> None:
    """Write `params` and the running statistics in `state` under torchvision's `state_dict()` names to
    `path`, atomically, with `num_batches_tracked` = 0, so `model.load_state_dict(...)` takes it whole."""
    t.save(RESNET18, path, params, state, config)
