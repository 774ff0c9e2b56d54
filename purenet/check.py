"""The public gradient checker: our handwritten pullbacks against JAX's autodiff.

This is the only module of purenet that may call JAX's autodiff (`jax.vjp`, `jax.jvp`, `jax.grad`,
`jax.custom_vjp`): its job is to compare, and to bridge a purenet layer into a JAX user's `jax.grad`.

Errors are normwise per leaf: `max_abs = max|ours - jax|`, `max_rel = max_abs / max|jax|`, so a tiny
entry cannot make a correct gradient fail. A leaf whose reference is zero up to rounding (at most
`ZERO_ULPS` units of its dtype's precision times the largest leaf of the same tree: attention's key
bias, whose exact gradient is 0 because softmax ignores a shift shared by all keys) is scaled by that
largest leaf instead; a leaf that is exactly zero everywhere is compared absolutely.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import fail
from purenet.core import Layer, as_shape_tree, can_decode, init_model, is_differentiable, is_shape

TOLERANCES = {jnp.dtype("float64"): 1e-10, jnp.dtype("float32"): 1e-4}
ZERO_ULPS = 16


class LeafError(NamedTuple):
    """One leaf's error: `max_abs = max|ours - jax|`, `max_rel` = max_abs over the reference's scale."""

    max_abs: float
    max_rel: float


class GradientMismatch(AssertionError):
    """Raised when a leaf of our result differs from JAX's beyond tolerance; the message names the leaf."""


def tolerance(dtype) -> float:
    """The relative tolerance of the table for `dtype` (float64 tight, float32 loose)."""
    if jnp.dtype(dtype) not in TOLERANCES:
        fail("tolerance", f"no tolerance for dtype {jnp.dtype(dtype).name} (the table has float64 and float32): "
                          f"pass rtol=")
    return TOLERANCES[jnp.dtype(dtype)]


def _check_dtype(owner: str, dtype) -> None:
    """float64 needs JAX's 64-bit mode: without it every array is float32 and float64's tolerance would
    fail correct layers."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        fail(owner, "dtype=float64 needs 64-bit mode, which is off: call jax.config.update('jax_enable_x64', "
                    "True) at startup, or pass dtype=jnp.float32 (without it JAX computes in float32)")


def compare(ours: Any, reference: Any, *, rtol: float, what: str) -> dict[str, LeafError]:
    """Compare two pytrees leaf by leaf; -> {leaf path: LeafError}. Raises GradientMismatch naming the
    first leaf over `rtol` (or a structure or shape mismatch)."""
    ours_leaves, ours_def = jax.tree_util.tree_flatten_with_path(ours)
    ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(reference)
    if ours_def != ref_def:
        raise GradientMismatch(f"{what}: tree structure differs: ours {ours_def} vs jax {ref_def}")
    report, failures = {}, []
    largest = max((float(np.max(np.abs(b))) for _, b in ref_leaves if np.size(b)), default=0.0)
    for (path, a), (_, b) in zip(ours_leaves, ref_leaves):
        name = what + jax.tree_util.keystr(path)
        eps = float(jnp.finfo(b.dtype).eps) if jnp.issubdtype(jnp.result_type(b), jnp.inexact) else 0.0
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise GradientMismatch(f"{name}: shape {a.shape} != jax's {b.shape}")
        max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        if 0 < scale <= ZERO_ULPS * eps * largest:  # zero up to rounding
            scale = largest
        max_rel = max_abs / scale if scale > 0 else max_abs
        report[name] = LeafError(max_abs, max_rel)
        if not np.isfinite(max_rel) or max_rel > rtol:
            failures.append(f"{name}: max abs error {max_abs:.3e}, max rel error {max_rel:.3e} > {rtol:.0e}")
    if failures:
        raise GradientMismatch("gradient mismatch\n  " + "\n  ".join(failures))
    return report


def random_input(key: jax.Array, shape, dtype) -> Any:
    """A standard-normal input of `shape` (a batch dimension of -1 becomes 2); for a pytree of shapes,
    the same pytree of such inputs, each leaf from its own key."""
    shapes, treedef = jax.tree_util.tree_flatten(as_shape_tree(shape), is_leaf=is_shape)
    keys = jax.random.split(key, len(shapes)) if len(shapes) > 1 else [key]
    leaves = [jax.random.normal(k, tuple(2 if d == -1 else d for d in s), dtype) for k, s in zip(keys, shapes)]
    return treedef.unflatten(leaves)


class _FloatLeaves(NamedTuple):
    """The differentiable part of a structured input: its float leaves, and how to put them back."""

    leaves: list
    treedef: Any
    is_float: list[bool]
    others: list  # the integer and boolean leaves, in order

    def merge(self, float_leaves):
        """x with `float_leaves` in place of its float leaves."""
        floats, others = iter(float_leaves), iter(self.others)
        return self.treedef.unflatten([next(floats) if f else next(others) for f in self.is_float])

    def with_none(self, float_leaves):
        """x's structure with `float_leaves` at its float leaves and None elsewhere: dx's rule."""
        floats = iter(float_leaves)
        return self.treedef.unflatten([next(floats) if f else None for f in self.is_float])


def _float_leaves(x) -> _FloatLeaves:
    leaves, treedef = jax.tree_util.tree_flatten(x)
    is_float = [is_differentiable(leaf) for leaf in leaves]
    return _FloatLeaves([a for a, f in zip(leaves, is_float) if f], treedef, is_float,
                        [a for a, f in zip(leaves, is_float) if not f])


def _random_like(key, tree):
    """Standard-normal arrays shaped like every leaf of `tree` (all floating-point)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


