"""ResNet: a stem convolution, stages of basic residual blocks with BatchNorm, global average pooling and a
Dense head (He et al. 2016, the CIFAR form: 3x3 convolutions throughout, no max-pooling stem).

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

from purenet._checks import check_bool, check_positive, fail
from purenet.combinators import identity, parallel, serial
from purenet.core import Layer
from purenet.layers import BatchNorm, Conv2D, Dense, GlobalAvgPool, Relu


class ResNetConfig(NamedTuple):
    """Widths and block counts per stage; the default (16, 32, 64) x 2 blocks is a ResNet-14 (CIFAR form)."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (2, 2, 2)
    num_classes: int = 10
    stem_strides: int = 1  # 2 halves the stem's output (28x28 -> 14x14): a quarter of the compute after it
    bn_momentum: float = 0.9  # BatchNorm's running statistics: new = momentum * old + (1 - momentum) * batch


def _conv_bn(width: int, kernel: int, strides: int, momentum: float) -> dict:
    return dict(conv=Conv2D(width, kernel, strides=strides, padding="SAME", use_bias=False),
                bn=BatchNorm(momentum=momentum))


def basic_block(width: int, *, strides: int = 1, project: bool = False, bn_momentum: float = 0.9) -> Layer:
    """relu(conv3x3-BN-ReLU-conv3x3-BN (x) + shortcut(x)); the shortcut is 1x1 conv + BN with `project`,
    else the identity (then `strides` must be 1 and the input `width` wide). x (N, H, W, C) ->
    (N, ceil(H / strides), ceil(W / strides), width)."""
    check_positive("basic_block", "width", width)
    check_positive("basic_block", "strides", strides)
    check_bool("basic_block", "project", project)
    if strides != 1 and not project:
        fail("basic_block", f"strides (={strides}) != 1 needs a projection shortcut (project=True)")
    one, two = _conv_bn(width, 3, strides, bn_momentum), _conv_bn(width, 3, 1, bn_momentum)
    main = serial(conv1=one["conv"], bn1=one["bn"], act1=Relu(), conv2=two["conv"], bn2=two["bn"])
    shortcut = serial(**_conv_bn(width, 1, strides, bn_momentum)) if project else identity()
    return serial(sum=parallel(main=main, shortcut=shortcut, merge="sum"), act=Relu())


def resnet(config: ResNetConfig = ResNetConfig()) -> Layer:
    """The ResNet `config` describes: x (N, H, W, C) -> logits (N, num_classes). The stem is a 3x3
    convolution to widths[0] + BN + ReLU; a block projects its shortcut where it changes the stride or
    the width (the first block of every stage but the first; the stem already has widths[0])."""
    widths = check_positive("resnet", "widths", config.widths)
    blocks = check_positive("resnet", "blocks", config.blocks)
    check_positive("resnet", "num_classes", config.num_classes)
    check_positive("resnet", "stem_strides", config.stem_strides)
    if len(widths) != len(blocks):
        fail("resnet", f"widths (={config.widths}) and blocks (={config.blocks}) need one entry per stage")
    momentum = config.bn_momentum
    stages, width_in = [], widths[0]
    for s, (width, count) in enumerate(zip(widths, blocks)):
        stage = []
        for b in range(count):
            strides = 2 if s > 0 and b == 0 else 1
            project = strides != 1 or width != width_in
            stage.append(basic_block(width, strides=strides, project=project, bn_momentum=momentum))
            width_in = width
        stages.append(serial(*stage))
    stem = serial(**_conv_bn(widths[0], 3, config.stem_strides, momentum), act=Relu())
    return serial(stem=stem, stages=serial(*stages), pool=GlobalAvgPool(), head=Dense(config.num_classes))
