"""The one registry of layer cases (DESIGN.md section 3).

Each row is `Case(id, constructor, kwargs, in_shape, ...)`; every row is checked by test_registry.py, in
one compiled program per row, for: declared out_shape == real output shape; pullback == jax.vjp(apply)
in float64 and float32, each for a random cotangent; the dot-product identity against jax.jvp (float64;
not for blocks of other rows' layers, see `adjoint`); and, for the first row of each code path, the
pullback in bfloat16 and jax.jit equal to eager; for layers that decode step by step, stepping equal to
`apply`. `in_shape` may be a pytree of shapes (a structured input: `SequenceInput((N, T, F), (N, H))`,
`((N, T), (N, T, F))`); float leaves are drawn standard normal, and `make_x(rng, in_shape)` (rng a
numpy Generator: inputs are drawn on the host) builds inputs with integer or boolean leaves. Adding a
layer means adding rows to the `cases_*.py` file beside its tests (tests/layers/cases_dense.py, ...),
which this module collects. A row that repeats another's code path at other sizes adds compile time
and no claim: a new row should differ in a branch, an option, or a size the layer treats specially
(batch 1, T = 1, a stride that does not divide, an odd size).
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
    # For non-float inputs (token ids, masks): make_x(rng, in_shape) -> x (numpy arrays, rng a numpy
    # Generator). None: standard normal floats.
    make_x: Callable | None = None
    args: tuple = ()
    # False where stepping along axis 1 of every input leaf is not the layer's decode step
    # (cross-attention steps over its queries and takes the whole memory; tested on its own).
    stepwise: bool = True
    # False for blocks composed of layers that have rows here: each sub-layer's adjoint identity is
    # checked in its own row, and the block's pullback against jax.vjp in float64 and float32; the
    # forward-mode program of a whole block costs more to compile than every other check of the row.
    adjoint: bool = True
    # False where jit == eager would repeat a sibling row's code path: an eager run dispatches (and
    # compiles) every primitive on its own, seconds for an attention row; one row per form keeps it.
    eager: bool = True

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
