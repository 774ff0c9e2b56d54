"""Conv1D/2D/3D, ConvTranspose1D/2D/3D: forward against direct references, documented output sizes, the
transpose relation, XLA's operand-swap abort, one test per validation error, and a hypothesis fuzz of
the handwritten VJPs. (Pullbacks of fixed configurations are checked by the registry rows in cases_conv.py.)"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from purenet.check import check_function, compare, tolerance, upcast
from purenet.layers.dense import Dense
from purenet.layers.conv import (Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D,
                                 _input_grad_pads, _out_spatial, _pads, _swapper_trap)


def reference_conv2d(x, w, strides, dilation, pads, groups):
    """Direct loops over output pixels and kernel taps. x (N, H, W, C), w (KH, KW, C/G, F)."""
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    (kh, kw, cg, f), fg = w.shape, w.shape[-1] // groups
    oh = (x.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    ow = (x.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    y = np.zeros((x.shape[0], oh, ow, f))
    for p, q, i, j, g in itertools.product(range(oh), range(ow), range(kh), range(kw), range(groups)):
        pixel = x[:, p * strides[0] + i * dilation[0], q * strides[1] + j * dilation[1], g * cg:(g + 1) * cg]
        y[:, p, q, g * fg:(g + 1) * fg] += pixel @ w[i, j, :, g * fg:(g + 1) * fg]
    return y


def reference_conv_transpose2d(x, w, strides, dilation, lo, out_spatial):
    """The documented scatter: pixel (i, ii) stamps tap (j, jj) at (i*s + j*d - lo), kept inside L."""
    n, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    y = np.zeros((n, *out_spatial, f))
    for i, ii, j, jj in itertools.product(range(h), range(wd), range(kh), range(kw)):
        p = i * strides[0] + j * dilation[0] - lo[0]
        q = ii * strides[1] + jj * dilation[1] - lo[1]
        if 0 <= p < out_spatial[0] and 0 <= q < out_spatial[1]:
            y[:, p, q] += x[:, i, ii] @ w[j, jj]
    return y


def reference_conv(x, w, strides, dilation, pads, groups):
    """Any number of spatial dims: a sum over kernel taps of strided slices of the padded x, each
    contracted with its tap per group. x (N, *S, C), w (*K, C/G, F) -> (N, *O, F)."""
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    *kernel, cg, f = w.shape
    out = [(size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(x.shape[1:-1], kernel, strides, dilation)]
    y = np.zeros((x.shape[0], *out, f))
    for tap in itertools.product(*map(range, kernel)):
        view = x[(slice(None), *(slice(j * d, j * d + (o - 1) * s + 1, s)
                                 for j, d, o, s in zip(tap, dilation, out, strides)))]  # (N, *O, C)
        for g in range(groups):
            fg = slice(g * f // groups, (g + 1) * f // groups)
            y[..., fg] += view[..., g * cg:(g + 1) * cg] @ w[tap][:, fg]
    return y


def reference_conv_transpose(x, w, strides, dilation, lo, out_spatial, groups):
    """The documented scatter, any number of spatial dims: input position i stamps tap j at
    i*s + j*d - lo, kept inside L; input block g feeds output block g. w (*K, C, F/G)."""
    n, *spatial, c = x.shape
    *kernel, _, fg = w.shape
    y = np.zeros((n, *out_spatial, fg * groups))
    for i, j in itertools.product(itertools.product(*map(range, spatial)), itertools.product(*map(range, kernel))):
        p = tuple(a * s + b * d - low for a, b, s, d, low in zip(i, j, strides, dilation, lo))
        if all(0 <= q < size for q, size in zip(p, out_spatial)):
            for g in range(groups):
                block = slice(g * c // groups, (g + 1) * c // groups)
                y[(slice(None), *p, slice(g * fg, (g + 1) * fg))] += x[(slice(None), *i, block)] @ w[j][block]
    return y


def _key(seed):
    """An rbg key: threefry's `normal` compiles anew for every shape, which dominated this file's time."""
    return jax.random.key(seed, impl="rbg")


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _declared(layer, in_shape, seed=0, dtype=np.float64):
    """(out_shape, params) of layer.init, only traced (nothing compiles): the params standard normal, of
    init's shapes, drawn by numpy in `dtype`."""
    out_shapes = []

    def init(key):
        out_shape, params, _ = layer.init(key, in_shape)
        out_shapes.append(out_shape)
        return params

    shapes = jax.eval_shape(init, _key(0))
    rng = np.random.default_rng(seed + 1)
    return out_shapes[0], {k: rng.standard_normal(shapes[k].shape).astype(dtype) for k in sorted(shapes)}


