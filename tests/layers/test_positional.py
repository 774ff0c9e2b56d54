"""Rotary embeddings, learned and sinusoidal positions: values, the properties attention relies on, decode
at a traced position, errors.

The layers' pullbacks against jax.vjp (and rotary through a test Layer) are registry rows
(tests/layers/cases_positional.py); here rotary_pullback is checked directly for every form of positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_function, compare, upcast
from purenet.layers.positional import (LearnedPositions, SinusoidalPositions, rotary, rotary_pullback,
                                       sinusoid_table)

N, T, H, D = 2, 5, 3, 6


def _normal(key, i, shape, dtype=np.float64):
    """Drawn by numpy (seed i; `key` unused): jax.random compiles a draw per shape."""
    return np.random.default_rng(i).standard_normal(shape).astype(dtype)


POSITIONS = {
    "t": jnp.arange(T) + 2,
    "nt": jnp.array([[0, 1, 2, 3, 4], [7, 3, 9, 100, 4]]),
    "scalar": jnp.int32(11),
}


# ----------------------------------------------------------------------------------------- rotary


def test_rotary_pullback_matches_jax_for_every_form_of_positions():
    # Every form of positions (traced) in one program per side; float64 within 1e-10, float32 by the
    # suite's rule (its truth: the float64 program at the float32 point cast up).
    x, dy = _normal(None, 0, (N, T, H, D)), _normal(None, 1, (N, T, H, D))

    def ours(x, dy, positions):
        return {name: rotary_pullback(dy, p, base=50.0) for name, p in positions.items()}

    def theirs(x, dy, positions):
        return {name: jax.vjp(lambda x, p=p: rotary(x, p, base=50.0), x)[1](dy)[0] for name, p in positions.items()}

    for dtype in (np.float64, np.float32):
        check_function(ours, theirs, x.astype(dtype), dy.astype(dtype), POSITIONS,
                       what=f"rotary_pullback[{np.dtype(dtype).name}]")


def test_rotary_values_are_a_complex_rotation_of_half_pairs(key):
    # (x_i + i x_{i+D/2}) * exp(i theta_i): the "rotate half" pairing, theta_i = t * base^(-2i/D).
    x = _normal(key, 0, (N, T, H, D))
    positions = POSITIONS["nt"]
    xn = np.asarray(x)
    theta = np.asarray(positions, np.float64)[:, :, None, None] * 10000.0 ** (-2.0 * np.arange(D // 2) / D)
    z = (xn[..., : D // 2] + 1j * xn[..., D // 2:]) * np.exp(1j * theta)
    np.testing.assert_allclose(rotary(x, positions), np.concatenate([z.real, z.imag], axis=-1), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(rotary(x, jnp.zeros(T, jnp.int32)), x)  # position 0 is the identity


def test_rotary_preserves_norms_and_the_pullback_inverts_it(key):
    x = _normal(key, 0, (N, T, H, D))
    y = rotary(x, POSITIONS["nt"])
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(rotary_pullback(y, POSITIONS["nt"]), x, rtol=1e-12, atol=1e-12)


def test_rotary_dot_products_depend_only_on_relative_positions(key):
    q, k = _normal(key, 0, (1, T, H, D)), _normal(key, 1, (1, T, H, D))

    def scores(shift):  # q_m . k_n for all m, n at positions shifted by `shift`
        positions = jnp.arange(T) + shift
        return jnp.einsum("nthd,nshd->nhts", rotary(q, positions), rotary(k, positions))

    np.testing.assert_allclose(scores(37), scores(0), rtol=1e-10, atol=1e-12)
    assert not np.allclose(scores(0), jnp.einsum("nthd,nshd->nhts", q, k))  # positions do matter


def test_rotary_decode_form_equals_the_whole_sequence(key):
    # A decode step rotates x (N, 1, H, D) at positions (1,) or a scalar, traced.
    x = _normal(key, 0, (N, T, H, D))
    whole = rotary(x, jnp.arange(T))
    step = jax.jit(lambda x_t, pos: (rotary(x_t, jnp.reshape(pos, (1,))), rotary(x_t, pos)))
    for t in range(T):
        one, scalar = step(x[:, t:t + 1], jnp.int32(t))
        np.testing.assert_allclose(one, whole[:, t:t + 1], rtol=1e-12)
        np.testing.assert_allclose(scalar, whole[:, t:t + 1], rtol=1e-12)


def test_rotary_keeps_a_low_precision_dtype(key):
    x = _normal(key, 0, (N, T, H, D)).astype(jnp.bfloat16)
    assert rotary(x, jnp.arange(T)).dtype == jnp.bfloat16 == rotary_pullback(x, jnp.arange(T)).dtype


@pytest.mark.parametrize("function", [rotary, rotary_pullback])
def test_rotary_errors_name_the_function_and_the_values(function):
    owner = function.__name__
    x = jnp.ones((N, T, H, D))
    with pytest.raises(ValueError, match=rf"^{owner}: the head dimension D = x.shape\[-1\] must be even, "
                                         r"got shape \(2, 5, 3, 5\)$"):
        function(jnp.ones((N, T, H, 5)), jnp.arange(T))
    with pytest.raises(ValueError, match=rf"^{owner}: expected input of rank 4 \(N, T, H, D\), got shape \(2, 5, 6\)$"):
        function(jnp.ones((N, T, D)), jnp.arange(T))
    with pytest.raises(ValueError, match=rf"^{owner}: positions must be integers, got dtype float"):
        function(x, jnp.arange(T) * 1.0)
    with pytest.raises(ValueError, match=rf"^{owner}: positions must have shape \(\) or \(T,\) = \(5,\) or "
                                         r"\(N, T\) = \(2, 5\) for x of shape \(2, 5, 3, 6\), got \(4,\)$"):
        function(x, jnp.arange(4))
    for base in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=rf"^{owner}: base must be a positive finite number, got base="):
            function(x, jnp.arange(T), base=base)


# ------------------------------------------------------------------------------ learned positions


def test_learned_positions_add_the_first_t_rows(key):
    layer = LearnedPositions(8)
    out_shape, params, state = layer.init(key, (-1, T, 3))
    x = _normal(key, 0, (N, T, 3))
    y, _ = layer.apply(params, state, x)
    assert out_shape == (-1, T, 3) and params["w"].shape == (8, 3) and state == {}
    np.testing.assert_allclose(y, x + params["w"][None, :T], rtol=1e-12)
    assert abs(float(jnp.std(LearnedPositions(500).init(key, (1, 1, 40))[1]["w"])) - 0.02) < 1e-3


def test_learned_positions_gradient_sums_over_the_batch_and_leaves_unused_rows_zero(key):
    layer = LearnedPositions(8)
    _, params, state = layer.init(key, (N, T, 3))  # float32 params: dw keeps their dtype
    dy = _normal(key, 1, (N, T, 3), jnp.float32)
    _, _, pullback = layer.vjp(params, state, _normal(key, 0, (N, T, 3), jnp.float32))
    dparams, dx = pullback(dy)
    np.testing.assert_array_equal(dx, dy)
    compare(dparams["w"][:T], jnp.sum(dy, axis=0), truth=jnp.sum(upcast(dy), axis=0), what="dw")
    assert dparams["w"].dtype == jnp.float32
    np.testing.assert_array_equal(dparams["w"][T:], jnp.zeros((8 - T, 3)))


def test_learned_positions_decode_at_a_traced_pos(key):
    layer = LearnedPositions(4)
    _, params, _ = layer.init(key, (N, 4, 3))
    x_t = _normal(key, 0, (N, 3))
    cache = layer.decode.init_cache(params, N, 4)
    step = jax.jit(lambda pos: layer.decode.step(params, cache, x_t, pos=pos)[0])
    np.testing.assert_allclose(step(jnp.int32(2)), x_t + params["w"][2:3], rtol=1e-12)
    assert bool(jnp.all(jnp.isnan(step(jnp.int32(4)))))  # traced and out of range: NaN, not a clamped row
    with pytest.raises(ValueError, match=r"^LearnedPositions: pos must be in \[0, 4\), got pos=4$"):
        layer.decode.step(params, cache, x_t, pos=4)
    with pytest.raises(ValueError, match=r"^LearnedPositions: cannot decode max_len=5 positions, the table has "
                                         r"max_len=4$"):
        layer.decode.init_cache(params, N, 5)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_learned_positions_max_len_must_be_positive(bad):
    with pytest.raises(ValueError, match=rf"^LearnedPositions: max_len must be positive integers, "
                                         rf"got max_len={bad!r}$"):
        LearnedPositions(bad)


def test_learned_positions_shape_errors(key):
    layer = LearnedPositions(4)
    with pytest.raises(ValueError, match=r"^LearnedPositions: sequence length T \(=5\) > max_len \(=4\), "
                                         r"got shape \(2, 5, 3\)$"):
        layer.init(key, (2, 5, 3))
    with pytest.raises(ValueError, match=r"^LearnedPositions: expected input of rank 3 \(N, T, F\), "
                                         r"got shape \(2, 3\)$"):
        layer.init(key, (2, 3))
    _, params, state = layer.init(key, (2, 4, 3))
    with pytest.raises(ValueError, match=r"^LearnedPositions: sequence length T \(=6\) > max_len \(=4\), "
                                         r"got shape \(2, 6, 3\)$"):
        layer.apply(params, state, jnp.ones((2, 6, 3)))
    with pytest.raises(ValueError, match=r"^LearnedPositions: expected input with F = 3 features, got shape "
                                         r"\(2, 4, 5\)$"):
        layer.apply(params, state, jnp.ones((2, 4, 5)))


# --------------------------------------------------------------------------- sinusoidal positions


@pytest.mark.parametrize("features", [6, 5])
def test_sinusoid_table_is_the_transformer_table(features):
    t = np.arange(7.0)[:, None]
    pe = np.zeros((7, features))
    for j in range(features):
        angle = t[:, 0] / 10000.0 ** (2 * (j // 2) / features)
        pe[:, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)  # odd F: the last feature is a sine
    np.testing.assert_allclose(sinusoid_table(jnp.arange(7), features, jnp.float64), pe, rtol=1e-12, atol=1e-15)


def test_sinusoidal_positions_add_the_table_and_decode_at_a_traced_pos(key):
    layer = SinusoidalPositions()
    out_shape, params, state = layer.init(key, (-1, T, 4))
    x = _normal(key, 0, (N, T, 4))
    y, _ = layer.apply(params, state, x)
    assert out_shape == (-1, T, 4) and params == {} and state == {}
    np.testing.assert_allclose(y, x + sinusoid_table(jnp.arange(T), 4, jnp.float64)[None], rtol=1e-12)
    np.testing.assert_allclose(y[:, 0], x[:, 0] + jnp.array([[0.0, 1.0, 0.0, 1.0]]), rtol=1e-12)
    step = jax.jit(lambda x_t, pos: layer.decode.step(params, {}, x_t, pos=pos)[0])
    np.testing.assert_allclose(step(x[:, 3], jnp.int32(3)), y[:, 3], rtol=1e-12)
    assert layer.vjp(params, state, x)[2](x) == ({}, x)


def test_sinusoidal_positions_rank_error(key):
    with pytest.raises(ValueError, match=r"^SinusoidalPositions: expected input of rank 3 \(N, T, F\), got shape "
                                         r"\(2, 3, 4, 5\)$"):
        SinusoidalPositions().init(key, (2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"^SinusoidalPositions: expected input of rank 3 \(N, T, F\), got shape "
                                         r"\(2, 3\)$"):
        SinusoidalPositions().apply({}, {}, jnp.ones((2, 3)))
