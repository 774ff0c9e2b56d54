"""Every registry row: shapes, pullback vs jax.vjp (float64 and float32 in one compiled program, the float64
evaluation the truth of float32's; tests/README.md), the adjoint identity against jax.jvp (float64, in the
same program; see Case.adjoint), jit == eager, and stepping == apply for the rows whose layer decodes step
by step. One row per code path also in bfloat16, a precision policy's compute dtype, by the same rule."""

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


def _code_path(case) -> tuple:
    return case.constructor, case.train, case.kwargs.get("algorithm"), case.kwargs.get("residuals")


def _first_per_code_path(cases):
    """The first row of each (constructor, train, algorithm, residuals)."""
    seen, kept = set(), []
    for case in cases:
        if _code_path(case) not in seen:
            seen.add(_code_path(case))
            kept.append(case)
    return kept


BFLOAT16 = _first_per_code_path(CASES)


@pytest.mark.parametrize("case", BFLOAT16, ids=[c.id for c in BFLOAT16])
def test_pullback_matches_jax_in_bfloat16(case, key):
    """Params, input and cotangent in bfloat16 (what a layer sees under `with_policy(model,
    Policy(compute_dtype=jnp.bfloat16))`; its sums run in float32), checked with float64 at the same point
    (drawn in bfloat16), the float64 evaluation the truth: the suite's rule with bfloat16's eps
    (tests/README.md)."""
    layer = case.build()
    x = _x(case, jax.random.fold_in(key, 1), jnp.bfloat16)
    report = check_layer(layer, case.in_shape, key=key, dtype=(jnp.float64, jnp.bfloat16), x=x, train=case.train,
                         num_cotangents=1)
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert any(k.startswith(f"{layer.name}[bfloat16].y") for k in report)


def test_bfloat16_rows_cover_every_layer_family():
    families = {case.constructor.__module__ for case in BFLOAT16}
    assert {f"purenet.layers.{f}" for f in ("activations", "attention", "conv", "dense", "dropout", "embedding",
                                            "feedforward", "norm", "pooling", "positional", "recurrent", "reshape",
                                            "tokens", "transformer", "augment")} <= families


def _one_per_code_path(cases):
    """The first row of each (constructor, train, algorithm, residuals): an eager run dispatches every
    primitive on its own (seconds per row), and jit == eager is a property of the code path a row takes,
    which rows differing only in sizes, strides or padding share."""
    return _first_per_code_path([case for case in cases if case.eager])


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
