"""The one registry of layer cases (DESIGN.md section 3).

Each row is `Case(id, constructor, kwargs, in_shape, ...)`; every row is checked by test_registry.py for:
declared out_shape == real output shape; pullback == jax.vjp(apply) in float64 and float32 for random
cotangents; the dot-product identity against jax.jvp; jax.jit equal to eager; and, for layers that
decode step by step, stepping equal to `apply`. `in_shape` may be a pytree of shapes (a structured
input: `SequenceInput((N, T, F), (N, H))`, `((N, T), (N, T, F))`); float leaves are drawn standard
normal, and `make_x(key, in_shape)` builds inputs with integer or boolean leaves. Adding a layer means
adding rows to the `cases_*.py` file beside its tests (tests/layers/cases_dense.py, ...), which this
module collects.
"""

from __future__ import annotations

import importlib
import pathlib
from typing import Any, Callable, NamedTuple

TESTS = pathlib.Path(__file__).parent


class Case(NamedTuple):
    id: str
    constructor: Callable
    kwargs: dict
    in_shape: Any
    train: bool = False
    # For non-float inputs (token ids, masks): make_x(key, in_shape) -> x. None: standard normal floats.
    make_x: Callable | None = None
    args: tuple = ()

    def build(self) -> Any:
        return self.constructor(*self.args, **self.kwargs)


def _collect() -> list[Case]:
    cases = []
    for path in sorted(TESTS.rglob("cases_*.py")):
        module = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)  # tests.layers.cases_dense
        cases += importlib.import_module(module).CASES
    ids = [c.id for c in cases]
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert not duplicated, f"duplicate case ids: {duplicated}"
    return cases


CASES = _collect()
