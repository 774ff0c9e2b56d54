"""ResNet: a stem convolution, stages of basic residual blocks with BatchNorm, global average pooling and a
Dense head (He et al. 2016; by default the CIFAR form: 3x3 convolutions throughout, no max-pooling stem;
`TORCHVISION_RESNET18` is torchvision's ImageNet ResNet-18: a 7x7/2 stem, a 3x3/2 max pool, PyTorch's
symmetric padding, which `purenet.interop.load_resnet18` reads).

A basic block is relu(main(x) + shortcut(x)), main = conv3x3-BN-ReLU-conv3x3-BN, built as
`parallel(main=..., shortcut=..., merge="sum")`; the shortcut is the identity, or a projection (1x1
convolution + BN) where the block changes the stride or the width. Stage s > 0 opens with stride 2.
Convolutions before a BatchNorm have no bias. Shapes: x (N, H, W, C) -> logits (N, num_classes).
Named params: params["stem"]["conv"]["w"], params["stages"][s][b]["sum"]["main"]["conv1"]["w"],
params["stages"][s][b]["sum"]["shortcut"]["conv"]["w"] (projections only), params["head"]["w"]; BatchNorm
running statistics in `state` under the same names.
"""

from __future__ import annotations

from typing import NamedTuple

from purenet._checks import check_bool, check_choice, check_positive, fail
from purenet.combinators import identity, parallel, serial
from purenet.core import Layer
from purenet.layers import BatchNorm, Conv2D, Dense, GlobalAvgPool, MaxPool2D, Relu


class ResNetConfig(NamedTuple):
    """Widths and block counts per stage; the default (16, 32, 64) x 2 blocks is a ResNet-14 (CIFAR form)."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (2, 2, 2)
    num_classes: int = 10
    stem_strides: int = 1  # 2 halves the stem's output (28x28 -> 14x14): a quarter of the compute after it
    bn_momentum: float = 0.9  # BatchNorm's running statistics: new = momentum * old + (1 - momentum) * batch
    stem_kernel: int = 3  # torchvision: 7
    stem_pool: bool = False  # True: a 3x3 max pool of stride 2 (padding 1) after the stem, as torchvision's
    padding: str = "SAME"  # or "symmetric": k // 2 on both sides of every axis, as PyTorch's (stride 2 differs)
    bn_unbiased: bool = False  # the running variance takes the unbiased batch variance, as PyTorch's


TORCHVISION_RESNET18 = ResNetConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes=1000,
                                    stem_strides=2, stem_kernel=7, stem_pool=True, padding="symmetric",
                                    bn_unbiased=True)
"""torchvision's resnet18(): a 7x7/2 stem, a 3x3/2 max pool, four stages of two blocks, PyTorch's padding and
running variance, 1000 classes (`_replace` widths, blocks or num_classes for smaller ones)."""
_PADDINGS = ("SAME", "symmetric")


def _conv_bn(width: int, kernel: int, strides: int, momentum: float, padding: str = "SAME",
             unbiased: bool = False) -> dict:
    pads = "SAME" if padding == "SAME" else ((kernel // 2, kernel // 2),) * 2
    return dict(conv=Conv2D(width, kernel, strides=strides, padding=pads, use_bias=False),
                bn=BatchNorm(momentum=momentum, unbiased_running_var=unbiased))


def basic_block(width: int, *, strides: int = 1, project: bool = False, bn_momentum: float = 0.9,
                padding: str = "SAME", bn_unbiased: bool = False) -> Layer:
    """relu(conv3x3-BN-ReLU-conv3x3-BN (x) + shortcut(x)); the shortcut is 1x1 conv + BN with `project`,
    else the identity (then `strides` must be 1 and the input `width` wide). x (N, H, W, C) ->
    (N, ceil(H / strides), ceil(W / strides), width). `padding`, `bn_unbiased`: as `ResNetConfig`'s."""
    check_positive("basic_block", "width", width)
    check_positive("basic_block", "strides", strides)
    check_bool("basic_block", "project", project)
    check_choice("basic_block", "padding", padding, _PADDINGS)
    check_bool("basic_block", "bn_unbiased", bn_unbiased)
    if strides != 1 and not project:
        fail("basic_block", f"strides (={strides}) != 1 needs a projection shortcut (project=True)")
    options = dict(momentum=bn_momentum, padding=padding, unbiased=bn_unbiased)
    one, two = _conv_bn(width, 3, strides, **options), _conv_bn(width, 3, 1, **options)
    main = serial(conv1=one["conv"], bn1=one["bn"], act1=Relu(), conv2=two["conv"], bn2=two["bn"])
    shortcut = serial(**_conv_bn(width, 1, strides, **options)) if project else identity()
    return serial(sum=parallel(main=main, shortcut=shortcut, merge="sum"), act=Relu())


def resnet(config: ResNetConfig = ResNetConfig()) -> Layer:
    """The ResNet `config` describes: x (N, H, W, C) -> logits (N, num_classes). The stem is a
    stem_kernel x stem_kernel convolution to widths[0] + BN + ReLU (+ a 3x3/2 max pool with `stem_pool`);
    a block projects its shortcut where it changes the stride or the width (the first block of every
    stage but the first; the stem already has widths[0])."""
    widths = check_positive("resnet", "widths", config.widths)
    blocks = check_positive("resnet", "blocks", config.blocks)
    check_positive("resnet", "num_classes", config.num_classes)
    check_positive("resnet", "stem_strides", config.stem_strides)
    check_positive("resnet", "stem_kernel", config.stem_kernel)
    check_bool("resnet", "stem_pool", config.stem_pool)
    check_choice("resnet", "padding", config.padding, _PADDINGS)
    check_bool("resnet", "bn_unbiased", config.bn_unbiased)
    if len(widths) != len(blocks):
        fail("resnet", f"widths (={config.widths}) and blocks (={config.blocks}) need one entry per stage")
    momentum, options = config.bn_momentum, dict(padding=config.padding, bn_unbiased=config.bn_unbiased)
    stages, width_in = [], widths[0]
    for s, (width, count) in enumerate(zip(widths, blocks)):
        stage = []
        for b in range(count):
            strides = 2 if s > 0 and b == 0 else 1
            project = strides != 1 or width != width_in
            stage.append(basic_block(width, strides=strides, project=project, bn_momentum=momentum, **options))
            width_in = width
        stages.append(serial(*stage))
    stem = _conv_bn(widths[0], config.stem_kernel, config.stem_strides, momentum, config.padding,
                    config.bn_unbiased)
    stem = serial(**stem, act=Relu(), **({"pool": MaxPool2D(3, strides=2, padding=((1, 1), (1, 1)))}
                                           if config.stem_pool else {}))
    return serial(stem=stem, stages=serial(*stages), pool=GlobalAvgPool(), head=Dense(config.num_classes))
