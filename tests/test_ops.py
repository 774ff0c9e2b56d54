"""The paired primitives: each pullback equals jax.vjp of its forward, in float64 and float32.

Each test checks its cases in one program per side and dtype (`_check`), inputs drawn by numpy: a
random draw compiled into the program, or an eager jnp operation, costs more than these primitives."""

import jax
import jax.numpy as jnp
import numpy as np

from purenet import ops
from purenet.check import check_function


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _vjp_of(forward, nondiff=()):
    """-> theirs(*args, dy): JAX's pullback of `forward` at args, of dy, for the args not in `nondiff`."""
    def theirs(*args_and_dy):
        _, pullback = jax.vjp(forward, *args_and_dy[:-1])
        return tuple(g for i, g in enumerate(pullback(args_and_dy[-1])) if i not in nondiff)

    return theirs


def _check(cases):
    """cases: {name: (forward, ours, theirs, args)}, args float64 numpy (or integer). For each case
    ours(*args, dy) == theirs(*args, dy) (`_vjp_of(forward)`: a pullback against jax.vjp's) for a random dy
    shaped like forward's output, all cases in one program per side, in float64 (within 1e-10) and
    float32 (the suite's rule, tests/README.md: its truth is the float64 program at the float32 point cast
    up)."""
    dys = {name: _normal(99, jax.eval_shape(forward, *args).shape) for name, (forward, _, _, args) in cases.items()}

    def ours(args, dys):
        return {name: ours(*args[name], dys[name]) for name, (_, ours, _, _) in cases.items()}

    def theirs(args, dys):
        return {name: theirs(*args[name], dys[name]) for name, (_, _, theirs, _) in cases.items()}

    for dtype in (np.float64, np.float32):
        def cast(a):
            return a.astype(dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else a

        args = {name: jax.tree_util.tree_map(cast, args) for name, (_, _, _, args) in cases.items()}
        check_function(ours, theirs, args, jax.tree_util.tree_map(cast, dys), what=np.dtype(dtype).name)


def test_linear_and_bias():
    def affine(x, w, b):
        return ops.bias_add(ops.linear(x, w), b)

    def ours(x, w, b, dy):
        return ops.linear_dx(dy, w), ops.linear_dw(x, dy), ops.bias_grad(dy)

    _check({"affine": (affine, ours, _vjp_of(affine), (_normal(0, (2, 3, 5)), _normal(1, (5, 4)), _normal(2, (4,))))})


def test_affine_by_name():
    def case(name, keys):
        params = {k: _normal(i + 1, (5, 4) if k.startswith("w") else (4,)) for i, k in enumerate(keys)}

        def affine(x, params):
            return ops.affine(x, params, name)

        def ours(x, params, dy):
            dparams, dx = ops.affine_pullback(dy, x, params, name)
            assert set(dparams) == set(params)
            return dx, dparams

        return affine, ours, _vjp_of(affine), (_normal(0, (2, 3, 5)), params)

    _check({"dense": case("", ("w", "b")), "named": case("q", ("w_q", "b_q")), "no-bias": case("out", ("w_out",))})


def test_matmul_t():
    a, b = _normal(0, (2, 3, 5)), _normal(1, (4, 5))
    _check({"matmul_t": (ops.matmul_t, lambda a, b, dy: (ops.linear(dy, b), ops.linear_dw(dy, a)),
                         _vjp_of(ops.matmul_t), (a, b))})
    np.testing.assert_allclose(jax.jit(ops.matmul_t)(a, b), a @ b.T, rtol=1e-12)


def test_scale_shift():
    def case(keys):
        params = {k: _normal(i + 1, (6,)) for i, k in enumerate(keys)}

        def ours(xhat, params, dy):
            dparams, dxhat = ops.scale_shift_pullback(dy, xhat, params)
            return dxhat, dparams

        return ops.scale_shift, ours, _vjp_of(ops.scale_shift), (_normal(0, (3, 4, 6)), params)

    _check({"+".join(keys) or "none": case(keys) for keys in [("gamma", "beta"), ("gamma",), ("beta",), ()]})


def test_softmax_family():
    x = 3 * _normal(0, (2, 5, 4))
    cases = {}
    for axis in (-1, 1):
        def softmax(x, axis=axis):
            return ops.softmax(x, axis)

        def log_softmax(x, axis=axis):
            return ops.log_softmax(x, axis)

        def logsumexp(x, axis=axis):
            return ops.logsumexp(x, axis)

        cases |= {
            f"softmax[{axis}]": (softmax, lambda x, dy, axis=axis: (ops.softmax_pullback(ops.softmax(x, axis), dy,
                                                                                           axis),),
                                 _vjp_of(softmax), (x,)),
            f"log_softmax[{axis}]": (log_softmax, lambda x, dy, axis=axis: (
                ops.log_softmax_pullback(ops.log_softmax(x, axis), dy, axis),), _vjp_of(log_softmax), (x,)),
            f"logsumexp[{axis}]": (logsumexp, lambda x, dy, axis=axis: (
                ops.logsumexp_pullback(x, ops.logsumexp(x, axis), dy),), _vjp_of(logsumexp), (x,)),
            # the value against jax.nn.logsumexp's
            f"logsumexp-value[{axis}]": (logsumexp, lambda x, dy, axis=axis: ops.logsumexp(x, axis),
                                         lambda x, dy, axis=axis: jax.nn.logsumexp(x, axis, keepdims=True), (x,)),
        }
    _check(cases)


def test_logsumexp_is_stable_for_large_logits():
    x = jnp.array([[1000.0, 1000.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(ops.logsumexp(x), [[1000 + np.log(2)], [-1000 + np.log(2)]])
    assert np.all(np.isfinite(ops.softmax(x))) and np.all(np.isfinite(ops.log_softmax(x)))


def test_lookup():
    ids = np.array([[0, 5, 5, 2], [1, 0, 3, 5]])  # repeated rows: their cotangents add
    _check({"lookup": (ops.lookup, lambda w, ids, dy: (ops.lookup_dw(ids, dy, 6),), _vjp_of(ops.lookup, nondiff=(1,)),
                       (_normal(0, (6, 3)), ids))})


def test_lookup_out_of_range_is_nan_and_adds_nothing():
    w = jnp.arange(6.0).reshape(3, 2)
    ids = jnp.array([0, 3, -1])
    np.testing.assert_array_equal(np.isnan(ops.lookup(w, ids)), [[False, False], [True, True], [True, True]])
    np.testing.assert_array_equal(ops.lookup_dw(ids, jnp.ones((3, 2)), 3), [[1, 1], [0, 0], [0, 0]])
