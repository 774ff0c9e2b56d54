"""The one registry of layer cases (DESIGN.md section 3).

Each row is `Case(id, constructor, kwargs, in_shape, ...)`; every row is checked by test_registry.py for:
declared out_shape == real output shape; pullback == jax.vjp(apply) in float64 and float32 for random
cotangents; the dot-product identity against jax.jvp; jax.jit equal to eager. Adding a layer means adding
rows to the family's `cases_*.py` file, which this module concatenates.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Case(NamedTuple):
    id: str
    constructor: Callable
    kwargs: dict
    in_shape: tuple
    train: bool = False
    # For non-float inputs (token ids): make_x(key, in_shape) -> x. None: standard normal floats.
    make_x: Callable | None = None
    args: tuple = ()

    def build(self) -> Any:
        return self.constructor(*self.args, **self.kwargs)


def _collect():
    import importlib
    import pathlib

    cases = []
    for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
        cases += importlib.import_module(path.stem).CASES
    ids = [c.id for c in cases]
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert not duplicated, f"duplicate case ids: {duplicated}"
    return cases


CASES = _collect()
