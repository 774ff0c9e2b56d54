"""Registry rows: Dropout in training (a fixed key, so a fixed mask) and in eval."""

from purenet.layers.dropout import Dropout
from tests.registry import Case

CASES = [
    Case("dropout-train-rank4", Dropout, {"rate": 0.25}, (2, 3, 3, 2), train=True),
    Case("dropout-eval", Dropout, {"rate": 0.5}, (4, 6)),
    Case("dropout-rate0-train", Dropout, {"rate": 0.0}, (3, 4), train=True),
]
