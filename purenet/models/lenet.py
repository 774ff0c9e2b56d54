"""LeNet-5: two convolution + max-pooling stages and three dense layers, for 28x28 grayscale digits.

Shapes: x (N, 28, 28, 1) -> logits (N, num_classes). Named children, so a checkpoint reads
`params["conv1"]["w"]`: conv1, act1, pool1, conv2, act2, pool2, flatten, fc1, act3, fc2, act4, head.
"""

from __future__ import annotations

from typing import NamedTuple

from purenet.combinators import serial
from purenet.core import Layer
from purenet.layers import Activation, Conv2D, Dense, Flatten, MaxPool2D


class LeNetConfig(NamedTuple):
    """The default is the demo's LeNet-5 (conv 6 k5 VALID, pool, conv 16 k3 VALID, pool: 400 features);
    `CLASSIC` is LeCun's (conv 6 k5 SAME, pool, conv 16 k5 VALID, pool: also 400)."""

    channels: tuple[int, int] = (6, 16)
    kernels: tuple[int, int] = (5, 3)
    paddings: tuple[str, str] = ("VALID", "VALID")
    dense: tuple[int, int] = (120, 84)
    num_classes: int = 10
    activation: str = "tanh"
    algorithm: str = "auto"  # of conv1, which sees one channel (see Conv2D's `algorithm`)


CLASSIC = LeNetConfig(kernels=(5, 5), paddings=("SAME", "VALID"))
"""LeCun's layout: two 5x5 convolutions, the first padded 'SAME', so that a 28x28 digit gives the 28x28
maps that LeNet-5's 32x32 input gave unpadded."""


def lenet5(config: LeNetConfig = LeNetConfig()) -> Layer:
    """LeNet-5 as `config` describes it. x (N, 28, 28, 1) -> logits (N, num_classes)."""
    (c1, c2), (k1, k2), (p1, p2), (d1, d2) = config.channels, config.kernels, config.paddings, config.dense
    return serial(
        conv1=Conv2D(c1, k1, padding=p1, algorithm=config.algorithm), act1=Activation(config.activation),
        pool1=MaxPool2D(2),
        conv2=Conv2D(c2, k2, padding=p2), act2=Activation(config.activation), pool2=MaxPool2D(2),
        flatten=Flatten(),
        fc1=Dense(d1), act3=Activation(config.activation),
        fc2=Dense(d2), act4=Activation(config.activation),
        head=Dense(config.num_classes),
    )