def _run(layer, in_shape, seed=0):
    """apply on a standard-normal x with standard-normal params; -> (x, params as numpy, y as numpy)."""
    out_shape, params = _declared(layer, in_shape, seed)
    x = _normal(seed, in_shape)
    y, _ = layer.apply(params, {}, x)
    assert y.shape == out_shape
    return x, params, np.asarray(y)


# Pullback checks of several layers in one program, every random value drawn here by numpy: a draw inside
# the program (as check_layer and check_dot_product make them: params, input, tangents, cotangent) costs
# more to compile than a convolution's forward and pullback together (about 0.2 s per drawn shape, at the
# suite's LLVM level 0).


def _draws(layers, in_shapes, dtype, seed=0):
    """Standard-normal params, inputs and output cotangents for the layers, in `dtype`; checks each
    layer's declared out_shape against its output."""
    params = [_declared(layer, in_shape, seed + i, dtype)[1] for i, (layer, in_shape) in enumerate(zip(layers,
                                                                                                         in_shapes))]
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(in_shape).astype(dtype) for in_shape in in_shapes]
    ys = jax.eval_shape(lambda params, xs: [layer.apply(p, {}, x)[0] for layer, p, x in zip(layers, params, xs)],
                        params, xs)
    for layer, in_shape, y in zip(layers, in_shapes, ys):
        assert _declared(layer, in_shape)[0] == y.shape, layer.name
    return params, xs, [rng.standard_normal(y.shape).astype(dtype) for y in ys]


def _pullbacks_equal_jax(layers, in_shapes, dtype=np.float64):
    """Each layer's (y, (dparams, dx)) against jax.vjp of its apply, one program per side, by the suite's
    rule for `dtype` (check_function: float64 within 1e-10, float32 against the float64 truth)."""
    def ours(params, xs, dys):
        return [(y, pullback(dy)) for (y, _, pullback), dy in
                zip((layer.vjp(p, {}, x) for layer, p, x in zip(layers, params, xs)), dys)]

    def theirs(params, xs, dys):
        results = []
        for layer, p, x, dy in zip(layers, params, xs, dys):
            y, pullback = jax.vjp(lambda p, x, layer=layer: layer.apply(p, {}, x)[0], p, x)
            results.append((y, pullback(dy)))
        return results

    check_function(ours, theirs, *_draws(layers, in_shapes, dtype), what="pullbacks")


def _adjoint_identities_hold(layers, in_shapes, dtype=np.float64):
    """<dy, J t> = <pullback(dy), t> for each layer, J t by jax.jvp of apply at random tangents t of the
    params and x (what check_dot_product checks; needs no jax.vjp), within the table's tolerance."""
    params, xs, dys = _draws(layers, in_shapes, dtype)
    rng = np.random.default_rng(1)
    tangents = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(dtype), (params, xs))

    @jax.jit
    def gaps(params, xs, tangents, dys):
        result = []
        for layer, p, x, t_p, t_x, dy in zip(layers, params, xs, *tangents, dys):
            _, jt = jax.jvp(lambda p, x, layer=layer: layer.apply(p, {}, x)[0], (p, x), (t_p, t_x))
            grads = layer.vjp(p, {}, x)[2](dy)
            rhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves((t_p, t_x))))
            result.append(jnp.abs(jnp.vdot(dy, jt) - rhs) / (jnp.linalg.norm(dy) * jnp.linalg.norm(jt)))
        return result

    for layer, in_shape, gap in zip(layers, in_shapes, gaps(params, xs, tangents, dys)):
        assert float(gap) <= tolerance(dtype), f"{layer.name} on {in_shape}: adjoint gap {float(gap):.2e}"


# ------------------------------------------------------------------------------- forward references


@pytest.mark.parametrize("kwargs, pads", [
    (dict(strides=(2, 3), dilation=(1, 2), padding=((1, 0), (2, 1)), feature_group_count=2), ((1, 0), (2, 1))),
    (dict(strides=2, padding="SAME"), ((0, 1), (1, 1))),  # H 6: total 1 -> (0, 1); W 7: total 2 -> (1, 1)
])
def test_conv2d_forward_matches_loops(kwargs, pads):
    layer = Conv2D(4, 3, **kwargs)
    x, params, y = _run(layer, (2, 6, 7, 2))
    strides = (kwargs["strides"],) * 2 if isinstance(kwargs["strides"], int) else kwargs["strides"]
    dilation = kwargs.get("dilation", (1, 1))
    expected = reference_conv2d(x, params["w"], strides, dilation, pads, kwargs.get("feature_group_count", 1))
    np.testing.assert_allclose(y, expected + params["b"].reshape(1, 1, 1, -1), rtol=1e-12, atol=1e-12)