def random_cotangent(key, y):
    """A random cotangent for an output `y`: standard normal at float leaves, None at integer and
    boolean ones (a mask a layer passes through), as pullbacks receive it. -> (ours, JAX's), JAX's
    with float0 zeros where ours has None."""
    leaves, treedef = jax.tree_util.tree_flatten(y)
    keys = jax.random.split(key, max(len(leaves), 1))
    ours = [jax.random.normal(k, a.shape, a.dtype) if is_differentiable(a) else None for k, a in zip(keys, leaves)]
    theirs = [d if d is not None else np.zeros(a.shape, jax.dtypes.float0) for d, a in zip(ours, leaves)]
    return treedef.unflatten(ours), treedef.unflatten(theirs)


def _compiled(layer: Layer, in_shape, dtype, body):
    """`program(k_init, k_x, x) -> (x, body(params, state, x))` jitted as one program that first runs
    `init_model` at k_init (and, for `x` None, draws a standard-normal input at k_x), so that a check
    compiles once; `out_shapes` receives the declared out_shape while it traces. -> (program, out_shapes)."""
    out_shapes = []

    @jax.jit
    def program(k_init, k_x, x):
        out_shape, params, state = init_model(layer, k_init, in_shape, dtype=dtype)
        out_shapes.append(out_shape)
        x = random_input(k_x, in_shape, dtype) if x is None else x
        return x, body(params, state, x)

    return program, out_shapes


def _adjoint_gap(layer, params, state, x, k_t, k_dy, ctx):
    """Both sides of <dy, J t> = <pullback(dy), t> for random tangents t on params and the float leaves
    of x (J by JAX's forward mode) -> (lhs, rhs, |dy| |J t|), traced."""
    split = _float_leaves(x)
    tangent = _random_like(k_t, (params, split.leaves))
    y, jt = jax.jvp(lambda p, xf: layer.apply(p, state, split.merge(xf), **ctx)[0], (params, split.leaves),
                    tangent)
    dy, _ = random_cotangent(k_dy, y)  # None at integer and boolean outputs
    _, _, pullback = layer.vjp(params, state, x, **ctx)
    ours = jax.tree_util.tree_leaves(pullback(dy))  # None leaves (integer inputs) drop out
    rhs = sum(jnp.vdot(a, b) for a, b in zip(ours, jax.tree_util.tree_leaves(tangent)))
    jt = [b for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(jt)) if is_differentiable(a)]
    lhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(dy), jt))
    return lhs, rhs, _norm(dy) * _norm(jt)


def _gap_report(layer: Layer, lhs, rhs, scale, rtol) -> dict[str, LeafError]:
    gap = float(jnp.abs(lhs - rhs) / (scale + 1e-300))
    if not gap <= rtol:
        raise GradientMismatch(f"{layer.name}: <dy, J t> = {lhs} but <pullback(dy), t> = {rhs} (gap {gap:.2e})")
    return {f"{layer.name}.adjoint": LeafError(float(jnp.abs(lhs - rhs)), gap)}


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(tree)))


