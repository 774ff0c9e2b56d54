"""Multilayer perceptrons: Dense layers with an activation between them.

Shapes: x (N, ..., F) -> y (N, ..., out_features). Named children: dense0, act0, dense1, act1, ..., head.
"""

from __future__ import annotations

from purenet._checks import check_positive
from purenet.combinators import serial
from purenet.core import Layer
from purenet.layers import Activation, Dense


def mlp(hidden: tuple[int, ...], out_features: int, *, activation: str = "relu") -> Layer:
    """Dense(h) + activation for each h in `hidden`, then Dense(out_features) (no activation)."""
    hidden = check_positive("mlp", "hidden", hidden) if hidden else ()
    layers = {}
    for i, width in enumerate(hidden):
        layers[f"dense{i}"], layers[f"act{i}"] = Dense(width), Activation(activation)
    return serial(**layers, head=Dense(out_features))
