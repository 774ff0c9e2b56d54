"""Pooling and reshaping: forward values, ties in max pooling, shape inference, errors, fuzzed geometry."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purenet.check import check_function
from purenet.combinators import serial
from purenet.layers import pooling
from purenet.layers.pooling import AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, MaxPool1D, MaxPool2D, MaxPool3D
from purenet.layers.reshape import Flatten, Reshape


def _cheap_key(seed):
    """A key of the 'rbg' PRNG: drawing normals of a new shape compiles ~10x faster than threefry's."""
    return jax.random.key(seed, impl="rbg")


def _run(layer, x):
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    return layer.apply(params, state, x)[0]


# ------------------------------------------------------------------------------------ forward values


def test_avgpool1d_same_counts_real_elements_or_whole_window():
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    excl = _run(AvgPool1D(3, strides=1, padding="SAME", count_include_pad=False), x)
    incl = _run(AvgPool1D(3, strides=1, padding="SAME"), x)
    np.testing.assert_allclose(excl[0, :, 0], [1.5, 2.0, 3.0, 3.5])
    np.testing.assert_allclose(incl[0, :, 0], [1.0, 2.0, 3.0, 7.0 / 3.0])


def test_maxpool2d_pads_with_minus_infinity():
    x = -jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)  # all negative: zero padding would win
    y = _run(MaxPool2D(2, strides=1, padding=((1, 0), (1, 0))), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1.0, -1.0], [-1.0, -1.0]])


def test_maxpool_and_avgpool_match_numpy_windows(key):
    x = jax.random.normal(key, (2, 7, 9, 3))
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x), (3, 3), axis=(1, 2))[:, ::2, ::2]
    np.testing.assert_allclose(_run(MaxPool2D(3, strides=2), x), windows.max(axis=(-2, -1)), rtol=1e-12)
    np.testing.assert_allclose(_run(AvgPool2D(3, strides=2), x), windows.mean(axis=(-2, -1)), rtol=1e-12)


def test_pool3d_match_numpy_windows(key):
    x = np.asarray(jax.random.normal(key, (2, 5, 6, 7, 2)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 3, 2), axis=(1, 2, 3))[:, ::1, ::2, ::3]
    np.testing.assert_allclose(_run(MaxPool3D((2, 3, 2), strides=(1, 2, 3)), x), windows.max(axis=(-3, -2, -1)))
    np.testing.assert_allclose(_run(AvgPool3D((2, 3, 2), strides=(1, 2, 3)), x), windows.mean(axis=(-3, -2, -1)),
                               rtol=1e-12)
    np.testing.assert_allclose(_run(GlobalAvgPool(), x), x.mean(axis=(1, 2, 3)), rtol=1e-12)