def test_conv2d_forward_matches_lax_same():
    layer = Conv2D(3, (3, 2), strides=2, dilation=(2, 1), padding="SAME", use_bias=False)
    x, params, y = _run(layer, (1, 7, 9, 2))
    expected = lax.conv_general_dilated(x, params["w"], (2, 2), "SAME", rhs_dilation=(2, 1),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_conv3d_forward_matches_taps_reference():
    layer = Conv3D(4, (2, 3, 2), strides=(1, 2, 3), dilation=(2, 1, 1), padding=((1, 0), (0, 2), (1, 1)),
                   feature_group_count=2)
    x, params, y = _run(layer, (2, 4, 5, 6, 2))
    expected = reference_conv(x, params["w"], (1, 2, 3), (2, 1, 1), ((1, 0), (0, 2), (1, 1)), 2)
    np.testing.assert_allclose(y, expected + params["b"].reshape(1, 1, 1, 1, -1), rtol=1e-12, atol=1e-12)


def test_conv3d_same_matches_lax():
    layer = Conv3D(3, (3, 2, 2), strides=2, dilation=(1, 2, 1), padding="SAME", use_bias=False)
    x, params, y = _run(layer, (1, 5, 4, 3, 2))
    expected = lax.conv_general_dilated(x, params["w"], (2, 2, 2), "SAME", rhs_dilation=(1, 2, 1),
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_conv1d_forward_matches_loops():
    layer = Conv1D(4, 2, strides=3, dilation=2, padding=((2, 1),), feature_group_count=2)
    x, params, y = _run(layer, (2, 10, 4))
    expected = reference_conv2d(x[:, None], params["w"][None], (1, 3), (1, 2), ((0, 0), (2, 1)), 2)[:, 0]
    np.testing.assert_allclose(y, expected + params["b"].reshape(1, 1, -1), rtol=1e-12, atol=1e-12)


TAPS = [  # (conv, kwargs, in_shape): one input channel
    (Conv2D, dict(kernel_size=5), (3, 12, 11, 1)),
    (Conv2D, dict(kernel_size=(3, 2), strides=(2, 3), dilation=(1, 2), padding=((1, 0), (2, 3))), (1, 9, 10, 1)),
    (Conv2D, dict(kernel_size=3, strides=2, padding="SAME"), (2, 7, 8, 1)),
    (Conv1D, dict(kernel_size=4, strides=3, dilation=2, padding=((2, 1),)), (2, 17, 1)),
    (Conv3D, dict(kernel_size=(2, 3, 2), strides=(1, 2, 1), padding="SAME"), (1, 3, 5, 4, 1)),
]


def test_taps_formulation_equals_lax_conv():
    # The same params under both algorithms: the outputs agree to rounding. Every case in one program.
    cases = [(conv(4, **kwargs, algorithm="taps"), conv(4, **kwargs, algorithm="xla"), in_shape)
             for conv, kwargs, in_shape in TAPS]
    params = [_declared(taps, in_shape)[1] for taps, _, in_shape in cases]
    xs = [_normal(0, in_shape) for _, _, in_shape in cases]

    @jax.jit
    def both_algorithms(params, xs):
        return [(taps.apply(p, {}, x)[0], xla.apply(p, {}, x)[0]) for (taps, xla, _), p, x in zip(cases, params, xs)]

    for (conv, kwargs, _), (y_taps, y_xla) in zip(TAPS, both_algorithms(params, xs)):
        np.testing.assert_allclose(y_taps, y_xla, rtol=1e-12, atol=1e-12, err_msg=f"{conv.__name__} {kwargs}")


@pytest.mark.parametrize("kwargs, lo, out_spatial", [
    (dict(strides=2), (0, 0), (9, 11)),  # VALID: (H-1)s + k
    (dict(strides=2, padding="SAME"), (0, 0), (8, 10)),  # SAME: H*s, lo = (k - s) // 2 = 0
    (dict(strides=(3, 1), padding="SAME"), (0, 1), (12, 5)),  # k < s: zero-extended to H*s
    (dict(strides=2, dilation=2, padding=((2, 1), (0, 3))), (2, 0), (8, 10)),  # (H-1)s + dk + 1 - lo - hi
])
def test_conv_transpose2d_forward_matches_scatter(kwargs, lo, out_spatial):
    layer = ConvTranspose2D(2, 3, **kwargs)
    x, params, y = _run(layer, (2, 4, 5, 3))
    expected = reference_conv_transpose2d(x, params["w"], *_pairs(kwargs), lo, out_spatial)
    np.testing.assert_allclose(y, expected + params["b"].reshape(1, 1, 1, -1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transpose, kwargs, in_shape, lo, out_spatial", [
    (ConvTranspose1D, dict(strides=3, dilation=2, padding=((1, 2),), feature_group_count=2), (2, 4, 4), (1,), (11,)),
    (ConvTranspose2D, dict(strides=(2, 1), padding="SAME", feature_group_count=3), (1, 3, 4, 3), (0, 0), (6, 4)),
    (ConvTranspose3D, dict(strides=(2, 1, 2), padding=((0, 1), (1, 0), (0, 0)), feature_group_count=2),
     (1, 2, 3, 2, 4), (0, 1, 0), (4, 3, 4)),
])
def test_grouped_conv_transpose_forward_matches_scatter(transpose, kwargs, in_shape, lo, out_spatial):
    n = len(in_shape) - 2
    layer = transpose(6 if n == 2 else 4, (3, 2, 2)[:n] if n > 1 else 3, **kwargs)
    x, params, y = _run(layer, in_shape)
    groups = kwargs["feature_group_count"]
    assert params["w"].shape[-2:] == (in_shape[-1], y.shape[-1] // groups)  # (*K, C, F/G)
    strides = kwargs["strides"] if isinstance(kwargs["strides"], tuple) else (kwargs["strides"],) * n
    dilation = kwargs.get("dilation", 1)
    dilation = dilation if isinstance(dilation, tuple) else (dilation,) * n
    expected = reference_conv_transpose(x, params["w"], strides, dilation, lo, out_spatial, groups)
    np.testing.assert_allclose(y, expected + params["b"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transpose, conv, in_shape", [
    (ConvTranspose1D, Conv1D, (2, 4, 4)), (ConvTranspose3D, Conv3D, (1, 2, 3, 2, 4)),
])
def test_grouped_conv_transpose_is_the_transpose_of_conv(transpose, conv, in_shape):
    # <ConvT(x), z> = <x, Conv(z)> with Conv's kernel = ConvT's with the last two axes swapped.
    kwargs = dict(strides=2, dilation=2, padding="SAME", feature_group_count=2, use_bias=False)
    x, params, y = _run(transpose(6, 2, **kwargs), in_shape)
    z = _normal(1, y.shape)
    conv_z, _ = conv(in_shape[-1], 2, **kwargs).apply({"w": np.swapaxes(params["w"], -1, -2)}, {}, z)
    assert conv_z.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, conv_z), rtol=1e-12)


def _pairs(kwargs):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return pair(kwargs.get("strides", 1)), pair(kwargs.get("dilation", 1))


@pytest.mark.parametrize("padding", ["VALID", "SAME", ((1, 2), (0, 1))])
def test_conv_transpose2d_is_the_transpose_of_conv2d(padding):
    transposed = ConvTranspose2D(2, 3, strides=2, dilation=(1, 2), padding=padding, use_bias=False)
    conv = Conv2D(3, 3, strides=2, dilation=(1, 2), padding=padding, use_bias=False)
    x, params, y = _run(transposed, (2, 4, 5, 3))
    z = _normal(1, y.shape)
    conv_z, _ = conv.apply({"w": np.swapaxes(params["w"], -1, -2)}, {}, z)
    assert conv_z.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, conv_z), rtol=1e-12)