def check_layer(
    layer: Layer,
    in_shape,
    *,
    key: jax.Array,
    dtype=jnp.float64,
    x: Any = None,
    train: bool = False,
    num_cotangents: int = 2,
    adjoint: bool = False,
    rtol: float | None = None,
) -> dict[str, LeafError]:
    """Check one layer: declared out_shape, primal output and new state equal `apply`'s, and for
    `num_cotangents` random cotangents `dy` our `(dparams, dx)` equal `jax.vjp(apply)`'s; with
    `adjoint`, also the identity of `check_dot_product` against JAX's forward mode.

    `x` defaults to a standard-normal input of `in_shape` (a shape or a pytree of shapes) in `dtype`.
    A structured `x` may hold integer and boolean leaves (token ids, masks): only the float leaves are
    differentiated, and the layer's `dx` must mirror `x` with None at the others. Init, both sides and
    the adjoint run in one `jax.jit` program (the registry tests check separately that jit equals
    eager). -> per-leaf report; raises GradientMismatch."""
    _check_dtype("check_layer", dtype)
    rtol = tolerance(dtype) if rtol is None else rtol
    k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
    ctx = dict(key=k_layer, train=train)

    def ours_and_jax(params, state, x):
        y, new_state, pullback = layer.vjp(params, state, x, **ctx)
        y_ref, state_ref = layer.apply(params, state, x, **ctx)
        split = _float_leaves(x)
        _, jax_pullback = jax.vjp(lambda p, xf: layer.apply(p, state, split.merge(xf), **ctx)[0], params,
                                  split.leaves)
        dys = [random_cotangent(k, y) for k in jax.random.split(k_dy, num_cotangents)]
        theirs = []
        for _, dy in dys:
            dparams_ref, dxf_ref = jax_pullback(dy)
            theirs.append((dparams_ref, split.with_none(dxf_ref)))
        gap = _adjoint_gap(layer, params, state, x, *jax.random.split(k_dy), ctx) if adjoint else None
        return (y, new_state), (y_ref, state_ref), [pullback(dy) for dy, _ in dys], theirs, gap

    program, out_shapes = _compiled(layer, in_shape, dtype, ours_and_jax)
    x, ((y, new_state), (y_ref, state_ref), ours, theirs, gap) = program(k_init, k_x, x)
    _check_out_shape(layer, as_shape_tree(out_shapes[0]), y)
    report = compare(y, y_ref, rtol=rtol, what=f"{layer.name}.y")
    report |= compare(new_state, state_ref, rtol=rtol, what=f"{layer.name}.state")
    for (dparams, dx), (dparams_ref, dx_ref) in zip(ours, theirs):
        _check_none_rule(layer, x, dx)
        report |= compare(dx, dx_ref, rtol=rtol, what=f"{layer.name}.dx")
        report |= compare(dparams, dparams_ref, rtol=rtol, what=f"{layer.name}.dparams")
    if adjoint:
        report |= _gap_report(layer, *gap, rtol)
    return report


def _check_out_shape(layer: Layer, out_shape, y) -> None:
    """The declared out_shape (a shape or pytree of shapes, -1 for the batch) against the output."""
    declared = jax.tree_util.tree_leaves(as_shape_tree(out_shape), is_leaf=is_shape)
    actual = jax.tree_util.tree_leaves(y)
    if len(declared) != len(actual) or any(
            tuple(a.shape) != tuple(a.shape[0] if d == -1 and i == 0 else d for i, d in enumerate(s))
            for s, a in zip(declared, actual)):
        raise GradientMismatch(f"{layer.name}: declared out_shape {out_shape} != output "
                               f"{jax.tree_util.tree_map(lambda a: a.shape, y)}")


