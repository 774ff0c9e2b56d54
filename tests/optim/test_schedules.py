"""purenet.schedules against optax's schedules (reference only), count by count; jit; error messages.

Each row is compared over counts 0..COUNTS-1 given as int64 (with x64 on, so optax computes in float64
too) and as Python ints; float32 runs with x64 off on int32 counts, held to optax's float64 values by
the suite's rule (tests/README.md). The array counts of all rows go through one jitted program per
dtype; a traced int32 count under `jax.jit` gives the eager values.
`python tests/optim/test_schedules.py` prints the worst error of every row against its bound.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from purenet.check import compare, failures
from purenet.optim import schedules

COUNTS = 200


class Row(NamedTuple):
    id: str
    ours: Callable
    reference: Callable
    kwargs: dict


ROWS = [
    Row("constant", schedules.constant_schedule, optax.constant_schedule, {"value": 0.3}),
    Row("polynomial", schedules.polynomial_schedule, optax.polynomial_schedule,
        {"init_value": 1.0, "end_value": 0.01, "power": 2, "transition_steps": 80, "transition_begin": 10}),
    Row("polynomial-fractional-power", schedules.polynomial_schedule, optax.polynomial_schedule,
        {"init_value": 0.5, "end_value": 1.5, "power": 0.7, "transition_steps": 150}),
    Row("linear", schedules.linear_schedule, optax.linear_schedule,
        {"init_value": 0.0, "end_value": 1.0, "transition_steps": 50, "transition_begin": 5}),
    Row("piecewise_constant", schedules.piecewise_constant_schedule, optax.piecewise_constant_schedule,
        {"init_value": 0.1, "boundaries_and_scales": {50: 0.1, 20: 0.5, 80: 2.0}}),
    Row("piecewise_constant-none", schedules.piecewise_constant_schedule, optax.piecewise_constant_schedule,
        {"init_value": 0.1}),
    Row("exponential_decay", schedules.exponential_decay, optax.exponential_decay,
        {"init_value": 1.0, "transition_steps": 10, "decay_rate": 0.8}),
    Row("exponential_decay-staircase-begin-end", schedules.exponential_decay, optax.exponential_decay,
        {"init_value": 1.0, "transition_steps": 7, "decay_rate": 0.5, "transition_begin": 15,
         "staircase": True, "end_value": 0.01}),
    Row("exponential_growth-end", schedules.exponential_decay, optax.exponential_decay,
        {"init_value": 0.1, "transition_steps": 20, "decay_rate": 1.5, "end_value": 0.9}),
    Row("cosine_decay", schedules.cosine_decay_schedule, optax.cosine_decay_schedule,
        {"init_value": 0.5, "decay_steps": 70, "alpha": 0.1}),
    Row("cosine_decay-alpha0", schedules.cosine_decay_schedule, optax.cosine_decay_schedule,
        {"init_value": 2.0, "decay_steps": 150}),
    Row("warmup_cosine_decay", schedules.warmup_cosine_decay_schedule, optax.warmup_cosine_decay_schedule,
        {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 10, "decay_steps": 90, "end_value": 0.05}),
    Row("warmup_cosine_decay-no-warmup", schedules.warmup_cosine_decay_schedule,
        optax.warmup_cosine_decay_schedule,
        {"init_value": 0.2, "peak_value": 0.4, "warmup_steps": 0, "decay_steps": 120}),
]
IDS = [row.id for row in ROWS]


PYTHON_COUNTS = [0, 1, 9, 10, 11, 49, 50, 51, COUNTS]
_VALUES: dict = {}


def values(rows, dtype: str) -> list:
    """[((ours, optax's values at counts 0..COUNTS-1), (ours, optax's at each of PYTHON_COUNTS))] of every
    row, all rows in one jitted program: the array of counts int64 with x64 on (float64), int32 with it
    off (float32); the Python ints given to the schedules as they are (constants of the program); cached."""
    key = (tuple(row.id for row in rows), dtype)
    if key not in _VALUES:
        with jax.enable_x64(dtype == "float64"):
            built = [(row.ours(**row.kwargs), row.reference(**row.kwargs)) for row in rows]
            run = jax.jit(lambda counts: [((ours(counts), jnp.broadcast_to(reference(counts), (COUNTS,))),
                                           ([ours(c) for c in PYTHON_COUNTS], [reference(c) for c in PYTHON_COUNTS]))
                                          for ours, reference in built])
            _VALUES[key] = jax.tree.map(np.asarray, run(jnp.arange(COUNTS)))
    return _VALUES[key]


def compare_with_optax(rows, dtype: str) -> dict[str, dict]:
    """{row id: compare's report of ours vs optax's at every count (each count on its own scale; the Python
    int counts too in float64)}; float32 (x64 off) is held to optax's float64 values, the truth."""
    reports = {}
    for row, ((ours, reference), python), ((_, truth), _) in zip(rows, values(rows, dtype), values(rows, "float64")):
        assert ours.dtype == jnp.dtype(dtype) and ours.shape == (COUNTS,), row.id
        if dtype == "float32":
            reports[row.id] = compare(list(ours), list(reference), truth=list(truth), what=row.id, raise_=False)
        else:
            reports[row.id] = compare([list(ours), python[0]], [list(reference), python[1]], rtol=1e-12, what=row.id,
                                      raise_=False)
    return reports


