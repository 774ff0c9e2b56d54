"""Registry rows: Dense."""

from purenet.layers.dense import Dense
from tests.registry import Case

CASES = [
    Case("dense-batch1", Dense, {"out_features": 1}, (1, 7)),
    Case("dense-no-bias", Dense, {"out_features": 3, "use_bias": False}, (2, 5)),
    Case("dense-rank3", Dense, {"out_features": 3}, (2, 4, 5)),
]