def _check_none_rule(layer: Layer, x, dx) -> None:
    """dx mirrors x: an array at every float leaf, None at every integer or boolean leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(x)
    try:
        dx_leaves = treedef.flatten_up_to(dx)
    except (ValueError, TypeError) as error:
        raise GradientMismatch(f"{layer.name}.dx: structure differs from the input's: {error}") from None
    for i, (a, d) in enumerate(zip(leaves, dx_leaves)):
        if is_differentiable(a) != (d is not None):
            want = "an array" if is_differentiable(a) else "None"
            raise GradientMismatch(f"{layer.name}.dx: leaf {i} of the input is {jnp.result_type(a)}, so its "
                                   f"cotangent must be {want}, got {type(d).__name__}")


def check_dot_product(
    layer: Layer, in_shape, *, key: jax.Array, dtype=jnp.float64, x: Any = None, train: bool = False, rtol=None
) -> float:
    """The adjoint identity <dy, J t> = <pullback(dy), t> between JAX's forward-mode `jvp` of `apply` and
    our pullback, for random tangents `t` on params and the float leaves of x (`x` as in `check_layer`).
    Needs no `jax.vjp`. -> relative gap; raises GradientMismatch."""
    _check_dtype("check_dot_product", dtype)
    rtol = tolerance(dtype) if rtol is None else rtol
    k_init, k_x, k_t, k_dy, k_layer = jax.random.split(key, 5)
    ctx = dict(key=k_layer, train=train)
    program, _ = _compiled(layer, in_shape, dtype,
                           lambda params, state, x: _adjoint_gap(layer, params, state, x, k_t, k_dy, ctx))
    return _gap_report(layer, *program(k_init, k_x, x)[1], rtol)[f"{layer.name}.adjoint"].max_rel


def check_model(
    model: Layer,
    loss,
    params,
    state,
    x: jax.Array,
    target: Any,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    rtol: float | None = None,
) -> dict[str, LeafError]:
    """A whole model + loss: the parameter gradient from our handwritten VJPs equals
    `jax.grad(loss.apply(model.apply(params, state, x)[0], target))`. Both sides run in one `jax.jit`
    program (compiling a model once costs far less than running it op by op). -> per-leaf report."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    rtol = tolerance(dtype) if rtol is None else rtol

    @jax.jit
    def ours_and_jax(params, state, x, target, key):
        y, _, pullback = model.vjp(params, state, x, key=key, train=train)
        value, loss_pullback = loss.vjp(y, target)
        dparams, _ = pullback(loss_pullback(jnp.ones_like(value)))

        def reference(p):
            return loss.apply(model.apply(p, state, x, key=key, train=train)[0], target)

        return (value, dparams), jax.value_and_grad(reference)(params)

    (value, dparams), (value_ref, dparams_ref) = ours_and_jax(params, state, x, target, key)
    report = compare(value, value_ref, rtol=rtol, what=f"{model.name}.loss")
    return report | compare(dparams, dparams_ref, rtol=rtol, what=f"{model.name}.dparams")


def check_decode(layer: Layer, params, state, x: Any, *, rtol: float | None = None) -> dict[str, LeafError]:
    """Stepping `layer.decode` through x's time axis (axis 1 of every leaf, pos = 0, 1, ...) equals
    `layer.apply(params, state, x)` in eval mode at every position; a layer whose output has no time
    axis (return_sequences=False) is compared at the last step. -> per-leaf report; raises
    GradientMismatch naming the layer."""
    if not can_decode(layer):
        raise GradientMismatch(f"{layer.name}: has no decode step")
    dtype = jnp.result_type(*[a for a in jax.tree_util.tree_leaves(params) if is_differentiable(a)] or [float])
    rtol = tolerance(dtype) if rtol is None else rtol

    @jax.jit
    def both(params, x):
        y, _ = layer.apply(params, state, x, train=False)
        steps = jax.tree_util.tree_leaves(x)[0].shape[1]
        cache = layer.decode.init_cache(params, jax.tree_util.tree_leaves(x)[0].shape[0], steps)

        def step(cache, inputs):
            x_t, pos = inputs
            y_t, cache = layer.decode.step(params, cache, x_t, pos=pos)
            return cache, y_t

        time_major = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), x)
        _, ys = jax.lax.scan(step, cache, (time_major, jnp.arange(steps)))
        return y, ys

    y, ys = both(params, x)
    stepped = jax.tree_util.tree_map(lambda full, s: s[-1] if s.ndim == full.ndim + 1 else jnp.swapaxes(s, 0, 1),
                                     y, ys)
    return compare(stepped, y, rtol=rtol, what=f"{layer.name}.decode")


def as_jax_function(layer: Layer, state, *, key: jax.Array | None = None, train: bool = False):
    """Bridge: `f(params, x) -> y` whose derivative under `jax.grad` is our handwritten pullback."""

    @jax.custom_vjp
    def f(params, x):
        return layer.apply(params, state, x, key=key, train=train)[0]

    # custom_vjp residuals must be arrays, not closures: keep (params, x), rerun our vjp backward.
    def forward(params, x):
        return f(params, x), (params, x)

    def backward(residuals, dy):
        params, x = residuals
        return layer.vjp(params, state, x, key=key, train=train)[2](dy)

    f.defvjp(forward, backward)
    return f