def test_matches_optax():
    """Every row, float64 and float32 (one test: each dtype's program of all rows compiles once)."""
    bad = [line for dtype in ("float64", "float32") for report in compare_with_optax(ROWS, dtype).values()
           for line in failures(report)]
    assert not bad, "\n".join(bad)


def test_comparison_can_fail():
    wrong = Row("off-by-one", schedules.cosine_decay_schedule,
                lambda **kw: optax.cosine_decay_schedule(**{**kw, "decay_steps": kw["decay_steps"] + 1}),
                {"init_value": 1.0, "decay_steps": 50})
    for dtype in ("float64", "float32"):
        report = compare_with_optax([wrong], dtype)[wrong.id]
        assert failures(report) and max(e.max_rel for e in report.values()) > 1e-3


def test_traced_int32_count_under_jit_equals_eager():
    """Every schedule under one jit, fed a traced int32 scalar count step by step (as in an optimizer)."""
    built = [row.ours(**row.kwargs) for row in ROWS]
    counts = jnp.arange(COUNTS, dtype=jnp.int32)
    jitted = jax.jit(lambda counts: [lax.map(schedule, counts) for schedule in built])(counts)
    for row, schedule, values in zip(ROWS, built, jitted):
        assert values.dtype == jnp.float64, row.id
        np.testing.assert_allclose(values, schedule(counts), rtol=1e-13, atol=1e-15, err_msg=row.id)


def test_int32_counts_keep_float64_precision():
    # optax divides an int32 count in float32; ours computes in the default float dtype.
    schedule = schedules.linear_schedule(0.0, 0.1, 10)
    assert schedule(jnp.int32(1)).dtype == jnp.float64
    assert abs(float(schedule(jnp.int32(1))) - 0.01) < 1e-16


ERRORS = [
    (lambda: schedules.constant_schedule("high"),
     "constant_schedule: value must be a real number, got value='high'"),
    (lambda: schedules.polynomial_schedule(1.0, 0.0, 1, 0),
     "polynomial_schedule: transition_steps must be an integer >= 1, got transition_steps=0"),
    (lambda: schedules.polynomial_schedule(1.0, 0.0, 1, 10, transition_begin=-1),
     "polynomial_schedule: transition_begin must be an integer >= 0, got transition_begin=-1"),
    (lambda: schedules.linear_schedule(1.0, 0.0, 10.0),
     "linear_schedule: transition_steps must be an integer >= 1, got transition_steps=10.0"),
    (lambda: schedules.piecewise_constant_schedule(0.1, {10: -0.5}),
     "piecewise_constant_schedule: the scale at boundary 10 must be a finite number >= 0, got the scale at "
     "boundary 10=-0.5"),
    (lambda: schedules.piecewise_constant_schedule(0.1, {-10: 0.5}),
     "piecewise_constant_schedule: a boundary must be an integer >= 0, got a boundary=-10"),
    (lambda: schedules.exponential_decay(1.0, 10, 0.0),
     "exponential_decay: decay_rate must be a finite number > 0, got decay_rate=0.0"),
    (lambda: schedules.exponential_decay(1.0, -5, 0.5),
     "exponential_decay: transition_steps must be an integer >= 1, got transition_steps=-5"),
    (lambda: schedules.exponential_decay(1.0, 10, 0.5, end_value=None, transition_begin=True),
     "exponential_decay: transition_begin must be an integer >= 0, got transition_begin=True"),
    (lambda: schedules.cosine_decay_schedule(1.0, 0),
     "cosine_decay_schedule: decay_steps must be an integer >= 1, got decay_steps=0"),
    (lambda: schedules.cosine_decay_schedule(1.0, 10, alpha=float("nan")),
     "cosine_decay_schedule: alpha must be a real number, got alpha=nan"),
    (lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, 100, 100),
     "warmup_cosine_decay_schedule: decay_steps must exceed warmup_steps, got decay_steps=100, warmup_steps=100"),
    (lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, -1, 100),
     "warmup_cosine_decay_schedule: warmup_steps must be an integer >= 0, got warmup_steps=-1"),
    # A negative or infinite value would train by gradient ascent or diverge: refused when built.
    (lambda: schedules.constant_schedule(-1e-3),
     "constant_schedule: value must be a finite number >= 0, got value=-0.001"),
    (lambda: schedules.cosine_decay_schedule(1.0, 10, alpha=-0.5),
     "cosine_decay_schedule: alpha must be a finite number >= 0, got alpha=-0.5"),
    (lambda: schedules.polynomial_schedule(1.0, 0.0, 0, 10),
     "polynomial_schedule: power must be a finite number > 0, got power=0"),
    (lambda: schedules.linear_schedule(1.0, float("inf"), 10),
     "linear_schedule: end_value must be a finite number >= 0, got end_value=inf"),
]


@pytest.mark.parametrize("build, message", ERRORS, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in
                                                         enumerate(ERRORS)])
def test_error_messages(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    print(f"{'schedule':40s} {'float64':>10s} {'float32':>10s}")
    reports = {dtype: compare_with_optax(ROWS, dtype) for dtype in ("float64", "float32")}
    for row in ROWS:
        worst = [max(e.max_rel / e.rtol for e in reports[dtype][row.id].values()) for dtype in ("float64", "float32")]
        print(f"{row.id:40s} {worst[0]:10.2e} {worst[1]:10.2e}")
