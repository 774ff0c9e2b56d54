"""Tied embeddings, the documented pattern for a parameter used twice: the table's gradient is the sum
of its cotangent as a lookup and as the output head, checked against jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_layer, check_model
from purenet.combinators import serial
from purenet.core import init_model
from purenet.layers import Conv1D, Dense, LayerNorm, Tanh
from purenet.losses import softmax_cross_entropy
from purenet.models import tied_lm


def _ids(key, shape):
    return jax.random.randint(key, shape, 0, 7)


def test_tied_gradient_sums_both_uses(key):  # float64 and float32 at one point
    model = tied_lm(7, 4, serial(Dense(4), Tanh(), LayerNorm()))
    report = check_layer(model, (3, 5), key=key, dtype=(jnp.float64, jnp.float32), x=_ids(key, (3, 5)))
    assert all(e.max_rel <= e.rtol for e in report.values())
    _, params, state = init_model(model, key, (3, 5))
    ids = _ids(key, (3, 5))
    check_model(model, softmax_cross_entropy(), params, state, ids, jnp.roll(ids, 1, axis=1), dtype=(jnp.float64, jnp.float32))


def test_the_sum_is_needed(key):
    # Either use alone gives a different gradient: the sum is not an accident of the test.
    model = tied_lm(7, 4, Tanh(), use_bias=False)
    _, params, state = init_model(model, key, (2, 3), dtype=jnp.float64)
    ids = _ids(key, (2, 3))
    y, _, pullback = model.vjp(params, state, ids)
    dlogits = jax.random.normal(key, y.shape, y.dtype)
    dw = pullback(dlogits)[0]["embed"]["w"]
    w = params["embed"]["w"]
    head_only = jnp.einsum("ntv,ntf->vf", dlogits, jnp.tanh(w[ids]))
    lookup_part = np.asarray(dw - head_only)  # what the lookup added: nothing at rows no id selects
    unused = sorted(set(range(7)) - set(np.asarray(ids).ravel().tolist()))
    assert set(params) == {"embed", "body"} and unused and not np.allclose(lookup_part, 0)
    np.testing.assert_allclose(lookup_part[unused], 0.0)


def test_body_must_keep_the_feature_size(key):
    with pytest.raises(ValueError, match=r"TiedLM: body must keep the feature size 4 for the tied head, got "
                                         r"output shape \(2, 3, 5\)"):
        tied_lm(7, 4, Dense(5)).init(key, (2, 3))
    assert tied_lm(7, 4, Conv1D(4, 3, padding="SAME")).decode.reason.startswith("TiedLM")
