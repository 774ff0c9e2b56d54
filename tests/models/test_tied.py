"""Tied embeddings, the documented pattern for a parameter used twice: the table's gradient is the sum
of its cotangent as a lookup and as the output head, checked against jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_layer
from purenet.combinators import serial
from purenet.layers import Conv1D, Dense, LayerNorm, Tanh
from purenet.models import tied_lm
from tests.helpers import random_init


def _ids(seed, shape):
    return np.random.default_rng(seed).integers(0, 7, shape)


def test_tied_gradient_sums_both_uses(key):  # float64 and float32 at one point
    # With the head's bias; without it (GPT-2's head): the loaded GPT-2 of tests/interop, whose gradient
    # matches PyTorch's in float64 and float32.
    model = tied_lm(7, 4, serial(Dense(4), Tanh(), LayerNorm()))
    report = check_layer(model, (3, 5), key=key, dtype=(jnp.float64, jnp.float32), x=_ids(0, (3, 5)))
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert {"TiedLM[float32].dparams['embed']['w']", "TiedLM[float64].dparams['head']['b']"} <= set(report)


def test_the_sum_is_needed():
    # Either use alone gives a different gradient: the sum is not an accident of the test.
    model = tied_lm(7, 4, Tanh(), use_bias=False)
    _, params, state = random_init(model, (2, 3), np.float64)
    ids = _ids(1, (2, 3))
    dlogits = np.random.default_rng(2).standard_normal((2, 3, 7))

    @jax.jit
    def lookup_part(params):  # what the lookup added to the head's dw
        _, _, pullback = model.vjp(params, state, ids)
        dw = pullback(dlogits)[0]["embed"]["w"]
        w = params["embed"]["w"]
        return dw - jnp.einsum("ntv,ntf->vf", dlogits, jnp.tanh(w[ids]))

    lookup = np.asarray(lookup_part(params))  # nothing at rows no id selects
    unused = sorted(set(range(7)) - set(ids.ravel().tolist()))
    assert set(params) == {"embed", "body"} and unused and not np.allclose(lookup, 0)
    np.testing.assert_allclose(lookup[unused], 0.0)


def test_body_must_keep_the_feature_size(key):
    with pytest.raises(ValueError, match=r"TiedLM: body must keep the feature size 4 for the tied head, got "
                                         r"output shape \(2, 3, 5\)"):
        jax.eval_shape(lambda k: tied_lm(7, 4, Dense(5)).init(k, (2, 3)), key)  # traced, not compiled
    assert tied_lm(7, 4, Conv1D(4, 3, padding="SAME")).decode.reason.startswith("TiedLM")