def test_global_avg_pool_and_reshapes(key):
    x = jax.random.normal(key, (2, 3, 4, 5))
    np.testing.assert_allclose(_run(GlobalAvgPool(), x), x.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(_run(Flatten(), x), x.reshape(2, 60))
    np.testing.assert_array_equal(_run(Reshape((-1, 4)), x), x.reshape(2, 15, 4))


# ------------------------------------------------------------------------------------ max-pool ties


def _pullbacks_equal_jax(layers, xs, seed=0):
    """Our (y, dx) of each layer at its x against jax.vjp of its apply, for a random cotangent each, all
    in one compiled program per side (float64: within 1e-10)."""
    shapes = jax.eval_shape(lambda xs: [layer.apply({}, {}, x)[0] for layer, x in zip(layers, xs)], xs)
    rng = np.random.default_rng(seed)
    dys = [rng.standard_normal(s.shape) for s in shapes]

    def ours(xs, dys):
        out = []
        for layer, x, dy in zip(layers, xs, dys):
            y, _, pullback = layer.vjp({}, {}, x)
            out.append((y, pullback(dy)))
        return out

    def theirs(xs, dys):
        out = []
        for layer, x, dy in zip(layers, xs, dys):
            y, pullback = jax.vjp(lambda x, layer=layer: layer.apply({}, {}, x)[0], x)
            out.append((y, ({}, *pullback(dy))))
        return out

    check_function(ours, theirs, xs, dys, what="pullbacks")


TIES = {  # (window, strides, padding)
    "overlap-valid": (3, 2, "VALID"), "overlap-same": (3, 2, "SAME"), "overlap-explicit": (3, 2, ((1, 2), (2, 0))),
    # tiling windows: the reshape path
    "tiled": (2, None, "VALID"), "tiled-ragged": ((2, 3), None, "VALID"), "tiled-same": (2, None, "SAME"),
}


def test_maxpool_ties_route_like_jax():
    # All-equal input (every window ties) and a few-valued one (some windows tie): dx equals jax.vjp's,
    # for each geometry (one program for all of them).
    inputs = [np.ones((1, 7, 8, 2)), np.round(np.random.default_rng(0).standard_normal((1, 7, 8, 2)))]
    layers = [MaxPool2D(window, strides=strides, padding=padding) for window, strides, padding in TIES.values()]
    _pullbacks_equal_jax([layer for layer in layers for _ in inputs], [x for _ in layers for x in inputs])


def test_maxpool_minus_infinity_ties_route_like_jax():
    # A window of -inf values and -inf padding: JAX's gradient takes the padding (it comes first), so dy
    # is dropped there; a window whose real -inf comes first sends dy to it.
    x = jnp.full((1, 4, 5, 1), -jnp.inf).at[0, 1, 1, 0].set(1.0)
    # (check_layer cannot be used: y holds -inf, and -inf - -inf is NaN.)
    cases = [(MaxPool2D(3, strides=2, padding="SAME"), x),
             (MaxPool3D(2, strides=1, padding=((1, 0), (0, 1), (1, 1))), x[:, None].repeat(2, axis=1))]

    @jax.jit
    def ours_and_jax(xs):
        out = []
        for (layer, _), x in zip(cases, xs):
            y, _, pullback = layer.vjp({}, {}, x)
            y_jax, pullback_jax = jax.vjp(lambda x, layer=layer: layer.apply({}, {}, x)[0], x)
            dy = jax.random.normal(_cheap_key(1), y.shape)
            out.append((y, y_jax, pullback(dy)[1], pullback_jax(dy)[0]))
        return out

    for y, y_jax, dx, dx_jax in ours_and_jax([x for _, x in cases]):
        np.testing.assert_array_equal(y, y_jax)
        np.testing.assert_array_equal(dx, dx_jax)


def test_max_pool_uses_no_private_jax_primitive():
    # lax.select_and_scatter_add_p was JAX-internal; the pullback is public lax (argmax, scatter_add).
    tree = ast.parse(pathlib.Path(pooling.__file__).read_text())
    privates = [ast.unparse(node) for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("lax", "jax")
                and (node.attr.endswith("_p") or node.attr.startswith("_"))]
    assert privates == []


def test_maxpool_ties_send_dy_to_first_maximum_once():
    x = jnp.zeros((1, 4, 1))
    _, _, pullback = MaxPool1D(2).vjp({}, {}, x)
    _, dx = pullback(jnp.array([3.0, 5.0]).reshape(1, 2, 1))
    np.testing.assert_array_equal(dx[0, :, 0], [3.0, 0.0, 5.0, 0.0])


# ------------------------------------------------------------------------------------ shape inference


def test_init_infers_shapes_with_unknown_batch(key):
    model = serial(MaxPool2D(3, strides=2, padding="SAME"), AvgPool2D(2), Flatten(), Reshape((-1, 2)))
    out_shape, params, state = model.init(key, (-1, 7, 9, 4))
    assert out_shape == (-1, 8, 2)  # 7x9 -> 4x5 -> 2x2, x4 channels = 16 -> (8, 2)
    assert params == ({}, {}, {}, {}) and state == ({}, {}, {}, {})
    assert GlobalAvgPool().init(key, (-1, 5, 3))[0] == (-1, 3)
    assert MaxPool1D(2, strides=3).init(key, (-1, 8, 1))[0] == (-1, 3, 1)
    assert MaxPool3D(2, strides=(1, 2, 3), padding="SAME").init(key, (-1, 3, 5, 7, 2))[0] == (-1, 3, 3, 3, 2)
    assert AvgPool3D((1, 2, 3)).init(key, (-1, 3, 5, 7, 2))[0] == (-1, 3, 2, 2, 2)
    assert GlobalAvgPool().init(key, (-1, 3, 5, 7, 2))[0] == (-1, 2)


# ------------------------------------------------------------------------------------ errors


def test_error_wrong_rank_2d(key):
    message = r"MaxPool2D: expected input of rank 4 \(N, H, W, C\), got shape \(28, 28\)"
    with pytest.raises(ValueError, match=message):
        MaxPool2D(2).init(key, (28, 28))


def test_error_wrong_rank_1d_at_apply():
    message = r"AvgPool1D: expected input of rank 3 \(N, W, C\), got shape \(2, 4, 4, 1\)"
    with pytest.raises(ValueError, match=message):
        AvgPool1D(2).apply({}, {}, jnp.ones((2, 4, 4, 1)))


def test_error_wrong_rank_3d(key):
    message = r"MaxPool3D: expected input of rank 5 \(N, D, H, W, C\), got shape \(2, 8, 8, 1\)"
    with pytest.raises(ValueError, match=message):
        MaxPool3D(2).init(key, (2, 8, 8, 1))


def test_error_wrong_rank_3d_at_apply():
    message = r"AvgPool3D: expected input of rank 5 \(N, D, H, W, C\), got shape \(4, 4, 1\)"
    with pytest.raises(ValueError, match=message):
        AvgPool3D(2).apply({}, {}, jnp.ones((4, 4, 1)))


def test_error_window_wrong_length_3d():
    message = r"MaxPool3D: window must be an int or a sequence of 3 ints, got window=\(2, 2\)"
    with pytest.raises(ValueError, match=message):
        MaxPool3D((2, 2))


def test_error_window_not_positive():
    with pytest.raises(ValueError, match=r"MaxPool2D: window must be positive integers, got window=\(0, 2\)"):
        MaxPool2D((0, 2))


def test_error_window_wrong_length():
    with pytest.raises(ValueError, match=r"AvgPool2D: window must be an int or a sequence of 2 ints, got window=\(2, 2, 2\)"):
        AvgPool2D((2, 2, 2))


def test_error_strides_not_positive():
    with pytest.raises(ValueError, match=r"AvgPool1D: strides must be positive integers, got strides=-1"):
        AvgPool1D(2, strides=-1)


def test_error_unknown_padding():
    with pytest.raises(ValueError, match=r"MaxPool1D: padding must be 'SAME', 'VALID' .*got padding='FULL'"):
        MaxPool1D(2, padding="FULL")


def test_error_padding_wrong_structure():
    message = r"MaxPool2D: padding must be .*2 \(lo, hi\) pairs of ints >= 0, got padding=\(1, 1\)"
    with pytest.raises(ValueError, match=message):
        MaxPool2D(2, padding=(1, 1))


def test_error_padding_not_below_window():
    message = r"AvgPool2D: padding must satisfy 0 <= pad < window=\(2, 2\), got padding=\(\(0, 2\), \(0, 0\)\)"
    with pytest.raises(ValueError, match=message):
        AvgPool2D(2, padding=((0, 2), (0, 0)))


def test_error_window_larger_than_padded_input(key):
    message = r"MaxPool2D: window \(3, 3\) is larger than the padded input \(2, 9\)"
    with pytest.raises(ValueError, match=message):
        MaxPool2D(3).init(key, (1, 2, 9, 1))


def test_error_count_include_pad_not_bool():
    message = r"AvgPool2D: count_include_pad must be a bool, got count_include_pad='no'"
    with pytest.raises(ValueError, match=message):
        AvgPool2D(2, count_include_pad="no")


def test_error_global_avg_pool_rank(key):
    message = (r"GlobalAvgPool: expected input of rank 3 \(N, W, C\), 4 \(N, H, W, C\) or "
               r"5 \(N, D, H, W, C\), got shape \(2, 5\)")
    with pytest.raises(ValueError, match=message):
        GlobalAvgPool().init(key, (2, 5))
    with pytest.raises(ValueError, match=r"GlobalAvgPool: .*got shape \(1, 2, 2, 2, 2, 1\)"):
        GlobalAvgPool().apply({}, {}, jnp.ones((1, 2, 2, 2, 2, 1)))


def test_error_flatten_rank(key):
    with pytest.raises(ValueError, match=r"Flatten: expected input of rank >= 2 \(N, ...\), got shape \(5,\)"):
        Flatten().init(key, (5,))


def test_error_reshape_two_unknowns():
    message = r"Reshape: shape must be positive integers with at most one -1, got shape=\(-1, -1\)"
    with pytest.raises(ValueError, match=message):
        Reshape((-1, -1))


def test_error_reshape_size_mismatch(key):
    message = r"Reshape: cannot reshape \(3, 4\) \(12 elements per example\) to shape=\(5, -1\)"
    with pytest.raises(ValueError, match=message):
        Reshape((5, -1)).init(key, (2, 3, 4))


# ------------------------------------------------------------------------------------ fuzzing


@st.composite
def _pool_geometry(draw):
    window = tuple(draw(st.integers(1, 3)) for _ in range(2))
    strides = tuple(draw(st.integers(1, 4)) for _ in range(2))
    padding = draw(st.one_of(
        st.sampled_from(["SAME", "VALID"]),
        st.tuples(*[st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)) for k in window]),
    ))
    size = tuple(draw(st.integers(k, k + 5)) for k in window)
    return window, strides, padding, size


