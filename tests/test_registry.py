"""Every registry row: shapes, pullback vs jax.vjp (float64 and float32 in one compiled program, the float64
evaluation the truth of float32's; tests/README.md), the adjoint identity against jax.jvp (float64, in the
same program; see Case.adjoint); one row per code path also in bfloat16, a precision policy's compute dtype,
by the same rule, and jit == eager; stepping == apply for the rows whose layer decodes step by step. Each
row compiles one program for all of it (the program's compile is most of what a row costs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import _host_input, _host_rng, check_layer
from purenet.core import can_decode, is_differentiable
from tests.registry import CASES

DTYPES = [jnp.float64, jnp.float32]


def _x(case, key, dtype):
    """The row's input in `dtype` (float leaves); integer and boolean leaves as make_x built them. Drawn
    on the host (numpy, seeded by `key`): nothing compiles."""
    rng = _host_rng(key)
    x = _host_input(rng, case.in_shape, np.float64) if case.make_x is None else case.make_x(rng, case.in_shape)
    return jax.tree_util.tree_map(lambda a: np.asarray(a).astype(dtype) if is_differentiable(a) else np.asarray(a),
                                  x)


def _is_sequence(x) -> bool:
    """An input with a time axis 1 to step along: float leaves (N, T, F...), integer leaves (N, T...)."""
    return all(a.ndim >= (3 if is_differentiable(a) else 2) for a in jax.tree_util.tree_leaves(x))


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


# One row per code path also in bfloat16: params, input and cotangent in bfloat16 (what a layer sees under
# `with_policy(model, Policy(compute_dtype=jnp.bfloat16))`; its sums run in float32), in the row's program
# beside float64 and float32 at the same point (drawn in bfloat16), the float64 evaluation the truth of both.
BFLOAT16 = _first_per_code_path(CASES)

# jit == eager, one row per code path: an eager run dispatches (and compiles) every primitive on its own,
# and whether a layer computes the same traced and eager is a property of the code path a row takes, which
# rows differing only in sizes, strides or padding share.
EAGER = _first_per_code_path([case for case in CASES if case.eager])

# Stepping == apply for the rows whose layer decodes step by step along a time axis, in the row's program.
DECODING = [c for c in CASES if c.stepwise and can_decode(c.build())  # drawn on the host: nothing compiles
            and _is_sequence(_x(c, jax.random.PRNGKey(0), np.float64))]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pullback_matches_jax(case, key):
    """float64 and float32 (and bfloat16 for BFLOAT16's rows) in one program, at the same point (drawn in
    the lowest dtype): float64 within 1e-10, float32 and bfloat16 by the suite's rule with the float64
    evaluation as their truth (tests/README.md). For EAGER's rows, our vjp and pullback also run op by op
    at the float64 point and equal the jitted ones and apply's output within 1e-12; for DECODING's, stepping
    the layer's decode equals apply (eval mode) in float64 within 1e-10."""
    layer = case.build()
    low = jnp.bfloat16 if case in BFLOAT16 else jnp.float32
    x = _x(case, jax.random.fold_in(key, 1), low)
    report = check_layer(layer, case.in_shape, key=key, dtype=DTYPES + [low], x=x, train=case.train,
                         num_cotangents=1, adjoint=case.adjoint, eager=case in EAGER, decode=case in DECODING)
    assert all(e.max_rel <= e.rtol for e in report.values())
    for d in ("float64", "float32", jnp.dtype(low).name):
        assert any(k.startswith(f"{layer.name}[{d}].y") for k in report), d
    assert (f"{layer.name}[float64].adjoint" in report) == case.adjoint
    assert any(k.startswith(f"{layer.name}[float64].eager") for k in report) == (case in EAGER)
    assert any(k.startswith(f"{layer.name}[float64].decode") for k in report) == (case in DECODING)


def test_bfloat16_rows_cover_every_layer_family():
    families = {case.constructor.__module__ for case in BFLOAT16}
    assert {f"purenet.layers.{f}" for f in ("activations", "attention", "conv", "dense", "dropout", "embedding",
                                            "feedforward", "norm", "pooling", "positional", "recurrent", "reshape",
                                            "tokens", "transformer", "augment")} <= families


def test_decoding_rows_cover_every_decoding_family():
    ids = {c.id for c in DECODING}
    for expected in ("dense-rank3", "embedding-rank2", "layernorm-rank3", "lstm-t5", "gru-t5", "simple-rnn-t5",
                     "dropout-train-rank4", "elu", "rmsnorm-rank3", "learned-positions", "sinusoidal-positions",
                     "feedforward-gelu-rank3", "mha-causal", "encoder-block-pre-ln-causal"):
        assert any(i.startswith(expected) for i in ids), expected