# ---------------------------------------------- input-gradient convolutions XLA's operand swapper breaks


def _dx_trap(spatial, kernel, strides, dilation, padding):
    """Whether a convolution's input gradient (ours without the workaround, and jax.vjp's) has an axis
    that conv._swapper_trap flags. Ints or n-tuples; padding as the layer takes it."""
    n = len(spatial)
    kernel, strides, dilation = ((v,) * n if isinstance(v, int) else tuple(v) for v in (kernel, strides, dilation))
    pads = _pads(padding, spatial, kernel, strides, dilation)
    out = _out_spatial(spatial, kernel, strides, dilation, pads)
    pads_t = _input_grad_pads(spatial, out, kernel, strides, dilation, pads)
    return any(_swapper_trap(kernel, strides, dilation, pads_t))


TRAPPED_CONV2D = [  # (kwargs, in_shape): each aborted XLA in check_dot_product before the workaround
    (dict(kernel_size=(3, 2), strides=2, padding=((0, 2), (1, 1))), (2, 1, 4, 2)),
    (dict(kernel_size=(3, 2), strides=(1, 2), padding=((1, 0), (1, 1))), (1, 2, 6, 3)),
    (dict(kernel_size=(2, 3), strides=(2, 1), padding=((1, 1), (1, 0)), use_bias=False), (2, 4, 3, 2)),
    (dict(kernel_size=(3, 2), strides=(1, 2), dilation=(2, 1), padding=((1, 0), (1, 1)), algorithm="xla"),
     (1, 4, 4, 1)),
]


