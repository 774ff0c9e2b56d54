"""Embedding: lookup values, summed cotangents for repeated ids, out-of-range ids, errors.

The pullback against jax.vjp (dx None for integer ids) is a registry row (tests/layers/cases_embedding.py);
an Embedding feeding a Dense in a serial, the rows select-tuple-with-ids and parallel-two-embeddings-sum
(tests/cases_core.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.layers.embedding import Embedding


def _init(layer, in_shape):
    """(out_shape, params, state) of init, only traced (no random draw compiled): the table drawn by numpy."""
    out_shapes = []

    def init(key):
        out_shape, params, state = layer.init(key, in_shape)
        out_shapes.append(out_shape)
        return params, state

    shapes, state = jax.eval_shape(init, jax.random.PRNGKey(0))
    return out_shapes[0], {"w": np.random.default_rng(0).standard_normal(shapes["w"].shape)}, state


@pytest.mark.parametrize("in_shape, out_shape", [((2, 3), (2, 3, 4)), ((5,), (5, 4)), ((-1, 3), (-1, 3, 4))])
def test_lookup_shapes_and_values(in_shape, out_shape, key):
    layer = Embedding(6, 4)
    declared, params, state = _init(layer, in_shape)
    ids = jnp.arange(np.prod([2 if d == -1 else d for d in in_shape])).reshape(
        [2 if d == -1 else d for d in in_shape]) % 6
    y, _ = layer.apply(params, state, ids)
    assert declared == out_shape and params["w"].shape == (6, 4) and state == {}
    np.testing.assert_array_equal(y, params["w"][ids])


def test_default_init_is_standard_normal(key):
    _, params, _ = Embedding(500, 40).init(key, (1,))
    assert abs(float(jnp.std(params["w"])) - 1.0) < 0.02


def test_repeated_ids_sum_their_cotangents(key):
    layer = Embedding(4, 2)
    _, params, state = _init(layer, (1, 5))
    ids = jnp.array([[1, 3, 1, 1, 0]])
    dy = jnp.arange(10.0).reshape(1, 5, 2)
    _, _, pullback = layer.vjp(params, state, ids)
    dparams, dx = pullback(dy)
    expected = jnp.array([[8.0, 9.0], [0.0 + 4.0 + 6.0, 1.0 + 5.0 + 7.0], [0.0, 0.0], [2.0, 3.0]])
    np.testing.assert_array_equal(dparams["w"], expected)
    assert dx is None


def test_out_of_range_ids_give_nan_rows_and_no_gradient(key):
    layer = Embedding(3, 2)
    _, params, state = _init(layer, (4,))
    ids = jnp.array([0, 3, -1, 2])

    @jax.jit  # ids are traced: no error is possible, the result is defined instead
    def step(params, ids):
        y, _, pullback = layer.vjp(params, state, ids)
        return y, pullback(jnp.ones_like(y))[0]["w"]

    y, dw = step(params, ids)
    assert jnp.all(jnp.isnan(y[1:3])) and jnp.all(jnp.isfinite(y[::3]))
    np.testing.assert_array_equal(dw, [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("name, args", [("vocab_size", (0, 3)), ("features", (3, -2)), ("vocab_size", (2.0, 3))])
def test_sizes_must_be_positive_integers(name, args):
    value = args[0] if name == "vocab_size" else args[1]
    with pytest.raises(ValueError, match=rf"^Embedding: {name} must be positive integers, got {name}={value}$"):
        Embedding(*args)


def test_ids_must_be_integers(key):
    layer = Embedding(4, 2)
    _, params, state = _init(layer, (3,))
    with pytest.raises(ValueError, match=r"^Embedding: expected integer token ids, got dtype float32$"):
        layer.apply(params, state, jnp.zeros((3,), jnp.float32))


def test_ids_rank_at_init(key):
    with pytest.raises(ValueError, match=r"^Embedding: expected ids of rank 1 \(N,\) or 2 \(N, T\), "
                                         r"got shape \(2, 3, 4\)$"):
        Embedding(4, 2).init(key, (2, 3, 4))


def test_table_shape_mismatch_at_apply(key):
    _, params, state = _init(Embedding(4, 2), (3,))
    with pytest.raises(ValueError, match=r"^Embedding: expected w of shape \(5, 2\), got \(4, 2\)$"):
        Embedding(5, 2).apply(params, state, jnp.zeros((3,), jnp.int32))