# Each example checks a list of geometries in one compiled program per side: compiling dominates, about
# 0.3 s per geometry either way, and a program per geometry added the init and input draws of check_layer
# to each. 3 examples of 6 distinct geometries, each pooled by max, by average with and by average without
# the padding in the count (2 of each): 18 geometries, where 15 examples of one geometry and a drawn
# kind gave 15.
KINDS = ["max", "avg-include-pad", "avg-exclude-pad"]


@settings(max_examples=3, deadline=None)
@given(geometries=st.lists(_pool_geometry(), min_size=6, max_size=6, unique=True))
def test_fuzz_pool2d_pullback_matches_jax(geometries):
    layers, xs = [], []
    for i, (window, strides, padding, (h, w)) in enumerate(geometries):
        kind = KINDS[i % 3]
        if kind == "max":
            layers.append(MaxPool2D(window, strides=strides, padding=padding))
        else:
            layers.append(AvgPool2D(window, strides=strides, padding=padding,
                                    count_include_pad=kind == "avg-include-pad"))
        xs.append(np.random.default_rng(i).standard_normal((2, h, w, 2)))
    for layer, x in zip(layers, xs):  # the declared out_shape is the output's (as check_layer checks)
        y = jax.eval_shape(lambda x, layer=layer: layer.apply({}, {}, x)[0], x)
        assert layer.init(None, x.shape)[0] == y.shape
    _pullbacks_equal_jax(layers, xs)
