"""Registry rows: Dense and the combinators."""

from registry import Case

from purenet.core import identity, parallel, residual, serial
from purenet.dense import Dense


def _mlp():
    return serial(Dense(7), Dense(3))


CASES = [
    Case("dense", Dense, {"out_features": 4}, (3, 5)),
    Case("dense-batch1", Dense, {"out_features": 1}, (1, 7)),
    Case("dense-no-bias", Dense, {"out_features": 3, "use_bias": False}, (2, 5)),
    Case("dense-rank3", Dense, {"out_features": 3}, (2, 4, 5)),
    Case("identity", identity, {}, (2, 3)),
    Case("serial", _mlp, {}, (3, 5)),
    Case("parallel-concat", lambda: parallel(Dense(2), Dense(3)), {}, (2, 5)),
    Case("parallel-sum", lambda: parallel(Dense(3), identity(), merge="sum"), {}, (2, 3)),
    Case("residual", lambda: residual(serial(Dense(6), Dense(4))), {}, (1, 4)),
]
