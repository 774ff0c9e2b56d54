"""Every registry row: shapes, pullback vs jax.vjp (float64 and float32 in one compiled program, the float64
evaluation the truth of float32's; tests/README.md), the adjoint identity against jax.jvp (float64, in the
same program; see Case.adjoint), jit == eager, and stepping == apply for the rows whose layer decodes step
by step."""

import jax
import jax.numpy as jnp
import pytest

from purenet.check import check_decode, check_layer, compare, random_cotangent, random_input
from purenet.core import can_decode, init_model, is_differentiable
from tests.registry import CASES

DTYPES = [jnp.float64, jnp.float32]


def _x(case, key, dtype):
    """The row's input in `dtype` (float leaves); integer and boolean leaves as make_x built them."""
    if case.make_x is None:
        return random_input(key, case.in_shape, dtype)
    x = case.make_x(key, case.in_shape)
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if is_differentiable(a) else a, x)


def _is_sequence(x) -> bool:
    """An input with a time axis 1 to step along: float leaves (N, T, F...), integer leaves (N, T...)."""
    return all(a.ndim >= (3 if is_differentiable(a) else 2) for a in jax.tree_util.tree_leaves(x))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pullback_matches_jax(case, key):
    """float64 and float32 in one program, at the same point (drawn in float32): float64 within 1e-10,
    float32 by the suite's rule with the float64 evaluation as its truth (tests/README.md)."""
    layer = case.build()
    x = _x(case, jax.random.fold_in(key, 1), jnp.float32)
    report = check_layer(layer, case.in_shape, key=key, dtype=DTYPES, x=x, train=case.train, num_cotangents=1,
                         adjoint=case.adjoint)
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert all(any(k.startswith(f"{layer.name}[{d}].y") for k in report) for d in ("float64", "float32"))
    assert (f"{layer.name}[float64].adjoint" in report) == case.adjoint


def _one_per_code_path(cases):
    """The first row of each (constructor, train, algorithm, residuals): an eager run dispatches every
    primitive on its own (seconds per row), and jit == eager is a property of the code path a row takes,
    which rows differing only in sizes, strides or padding share."""
    seen, kept = set(), []
    for case in cases:
        path = (case.constructor, case.train, case.kwargs.get("algorithm"), case.kwargs.get("residuals"))
        if case.eager and path not in seen:
            seen.add(path)
            kept.append(case)
    return kept


EAGER = _one_per_code_path(CASES)


@pytest.mark.parametrize("case", EAGER, ids=[c.id for c in EAGER])
def test_jit_equals_eager(case, key):
    layer = case.build()
    k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
    _, params, state = init_model(layer, k_init, case.in_shape, dtype=jnp.float64)
    x = _x(case, k_x, jnp.float64)

    def step(params, state, x, key):
        y, new_state, pullback = layer.vjp(params, state, x, key=key, train=case.train)
        return y, new_state, pullback(random_cotangent(k_dy, y)[0])

    def step_and_apply(params, state, x, key):
        return step(params, state, x, key), layer.apply(params, state, x, key=key, train=case.train)[0]

    eager = step(params, state, x, k_layer)
    jitted, y_apply = jax.jit(step_and_apply)(params, state, x, k_layer)
    compare(jitted, eager, rtol=1e-12, what=case.id)
    compare(y_apply, eager[0], rtol=1e-12, what=case.id)


DECODING = [c for c in CASES if c.stepwise and can_decode(c.build())  # shapes only: nothing runs at collection
            and _is_sequence(jax.eval_shape(lambda c=c: _x(c, jax.random.PRNGKey(0), jnp.float64)))]


@pytest.mark.parametrize("case", DECODING, ids=[c.id for c in DECODING])
def test_decode_steps_equal_apply(case, key):
    layer = case.build()
    _, params, state = init_model(layer, key, case.in_shape, dtype=jnp.float64)
    check_decode(layer, params, state, _x(case, jax.random.fold_in(key, 1), jnp.float64))


def test_decoding_rows_cover_every_decoding_family():
    ids = {c.id for c in DECODING}
    for expected in ("dense-rank3", "embedding-rank2", "layernorm-rank3", "lstm-t5", "gru-t5", "simple-rnn-t5",
                     "dropout-train-rank4", "elu", "rmsnorm-rank3", "learned-positions", "sinusoidal-positions",
                     "feedforward-gelu-rank3", "mha-causal", "encoder-block-pre-ln-causal"):
        assert any(i.startswith(expected) for i in ids), expected