# 3-D: the same abort (each compiled in a subprocess before the workaround covered 3-D: SIGABRT). 1-D
# never aborts: with no other axis, XLA never finds the swap worth it.
TRAPPED_CONV3D = (dict(kernel_size=(1, 3, 2), strides=(1, 1, 2), padding=((1, 0), (1, 0), (1, 2))),
                  (1, 1, 2, 6, 2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_pullback_where_xla_swaps_operands(dtype):
    # jax.vjp of these convolutions aborts the process inside XLA, so jax.vjp cannot serve as the
    # reference here; the adjoint identity against jax.jvp of the forward checks dx and dw instead, for
    # all of them in one program (each keeps its own input-gradient convolution).
    cases = [((Conv2D if len(in_shape) == 4 else Conv3D)(3, **kwargs), kwargs, in_shape)
             for kwargs, in_shape in [*TRAPPED_CONV2D, TRAPPED_CONV3D]]
    for _, kwargs, in_shape in cases:
        assert _dx_trap(in_shape[1:-1], kwargs["kernel_size"], kwargs["strides"], kwargs.get("dilation", 1),
                        kwargs["padding"])
    _adjoint_identities_hold([layer for layer, _, _ in cases], [in_shape for _, _, in_shape in cases], dtype)


def test_grouped_conv_transpose3d_forward_where_xla_swaps_operands():
    layer = ConvTranspose3D(4, (3, 3, 2), strides=2, padding=((0, 2), (0, 2), (1, 1)), feature_group_count=2)
    x, params, y = _run(layer, (1, 1, 1, 3, 2))
    expected = reference_conv_transpose(x, params["w"], (2, 2, 2), (1, 1, 1), (0, 0, 1), (1, 1, 4), 2)
    np.testing.assert_allclose(y, expected + params["b"], rtol=1e-12, atol=1e-12)


def test_registry_rows_avoid_the_swapper_trap():
    # jax.vjp, the registry's reference, would abort the test process on such a row.
    from tests.registry import CASES
    for case in CASES:
        if case.constructor in (Conv1D, Conv2D, Conv3D) and case.kwargs.get("algorithm") != "taps":
            kw = case.kwargs
            assert not _dx_trap(case.in_shape[1:-1], kw["kernel_size"], kw.get("strides", 1), kw.get("dilation", 1),
                                kw.get("padding", "VALID")), case.id


def test_conv_transpose2d_forward_where_xla_swaps_operands():
    layer = ConvTranspose2D(3, (3, 2), strides=2, padding=((0, 2), (1, 1)))
    x, params, y = _run(layer, (2, 1, 3, 2))
    expected = reference_conv_transpose2d(x, params["w"], (2, 2), (1, 1), (0, 1), (1, 4))
    np.testing.assert_allclose(y, expected + params["b"].reshape(1, 1, 1, -1), rtol=1e-12, atol=1e-12)


def test_declared_shapes_keep_unknown_batch():
    def out_shape(layer, in_shape):
        return _declared(layer, in_shape)[0]

    assert out_shape(Conv2D(5, 3, strides=2), (-1, 7, 9, 4)) == (-1, 3, 4, 5)
    assert out_shape(Conv2D(5, 3, strides=2, padding="SAME"), (-1, 7, 9, 4)) == (-1, 4, 5, 5)
    assert out_shape(Conv1D(2, 3, dilation=3), (-1, 11, 4)) == (-1, 5, 2)
    assert out_shape(ConvTranspose2D(5, 3, strides=2), (-1, 7, 9, 4)) == (-1, 15, 19, 5)
    assert out_shape(ConvTranspose2D(5, 3, strides=2, padding="SAME"), (-1, 7, 9, 4)) == (-1, 14, 18, 5)
    _, params = _declared(Conv2D(6, (3, 2), feature_group_count=2), (-1, 7, 9, 4))
    assert params["w"].shape == (3, 2, 2, 6) and params["b"].shape == (6,)
    out, params = _declared(Conv3D(6, (3, 2, 1), strides=2, feature_group_count=3), (-1, 7, 5, 4, 3))
    assert out == (-1, 3, 2, 2, 6) and params["w"].shape == (3, 2, 1, 1, 6)
    out, params = _declared(ConvTranspose1D(6, 3, strides=2, feature_group_count=2), (-1, 5, 4))
    assert out == (-1, 11, 6) and params["w"].shape == (3, 4, 3)
    out, params = _declared(ConvTranspose3D(4, 2, strides=2, padding="SAME", feature_group_count=2), (-1, 2, 3, 4, 2))
    assert out == (-1, 4, 6, 8, 4) and params["w"].shape == (2, 2, 2, 2, 2)


# ------------------------------------------------------------------------------------------ errors


def _init(layer, in_shape):
    return layer.init(_key(0), in_shape)


def _apply(layer, in_shape, x_shape):
    """init on `in_shape` (valid; traced only), then apply to an x of `x_shape`."""
    return layer.apply(_declared(layer, in_shape)[1], {}, np.zeros(x_shape))


ERRORS = {
    "init-rank": (lambda: _init(Conv2D(2, 3), (28, 28)),
                  r"Conv2D: expected input of rank 4 \(N, H, W, C\), got shape \(28, 28\)"),
    "init-rank-1d": (lambda: _init(Conv1D(2, 3), (2, 5, 5, 1)),
                     r"Conv1D: expected input of rank 3 \(N, W, C\), got shape \(2, 5, 5, 1\)"),
    "init-rank-transpose": (lambda: _init(ConvTranspose2D(2, 3), (2, 5, 1)),
                            r"ConvTranspose2D: expected input of rank 4 \(N, H, W, C\), got shape \(2, 5, 1\)"),
    "apply-rank": (lambda: _apply(Conv2D(2, 3), (2, 7, 9, 4), (7, 9, 4)),
                   r"Conv2D: expected input of rank 4 \(N, H, W, C\), got shape \(7, 9, 4\)"),
    "apply-channels": (lambda: _apply(Conv2D(2, 3), (2, 7, 9, 4), (2, 7, 9, 3)),
                       r"Conv2D: expected input shape \(N, \.\.\., 4\), got \(2, 7, 9, 3\)"),
    "apply-channels-grouped": (lambda: _apply(Conv1D(4, 3, feature_group_count=2), (2, 7, 6), (2, 7, 4)),
                               r"Conv1D: expected input shape \(N, \.\.\., 6\), got \(2, 7, 4\)"),
    "apply-channels-transpose": (lambda: _apply(ConvTranspose2D(2, 3), (2, 4, 4, 3), (2, 4, 4, 2)),
                                 r"ConvTranspose2D: expected input shape \(N, \.\.\., 3\), got \(2, 4, 4, 2\)"),
    "init-kernel-too-large": (lambda: _init(Conv2D(2, 5), (1, 4, 9, 1)),
                              r"Conv2D: dilated kernel \(5, 5\) is larger than the padded input \(4, 9\)"),
    "init-dilated-kernel-too-large": (lambda: _init(Conv2D(2, 3, dilation=3, padding=((0, 0), (1, 0))),
                                                    (1, 6, 5, 1)),
                                      r"Conv2D: dilated kernel \(7, 7\) is larger than the padded input \(6, 6\)"),
    "apply-kernel-too-large": (lambda: _apply(Conv1D(2, 4), (1, 9, 1), (1, 3, 1)),
                               r"Conv1D: dilated kernel \(4,\) is larger than the padded input \(3,\)"),
    "init-empty-spatial": (lambda: _init(Conv2D(2, 1), (2, 0, 9, 3)),
                           r"Conv2D: spatial sizes must be positive, got \(0, 9\)"),
    "strides-zero": (lambda: Conv2D(2, 3, strides=(0, 1)),
                     r"Conv2D: strides must be positive integers, got strides=\(0, 1\)"),
    "strides-float": (lambda: Conv1D(2, 3, strides=1.5),
                      r"Conv1D: strides must be positive integers, got strides=1\.5"),
    "strides-zero-transpose": (lambda: ConvTranspose2D(2, 3, strides=(1, 0)),
                               r"ConvTranspose2D: strides must be positive integers, got strides=\(1, 0\)"),
    "dilation-negative": (lambda: Conv2D(2, 3, dilation=-1),
                          r"Conv2D: dilation must be positive integers, got dilation=-1"),
    "kernel-zero": (lambda: Conv1D(2, 0),
                    r"Conv1D: kernel_size must be positive integers, got kernel_size=0"),
    "kernel-wrong-length": (lambda: Conv2D(2, (3, 3, 3)),
                            r"Conv2D: kernel_size must be an int or a sequence of 2 ints, "
                            r"got kernel_size=\(3, 3, 3\)"),
    "out-channels-zero": (lambda: Conv2D(0, 3),
                          r"Conv2D: out_channels must be positive integers, got out_channels=0"),
    "groups-zero": (lambda: Conv2D(2, 3, feature_group_count=0),
                    r"Conv2D: feature_group_count must be positive integers, got feature_group_count=0"),
    "padding-unknown": (lambda: Conv2D(2, 3, padding="FULL"),
                        r"Conv2D: padding must be 'SAME', 'VALID' or 2 \(lo, hi\) pairs, got padding='FULL'"),
    "padding-unknown-transpose": (lambda: ConvTranspose2D(2, 3, padding="same-ish"),
                                  r"ConvTranspose2D: padding must be .*, got padding='same-ish'"),
    "padding-pair-count": (lambda: Conv2D(2, 3, padding=((1, 1),)),
                           r"Conv2D: padding must be .* 2 \(lo, hi\) pairs of ints >= 0, "
                           r"got padding=\(\(1, 1\),\)"),
    "padding-negative": (lambda: Conv1D(2, 3, padding=((-1, 0),)),
                         r"Conv1D: padding must be .* 1 \(lo, hi\) pairs of ints >= 0, "
                         r"got padding=\(\(-1, 0\),\)"),
    "out-channels-not-divisible": (lambda: Conv2D(5, 3, feature_group_count=2),
                                   r"Conv2D: out_channels \(=5\) is not divisible by feature_group_count \(=2\)"),
    "in-channels-not-divisible": (lambda: _init(Conv2D(4, 3, feature_group_count=2), (2, 7, 9, 3)),
                                  r"Conv2D: in channels \(=3\) are not divisible by feature_group_count \(=2\)"),
    "algorithm-unknown": (lambda: Conv2D(2, 3, algorithm="im2col"),
                          r"Conv2D: algorithm must be one of \('auto', 'xla', 'taps'\), got algorithm='im2col'"),
    "algorithm-taps-groups": (lambda: Conv1D(2, 3, feature_group_count=2, algorithm="taps"),
                              r"Conv1D: algorithm='taps' needs feature_group_count=1, got 2"),
    "algorithm-taps-channels": (lambda: _init(Conv2D(2, 3, algorithm="taps"), (2, 7, 9, 3)),
                                r"Conv2D: algorithm='taps' needs 1 input channel, got input with 3"),
    "init-rank-3d": (lambda: _init(Conv3D(2, 3), (2, 5, 5, 1)),
                     r"Conv3D: expected input of rank 5 \(N, D, H, W, C\), got shape \(2, 5, 5, 1\)"),
    "init-rank-transpose-1d": (lambda: _init(ConvTranspose1D(2, 3), (2, 5, 5, 1)),
                               r"ConvTranspose1D: expected input of rank 3 \(N, W, C\), got shape \(2, 5, 5, 1\)"),
    "apply-rank-transpose-3d": (lambda: _apply(ConvTranspose3D(2, 2), (1, 2, 2, 2, 3), (2, 2, 2, 3)),
                                r"ConvTranspose3D: expected input of rank 5 \(N, D, H, W, C\), "
                                r"got shape \(2, 2, 2, 3\)"),
    "apply-channels-3d-grouped": (lambda: _apply(Conv3D(4, 2, feature_group_count=2), (1, 3, 3, 3, 4),
                                                 (1, 3, 3, 3, 2)),
                                  r"Conv3D: expected input shape \(N, \.\.\., 4\), got \(1, 3, 3, 3, 2\)"),
    "apply-channels-transpose-grouped": (lambda: _apply(ConvTranspose1D(4, 2, feature_group_count=2), (1, 3, 6),
                                                        (1, 3, 4)),
                                         r"ConvTranspose1D: expected input shape \(N, \.\.\., 6\), got \(1, 3, 4\)"),
    "in-channels-not-divisible-3d": (lambda: _init(Conv3D(4, 1, feature_group_count=4), (1, 2, 2, 2, 6)),
                                     r"Conv3D: in channels \(=6\) are not divisible by feature_group_count \(=4\)"),
    "out-channels-not-divisible-transpose": (lambda: ConvTranspose3D(3, 2, feature_group_count=2),
                                             r"ConvTranspose3D: out_channels \(=3\) is not divisible by "
                                             r"feature_group_count \(=2\)"),
    "in-channels-not-divisible-transpose": (lambda: _init(ConvTranspose2D(4, 2, feature_group_count=2), (1, 3, 3, 3)),
                                            r"ConvTranspose2D: in channels \(=3\) are not divisible by "
                                            r"feature_group_count \(=2\)"),
    "groups-zero-transpose": (lambda: ConvTranspose1D(2, 3, feature_group_count=0),
                              r"ConvTranspose1D: feature_group_count must be positive integers, "
                              r"got feature_group_count=0"),
    "transpose-crop-too-large": (lambda: _init(ConvTranspose2D(2, 3, padding=((2, 2), (0, 0))), (1, 1, 4, 1)),
                                 r"ConvTranspose2D: padding \(\(2, 2\), \(0, 0\)\) "
                                 r"crops the full output \(3, 6\)"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_invalid_configuration_raises(name):
    call, message = ERRORS[name]
    with pytest.raises(ValueError, match=message):
        call()


# -------------------------------------------------------------------------------------------- fuzz
# Each example checks a list of 4 distinct configurations in one program per side (_pullbacks_equal_jax;
# compiling dominates, per configuration): 3 examples, 12 configurations, where 10 examples of one
# configuration each, in check_layer's program with its draws, gave 10.

paddings = st.one_of(st.sampled_from(["SAME", "VALID"]),
                     st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * 2))
pairs = lambda low, high: st.tuples(st.integers(low, high), st.integers(low, high))  # noqa: E731


def _conv_fits(config):
    spatial, kernel, strides, dilation, padding, *_ = config
    pads = padding if not isinstance(padding, str) else ((0, 0), (0, 0))
    return padding == "SAME" or all((k - 1) * d + 1 <= s + lo + hi
                                    for k, d, s, (lo, hi) in zip(kernel, dilation, spatial, pads))


def _transpose_fits(config):
    spatial, kernel, strides, dilation, padding, _ = config
    full = [(h - 1) * s + (k - 1) * d + 1 for h, k, s, d in zip(spatial, kernel, strides, dilation)]
    return isinstance(padding, str) or all(f > lo + hi for f, (lo, hi) in zip(full, padding))


# (spatial, kernel, strides, dilation, padding, batch)
conv2d_configs = st.tuples(pairs(1, 9), pairs(1, 3), pairs(1, 3), pairs(1, 2), paddings,
                           st.integers(1, 2)).filter(_conv_fits)
# The i-th configuration of a list gets (groups, channels per group) GROUPS[i]: each list takes the
# per-tap formulation (1 channel, 'auto' on the CPU), lax.conv, and grouped lax.conv.
GROUPS = [(1, 1), (1, 2), (2, 1), (2, 2)]
# (spatial, kernel, strides, dilation, padding, batch)
transpose2d_configs = st.tuples(pairs(1, 5), pairs(1, 3), pairs(1, 3), pairs(1, 2), paddings,
                                st.integers(1, 2)).filter(_transpose_fits)


@settings(max_examples=3, deadline=None)
@given(configs=st.lists(conv2d_configs, min_size=len(GROUPS), max_size=len(GROUPS), unique=True))
def test_fuzz_conv2d_pullback(configs):
    checked, trapped = ([], []), ([], [])
    for (spatial, kernel, strides, dilation, padding, batch), (groups, channels) in zip(configs, GROUPS):
        layer = Conv2D(2 * groups, kernel, strides=strides, padding=padding, dilation=dilation,
                       feature_group_count=groups)
        # jax.vjp would abort (see above): the adjoint identity instead
        layers, in_shapes = trapped if _dx_trap(spatial, kernel, strides, dilation, padding) else checked
        layers.append(layer)
        in_shapes.append((batch, *spatial, channels * groups))
    for check, (layers, in_shapes) in ((_pullbacks_equal_jax, checked), (_adjoint_identities_hold, trapped)):
        if layers:
            check(layers, in_shapes)


@settings(max_examples=3, deadline=None)
@given(configs=st.lists(transpose2d_configs, min_size=4, max_size=4, unique=True))
def test_fuzz_conv_transpose2d_pullback(configs):
    layers = [ConvTranspose2D(3, kernel, strides=strides, padding=padding, dilation=dilation)
              for _, kernel, strides, dilation, padding, _ in configs]
    _pullbacks_equal_jax(layers, [(batch, *spatial, 2) for spatial, *_, batch in configs])


def test_integer_and_bfloat16_inputs_are_promoted_as_dense_does(key):
    layers = {"conv": Conv2D(2, 3), "transpose": ConvTranspose2D(2, 3, strides=2)}
    params = {name: jax.tree.map(lambda a: a.astype(jnp.float32), _declared(layer, (1, 5, 5, 2))[1])
              for name, layer in layers.items()}
    x = jnp.round(3 * jax.random.normal(key, (1, 5, 5, 2))).astype(jnp.bfloat16)  # exact in every dtype
    dtypes = {"float32": jnp.float32, "truth": jnp.float64, "int32": jnp.int32, "bfloat16": jnp.bfloat16}

    @jax.jit  # every layer on every dtype of x, in one program
    def run(params, x):
        results = {}
        for name, layer in layers.items():
            for dtype_name, dtype in dtypes.items():
                p = upcast(params[name]) if dtype_name == "truth" else params[name]
                y, _, pullback = layer.vjp(p, {}, x.astype(dtype))
                dense = Dense(2).apply({"w": p["w"][0, 0], "b": p["b"]}, {}, x.astype(dtype)[:, 0, 0])[0]
                results[name, dtype_name] = y, pullback(jnp.ones_like(y)), dense.dtype == y.dtype
        return results

    results = run(params, x)
    for name, layer in layers.items():
        reference, truth = results[name, "float32"][0], results[name, "truth"][0]
        for dtype in ("int32", "bfloat16"):
            y, (dparams, dx), like_dense = results[name, dtype]
            assert y.dtype == jnp.float32 and like_dense
            compare(y, reference, truth=truth, what=f"{layer.name} on {dtype}")
            assert dparams["w"].dtype == jnp.float32 and dx.shape == x.shape
            assert dx.dtype == (jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
