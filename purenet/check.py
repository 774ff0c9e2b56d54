"""The public gradient checker: our handwritten pullbacks against JAX's autodiff.

This is the only module of purenet that may call JAX's autodiff (`jax.vjp`, `jax.jvp`, `jax.grad`,
`jax.custom_vjp`): its job is to compare, and to bridge a purenet layer into a JAX user's `jax.grad`.

Errors are normwise per leaf: `max_abs = max|ours - ref|`, `max_rel = max_abs / max|ref|`, so a tiny
entry cannot make a correct gradient fail. A leaf whose reference is zero up to rounding (at most
`ZERO_ULPS` units of its dtype's precision times the largest leaf of the same tree: attention's key
bias, whose exact gradient is 0 because softmax ignores a shift shared by all keys) is scaled by that
largest leaf instead; a leaf that is exactly zero everywhere is compared absolutely.

Two rules, one per precision:

- **float64** (and any comparison given `rtol`): `max_rel <= rtol`, 1e-10 by default (`TOLERANCES`).
- **lower precision** (float32, bfloat16, float16) with 64-bit mode on: both sides are also computed in
  float64 at the same point (the same params, inputs and cotangents, cast up exactly), the *truth*. Our
  result passes when its error against the truth is at most `LOW_PRECISION_FACTOR` times the error of
  JAX's own low-precision evaluation of the same function, and never needs to beat the dtype's
  precision: `max|ours - truth| <= 16 * max(max|jax - truth|, eps * max|truth|)`. The bound grows
  with whatever makes the computation inexact in that dtype (the number of summed terms, cancellation,
  the magnitudes), because JAX's evaluation meets the same growth, and it moves with the summation
  order of the machine (another CPU, another XLA kernel, the GPU) for the same reason; 16 = 4 bits of
  float32's 24 for a formulation that rounds differently from JAX's (see tests/README.md). Without
  64-bit mode there is no truth to measure and the table's flat tolerance applies (`TOLERANCES`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import check_x64, fail
from purenet.combinators import checked_apply, checked_vjp
from purenet.core import Layer, as_shape_tree, can_decode, init_model, is_differentiable, is_shape
from purenet.precision import with_policy

TOLERANCES = {jnp.dtype("float64"): 1e-10, jnp.dtype("float32"): 1e-4}
ZERO_ULPS = 16
LOW_PRECISION_FACTOR = 16


class LeafError(NamedTuple):
    """One leaf's error: `max_abs = max|ours - ref|` (ref: the truth where one was given), `max_rel` =
    max_abs over the reference's scale, `rtol` the relative error this leaf was allowed."""

    max_abs: float
    max_rel: float
    rtol: float = float("inf")


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
    check_x64(owner, dtype)


_NO_TRUTH = object()


def compare(ours: Any, reference: Any, *, what: str, rtol: float | None = None, truth: Any = _NO_TRUTH,
            raise_: bool = True) -> dict[str, LeafError]:
    """Compare two pytrees leaf by leaf; -> {leaf path: LeafError}.

    Each leaf's bound: `rtol` when given (its relative error against `reference`); otherwise the rule of
    the reference leaf's dtype: float64 within `TOLERANCES[float64]` of `reference`; a lower precision
    by the low-precision rule of this module, which needs `truth` (the same computation in float64 at
    the same point, a pytree like `reference`): the error against the truth at most
    `LOW_PRECISION_FACTOR` times the reference's own, or the dtype's epsilon if larger. Raises
    GradientMismatch naming every leaf over its bound (or a structure or shape mismatch); with
    `raise_=False` the report is returned and `failures(report)` lists them."""
    with_truth = truth is not _NO_TRUTH
    if rtol is not None and with_truth:
        fail("compare", f"{what}: pass rtol= (a fixed relative tolerance) or truth= (a float64 evaluation of "
                        f"the same computation), not both")
    ours_leaves, ours_def = jax.tree_util.tree_flatten_with_path(ours)
    ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(reference)
    if ours_def != ref_def:
        raise GradientMismatch(f"{what}: tree structure differs: ours {ours_def} vs reference {ref_def}")
    truth_leaves = [b for _, b in ref_leaves]
    if with_truth:
        truth_leaves, truth_def = jax.tree_util.tree_flatten(truth)
        if truth_def != ref_def:
            raise GradientMismatch(f"{what}: the truth's tree structure differs: {truth_def} vs {ref_def}")
    largest = max((float(np.max(np.abs(t))) for t in truth_leaves if np.size(t)), default=0.0)
    report = {}
    for (path, a), (_, b), t in zip(ours_leaves, ref_leaves, truth_leaves):
        name = what + jax.tree_util.keystr(path)
        low = rtol is None and _is_low_precision(b)
        if low and not with_truth:
            fail("compare", f"{name} is {jnp.result_type(b)}: pass truth= (the same computation in float64 at the "
                            f"same point) for the low-precision rule, or rtol=")
        eps = float(jnp.finfo(b.dtype).eps) if jnp.issubdtype(jnp.result_type(b), jnp.inexact) else 0.0
        a, b, t = (np.asarray(v, dtype=np.float64) for v in (a, b, t if low else b))
        if a.shape != b.shape or a.shape != t.shape:
            raise GradientMismatch(f"{name}: shape {a.shape} != the reference's {b.shape}")
        max_abs = float(np.max(np.abs(a - t))) if a.size else 0.0
        scale = float(np.max(np.abs(t))) if t.size else 0.0
        if 0 < scale <= ZERO_ULPS * eps * largest:  # zero up to rounding
            scale = largest
        if not low:
            bound = TOLERANCES[jnp.dtype("float64")] if rtol is None else rtol
        else:  # the reference's own error against the truth, relative, floored at the dtype's precision
            ref_error = float(np.max(np.abs(b - t))) if b.size else 0.0
            bound = LOW_PRECISION_FACTOR * max(ref_error / scale if scale > 0 else ref_error, eps)
        report[name] = LeafError(max_abs, max_abs / scale if scale > 0 else max_abs, bound)
    if raise_:
        _raise_failures(report)
    return report


def _is_low_precision(leaf) -> bool:
    dtype = jnp.result_type(leaf)
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 64


def failures(report: dict[str, LeafError]) -> list[str]:
    """The leaves of a report over their bound (or not finite), one line each."""
    return [f"{name}: max abs error {e.max_abs:.3e}, max rel error {e.max_rel:.3e} > {e.rtol:.1e}"
            for name, e in report.items() if not (np.isfinite(e.max_rel) and e.max_rel <= e.rtol)]


def upcast(tree: Any) -> Any:
    """`tree` with every floating-point leaf cast to float64 (exact), integer and boolean leaves kept:
    the point at which the truth of a low-precision computation is evaluated."""
    return _cast(tree, jnp.float64)


def needs_truth(dtype) -> bool:
    """Whether a check in `dtype` follows the low-precision rule (a float64 truth beside it): every
    floating dtype below float64, when 64-bit mode is on."""
    return jnp.dtype(dtype) != jnp.float64 and bool(jax.config.jax_enable_x64)


def check_function(ours: Callable, reference: Callable, *args: Any, what: str, rtol: float | None = None,
                   jit: bool = True) -> dict[str, LeafError]:
    """`ours(*args)` equals `reference(*args)` (each a pytree of arrays): within `rtol` if given, else by
    the rule of each leaf's dtype (`compare`), the truth of a low-precision leaf being `reference` at
    the arguments cast up to float64 (`upcast`; without 64-bit mode, the table's tolerance instead).
    For a pullback or a model piece written by hand against JAX's (`reference` may call `jax.vjp`). Both
    run under `jax.jit` (one program each per dtype) unless `jit=False`.
    -> per-leaf report; raises GradientMismatch naming every leaf out of bounds."""
    if jit:
        ours, reference = jax.jit(ours), jax.jit(reference)
    ref = reference(*args)
    low = [b for b in jax.tree_util.tree_leaves(ref) if _is_low_precision(b)]
    if rtol is None and low and not jax.config.jax_enable_x64:
        rtol = tolerance(jnp.result_type(*low))  # no float64 truth without 64-bit mode
    if rtol is not None or not low:
        return compare(ours(*args), ref, rtol=rtol, what=what)
    return compare(ours(*args), ref, truth=reference(*upcast(args)), what=what)


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


def random_cotangent(key, y):
    """A random cotangent for an output `y`: standard normal at float leaves, None at integer and
    boolean ones (a mask a layer passes through), as pullbacks receive it. -> (ours, JAX's), JAX's
    with float0 zeros where ours has None."""
    leaves, treedef = jax.tree_util.tree_flatten(y)
    keys = jax.random.split(key, max(len(leaves), 1))
    ours = treedef.unflatten([jax.random.normal(k, a.shape, a.dtype) if is_differentiable(a) else None
                              for k, a in zip(keys, leaves)])
    return ours, _jax_cotangent(ours, y)


def _host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded by a JAX key. The checkers draw their random points (inputs, cotangents,
    tangents) with it, outside the program they compile: every `jax.random.normal` in a jitted program
    compiles its own threefry and inverse-erf expansion (about 0.15 s each at LLVM level 0, per leaf),
    which for a small layer is half of what its check costs."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _host_normal(rng: np.random.Generator, tree: Any) -> Any:
    """Standard-normal numpy arrays shaped like every floating-point leaf of `tree` (arrays or
    ShapeDtypeStructs), in its dtype; None at integer and boolean leaves."""
    return jax.tree_util.tree_map(
        lambda a: rng.standard_normal(a.shape).astype(a.dtype) if is_differentiable(a) else None, tree)


def _host_input(rng: np.random.Generator, in_shape, dtype) -> Any:
    """A standard-normal input of `in_shape` in `dtype` (a batch dimension of -1 becomes 2), as numpy
    arrays: `random_input`'s draw, made on the host."""
    return jax.tree_util.tree_map(
        lambda s: rng.standard_normal(tuple(2 if d == -1 else d for d in s)).astype(dtype),
        as_shape_tree(in_shape), is_leaf=is_shape)


def _jax_cotangent(dy, y):
    """Our cotangent `dy` (None at y's integer and boolean leaves) in JAX's form: float0 zeros there."""
    leaves, treedef = jax.tree_util.tree_flatten(y)
    ours = treedef.flatten_up_to(dy)
    return treedef.unflatten([d if d is not None else np.zeros(a.shape, jax.dtypes.float0)
                              for d, a in zip(ours, leaves)])


def _point_shapes(owner: str, layer: Layer, k_init, in_shape, dtype, x, ctx) -> tuple:
    """The shapes a check draws its point for, traced, not run: -> (params, y) as ShapeDtypeStructs of
    `init_model` at k_init in `dtype` and `apply` at x."""

    def shapes(k_init, x):
        _, params, state = init_model(layer, k_init, in_shape, dtype=dtype)
        return params, checked_apply(owner, layer.name, layer, params, state, x, **ctx)[0]

    return jax.eval_shape(shapes, k_init, x)


def _compiled(layer: Layer, in_shape, dtype, body):
    """`program(k_init, x, *args) -> (x, body(params, state, x, *args))` jitted as one program that
    first runs `init_model` at k_init, so that a check compiles once; `out_shapes` receives the
    declared out_shape while it traces. -> (program, out_shapes)."""
    out_shapes = []

    @jax.jit
    def program(k_init, x, *args):
        out_shape, params, state = init_model(layer, k_init, in_shape, dtype=dtype)
        out_shapes.append(out_shape)
        return x, body(params, state, x, *args)

    return program, out_shapes


def _forward_mode(layer, params, state, x, tangent, ctx):
    """JAX's forward mode of `apply` at tangents `tangent` = (on params, on the float leaves of x)
    -> (y, J t, t), traced."""
    split = _float_leaves(x)
    tangent = jax.tree_util.tree_map(lambda t, a: jnp.asarray(t, a.dtype), tuple(tangent),
                                     (params, split.leaves))
    y, jt = jax.jvp(lambda p, xf: layer.apply(p, state, split.merge(xf), **ctx)[0], (params, split.leaves),
                    tangent)
    return y, jt, tangent


def _adjoint_gap(y, jt, tangent, dy, grads):
    """Both sides of <dy, J t> = <pullback(dy), t>, `grads` our `(dparams, dx)` for `dy`
    -> (lhs, rhs, |dy| |J t|), traced."""
    ours = jax.tree_util.tree_leaves(grads)  # None leaves (integer inputs) drop out
    rhs = sum(jnp.vdot(a, b) for a, b in zip(ours, jax.tree_util.tree_leaves(tangent)))
    jt = [b for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(jt)) if is_differentiable(a)]
    lhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(dy), jt))  # None at integer outputs
    return lhs, rhs, _norm(dy) * _norm(jt)


def _gap_report(layer: Layer, lhs, rhs, scale, rtol, *, raise_: bool = True, name: str | None = None
                ) -> dict[str, LeafError]:
    gap = float(jnp.abs(lhs - rhs) / (scale + 1e-300))
    if raise_ and not gap <= rtol:
        raise GradientMismatch(f"{layer.name}: <dy, J t> = {lhs} but <pullback(dy), t> = {rhs} (gap {gap:.2e})")
    return {f"{name or layer.name}.adjoint": LeafError(float(jnp.abs(lhs - rhs)), gap, rtol)}


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
    eager: bool = False,
    decode: bool = False,
) -> dict[str, LeafError]:
    """Check one layer: declared out_shape, primal output and new state equal `apply`'s, and for
    `num_cotangents` random cotangents `dy` our `(dparams, dx)` equal `jax.vjp(apply)`'s; with
    `adjoint`, also the identity of `check_dot_product` against JAX's forward mode (in the highest dtype).

    `x` defaults to a standard-normal input of `in_shape` (a shape or a pytree of shapes) in `dtype`.
    A structured `x` may hold integer and boolean leaves (token ids, masks): only the float leaves are
    differentiated, and the layer's `dx` must mirror `x` with None at the others. In float64 every leaf
    must agree within `rtol` (default 1e-10); below float64 the module's low-precision rule applies (a
    float64 truth at the same point), unless `rtol` is given. `dtype` may be a tuple, e.g.
    `(jnp.float64, jnp.float32)`: every dtype is checked at the same point (params, x and cotangents drawn
    in the lowest one, then cast up exactly), the float64 evaluation also serving as the truth, and the
    report's keys name the dtype (`Dense[float32].dx`). Init, every side and the adjoint run in one
    `jax.jit` program. With `eager` (float64 among the dtypes), our `vjp` and pullback also run op by op,
    outside `jax.jit`, at the float64 point, and must equal the jitted results and `apply`'s output
    within `EAGER_RTOL` (`{name}.eager...` in the report): the layer computes the same traced and eager.
    With `decode`, also what `check_decode` checks, in the same program at the highest dtype's point:
    stepping `layer.decode` through x's time axis equals `apply` in eval mode (`{name}.decode`).
    -> per-leaf report; raises GradientMismatch naming every leaf out of bounds."""
    dtypes = [jnp.dtype(d) for d in (dtype if isinstance(dtype, (tuple, list)) else (dtype,))]
    for d in dtypes:
        _check_dtype("check_layer", d)
    low, high = (f(dtypes, key=lambda d: jnp.finfo(d).bits) for f in (min, max))
    if decode and not can_decode(layer):
        raise GradientMismatch(f"{layer.name}: has no decode step")
    if eager and high != jnp.float64:
        fail("check_layer", f"eager=True compares jit and eager in float64 (within {EAGER_RTOL}): include "
                            f"jnp.float64 in dtype")
    with_truth = rtol is None and any(needs_truth(d) for d in dtypes)
    decode_rule = decode and rtol is None and needs_truth(high)  # decode checked below float64: a truth
    k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
    k_t = jax.random.fold_in(k_dy, 1)  # the adjoint's tangents
    ctx = dict(key=k_layer, train=train)

    # The point, drawn on the host (_host_rng) in the lowest dtype: x, the cotangents and the tangents.
    x = _host_input(_host_rng(k_x), in_shape, low) if x is None else _cast(x, low)

    params_shape, y_shape = _point_shapes("check_layer", layer, k_init, in_shape, low, x, ctx)
    rng = _host_rng(k_dy)
    dys = [_host_normal(rng, y_shape) for _ in range(num_cotangents)]
    tangent = _host_normal(_host_rng(k_t), (params_shape, _float_leaves(x).leaves)) if adjoint else None

    def jax_side(params, state, x, dys):
        """JAX's `(y, new_state)` and, per cotangent, `(dparams, dx)` of `apply` at this point."""
        split = _float_leaves(x)
        y, jax_pullback, new_state = jax.vjp(
            lambda p, xf: checked_apply("check_layer", layer.name, layer, p, state, split.merge(xf), **ctx), params,
            split.leaves, has_aux=True)
        grads = [jax_pullback(dy) for dy in dys]
        return (y, new_state), [(dparams, split.with_none(dxf)) for dparams, dxf in grads]

    def ours_and_jax(params, state, x, dys, tangent):  # params, state, x and dys in the lowest dtype
        dys = [(dy, _jax_cotangent(dy, y_shape)) for dy in dys]
        sides, points = {}, {}
        for d in dtypes:
            p, s, xd, dys_d = points[d] = tuple(_cast(t, d) for t in (params, state, x, dys))
            out, new_state, pullback = checked_vjp("check_layer", layer.name, layer, p, s, xd, **ctx)
            ours = (out, new_state), [pullback(dy) for dy, _ in dys_d]
            sides[d] = ours, jax_side(p, s, xd, [dy for _, dy in dys_d])
        truth = None
        if with_truth:
            f64 = jnp.dtype(jnp.float64)
            truth = sides[f64][1] if f64 in sides else jax_side(*(upcast(t) for t in (params, state, x)),
                                                                [upcast(dy) for _, dy in dys])
        gap = None
        if adjoint:  # in the highest dtype, at its first cotangent, with the pullback computed above
            (ours, _), dy = sides[high], _cast(dys[0][0], high)
            gap = _adjoint_gap(*_forward_mode(layer, *points[high][:3], tangent, ctx), dy, ours[1][0])
        stepped = None
        if decode:  # eval mode, in the highest dtype (below float64: the float64 evaluation its truth)
            p, s, xd, _ = points[high]
            y_eval = layer.apply(p, s, xd, train=False)[0]
            decode_truth = layer.apply(*map(upcast, (p, s, xd)), train=False)[0] if decode_rule else None
            stepped = _stepped(layer, p, xd, y_eval), y_eval, decode_truth
        point = (*points[high][:3], [dy for dy, _ in points[high][3]]) if eager else None
        return sides, truth, gap, point, stepped

    program, out_shapes = _compiled(layer, in_shape, low, ours_and_jax)
    x, (sides, truth, gap, point, stepped) = program(k_init, x, dys, tangent)
    report = {}
    for d, (ours, theirs) in sides.items():
        name = layer.name if len(dtypes) == 1 else f"{layer.name}[{d.name}]"
        _check_out_shape(layer, as_shape_tree(out_shapes[0]), ours[0][0])
        for dparams, dx in ours[1]:
            _check_none_rule(layer, x, dx)
        bound = dict(truth=truth) if with_truth and needs_truth(d) else None

        def check(a, b, pick, what):
            kwargs = dict(truth=pick(truth)) if bound else dict(rtol=tolerance(d) if rtol is None else rtol)
            return compare(a, b, what=f"{name}.{what}", raise_=False, **kwargs)

        report |= check(ours[0][0], theirs[0][0], lambda t: t[0][0], "y")
        report |= check(ours[0][1], theirs[0][1], lambda t: t[0][1], "state")
        for i, ((dparams, dx), (dparams_ref, dx_ref)) in enumerate(zip(ours[1], theirs[1])):
            report = _worst(report, check(dx, dx_ref, lambda t: t[1][i][1], "dx"))
            report = _worst(report, check(dparams, dparams_ref, lambda t: t[1][i][0], "dparams"))
    name = layer.name if len(dtypes) == 1 else f"{layer.name}[{high.name}]"
    if adjoint:
        report |= _gap_report(layer, *gap, tolerance(high) if rtol is None else rtol, raise_=False, name=name)
    if eager:
        report |= _eager_report(layer, point, sides[high], ctx, name)
    if decode:
        stepped, y_eval, decode_truth = stepped
        bound = dict(truth=decode_truth) if decode_rule else dict(rtol=tolerance(high) if rtol is None else rtol)
        report |= compare(stepped, y_eval, what=f"{name}.decode", raise_=False, **bound)
    _raise_failures(report)
    return report


EAGER_RTOL = 1e-12


def _eager_report(layer: Layer, point, side, ctx, name: str) -> dict[str, LeafError]:
    """Our vjp and pullbacks op by op (outside jit) at the float64 `point` = (params, state, x, dys) of a
    check, against `side` = (ours, JAX's) as the jitted program computed them there."""
    params, state, x, dys = point
    y, new_state, pullback = checked_vjp("check_layer", layer.name, layer, params, state, x, **ctx)
    eager = (y, new_state), [pullback(dy) for dy in dys]
    (ours, theirs), what = side, f"{name}.eager"
    return (compare(eager, ours, what=what, rtol=EAGER_RTOL, raise_=False)
            | compare(y, theirs[0][0], what=f"{what}.y_of_apply", rtol=EAGER_RTOL, raise_=False))


def _cast(tree: Any, dtype) -> Any:
    """`tree` with every floating-point leaf cast to `dtype`; integer, boolean and None leaves kept."""
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if is_differentiable(a) else a, tree)


def _worst(report: dict[str, LeafError], more: dict[str, LeafError]) -> dict[str, LeafError]:
    """Merge two reports; a leaf in both (one per cotangent) keeps its worst error against its bound."""
    merged = dict(report)
    for name, e in more.items():
        if name not in merged or e.max_rel - e.rtol > merged[name].max_rel - merged[name].rtol:
            merged[name] = e
    return merged


def _raise_failures(report: dict[str, LeafError]) -> None:
    if failures(report):
        raise GradientMismatch("gradient mismatch\n  " + "\n  ".join(failures(report)))


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
    x = _host_input(_host_rng(k_x), in_shape, dtype) if x is None else x

    params_shape, y_shape = _point_shapes("check_dot_product", layer, k_init, in_shape, dtype, x, ctx)
    tangent = _host_normal(_host_rng(k_t), (params_shape, _float_leaves(x).leaves))
    dy = _host_normal(_host_rng(k_dy), y_shape)  # None at integer and boolean outputs

    def gap(params, state, x, tangent, dy):
        y, jt, tangent = _forward_mode(layer, params, state, x, tangent, ctx)
        return _adjoint_gap(y, jt, tangent, dy, layer.vjp(params, state, x, **ctx)[2](dy))

    program, _ = _compiled(layer, in_shape, dtype, gap)
    return _gap_report(layer, *program(k_init, x, tangent, dy)[1], rtol)[f"{layer.name}.adjoint"].max_rel


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
    dtype=None,
    policy: Any = None,
) -> dict[str, LeafError]:
    """A whole model + loss: the parameter gradient from our handwritten VJPs equals
    `jax.grad(loss.apply(model.apply(params, state, x)[0], target))`; below float64, by the module's
    low-precision rule (a float64 truth at the same point) unless `rtol` is given. `dtype` (default: the
    params' own) may be a tuple such as `(jnp.float64, jnp.float32)`: params, state, x and target are cast
    to the lowest first, each dtype is checked at that point, the float64 evaluation also serving as the
    truth, and the report's keys name the dtype (`GPT[float32].dparams...`). With `policy` (a
    `purenet.precision.Policy`), both sides run `with_policy(model, policy)` (JAX's autodiff through its
    casts) and the truth is the bare model in float64 at the same point (needs 64-bit mode). Everything
    runs in one `jax.jit` program (compiling a model once costs far less than running it op by op).
    -> per-leaf report; raises GradientMismatch naming every leaf out of bounds."""
    several = isinstance(dtype, (tuple, list))
    dtypes = [jnp.dtype(d) for d in (dtype if several else (dtype or jax.tree_util.tree_leaves(params)[0].dtype,))]
    low = min(dtypes, key=lambda d: jnp.finfo(d).bits)
    point = (params, state, x, target) if dtype is None else _cast((params, state, x, target), low)
    with_truth = rtol is None and (policy is not None or any(needs_truth(d) for d in dtypes))
    if with_truth and not jax.config.jax_enable_x64:
        fail("check_model", "policy= is checked against a float64 truth, which needs 64-bit mode: call "
                            "jax.config.update('jax_enable_x64', True) at startup, or pass rtol=")
    bare = model
    if policy is not None:
        model = with_policy(model, policy)

    def jax_side(model, params, state, x, target, key):
        def reference(p):
            return loss.apply(model.apply(p, state, x, key=key, train=train)[0], target)

        return jax.value_and_grad(reference)(params)

    @jax.jit
    def program(point, key):
        sides = []
        for d in dtypes:
            params, state, x, target = _cast(point, d) if dtype is not None else point
            y, _, pullback = checked_vjp("check_model", model.name, model, params, state, x, key=key, train=train)
            value, loss_pullback = loss.vjp(y, target)
            dparams, _ = pullback(loss_pullback(jnp.ones_like(value)))
            sides.append(((value, dparams), jax_side(model, params, state, x, target, key)))
        truth = None
        if with_truth:
            f64 = [theirs for d, (_, theirs) in zip(dtypes, sides) if d == jnp.float64 and policy is None]
            truth = f64[0] if f64 else jax_side(bare, *upcast(point), key)
        return sides, truth

    sides, truth = program(point, key)
    report = {}
    for d, (ours, theirs) in zip(dtypes, sides):
        name = f"{model.name}[{d.name}]" if several else model.name
        bound = dict(truth=truth) if with_truth and (needs_truth(d) or policy is not None) else \
            dict(rtol=tolerance(d) if rtol is None else rtol)
        for leaf, e in compare(ours, theirs, what=name, raise_=False, **bound).items():
            report[leaf.replace(f"{name}[0]", f"{name}.loss").replace(f"{name}[1]", f"{name}.dparams")] = e
    _raise_failures(report)
    return report


def check_decode(layer: Layer, params, state, x: Any, *, rtol: float | None = None) -> dict[str, LeafError]:
    """Stepping `layer.decode` through x's time axis (axis 1 of every leaf, pos = 0, 1, ...) equals
    `layer.apply(params, state, x)` in eval mode at every position; a layer whose output has no time
    axis (return_sequences=False) is compared at the last step. -> per-leaf report; raises
    GradientMismatch naming the layer."""
    if not can_decode(layer):
        raise GradientMismatch(f"{layer.name}: has no decode step")
    dtype = jnp.result_type(*[a for a in jax.tree_util.tree_leaves(params) if is_differentiable(a)] or [float])
    with_truth = rtol is None and needs_truth(dtype)
    rtol = None if with_truth else tolerance(dtype) if rtol is None else rtol

    @jax.jit
    def both(params, state, x):
        y, _ = layer.apply(params, state, x, train=False)
        truth = layer.apply(*map(upcast, (params, state, x)), train=False)[0] if with_truth else y
        return _stepped(layer, params, x, y), y, truth

    stepped, y, truth = both(params, state, x)
    return compare(stepped, y, what=f"{layer.name}.decode",
                   **(dict(truth=truth) if with_truth else dict(rtol=rtol)))


def _stepped(layer: Layer, params, x, y):
    """`layer.decode` stepped through x's time axis (axis 1 of every leaf), shaped like `apply`'s output
    `y` (its last step where y has no time axis), traced."""
    steps = jax.tree_util.tree_leaves(x)[0].shape[1]
    cache = layer.decode.init_cache(params, jax.tree_util.tree_leaves(x)[0].shape[0], steps)

    def step(cache, inputs):
        x_t, pos = inputs
        y_t, cache = layer.decode.step(params, cache, x_t, pos=pos)
        return cache, y_t

    time_major = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), x)
    _, ys = jax.lax.scan(step, cache, (time_major, jnp.arange(steps)))
    return jax.tree_util.tree_map(lambda full, s: s[-1] if s.ndim == full.ndim + 1 else jnp.swapaxes(s, 0, 1), y,
                                  ys)


def as_jax_function(layer: Layer, state, *, key: jax.Array | None = None, train: bool = False,
                    with_state: bool = False) -> Callable:
    """A purenet layer as a plain JAX function whose reverse-mode derivative is our handwritten pullback:
    `f(params, x) -> y`, or with `with_state` `f(params, x) -> (y, new_state)`. Re-exported as
    `purenet.as_jax_function`; guide: docs/guides/jax-bridge.md.

    Under `jax.grad`, `jax.vjp` and `jax.jacrev` (reverse mode) the layer's own `vjp` runs backward, a
    `jax.custom_vjp`; `jax.jit` and `jax.vmap` compose. `key`, `train` and `state` are fixed when the
    function is made. Limits, each refused with a message rather than a wrong result:
    - state: a layer whose state `train=True` updates (BatchNorm's running statistics) needs
      `with_state=True`, which returns the new state beside y (not differentiated, as in purenet);
      without it the update would be dropped.
    - forward mode (`jax.jvp`, `jax.jacfwd`, `jax.hessian`): purenet layers have no forward-mode rule.
      Second derivatives by reverse over reverse (`jax.jacrev(jax.jacrev(f))`) differentiate the
      pullback's own operations with JAX and work."""
    if not isinstance(layer, Layer):
        fail("as_jax_function", f"layer must be a Layer, got {type(layer).__name__}")
    if not isinstance(with_state, bool):
        fail("as_jax_function", f"with_state must be a bool, got with_state={with_state!r}")
    if train and not with_state and jax.tree_util.tree_leaves(state):
        fail("as_jax_function", f"{layer.name} has state ({len(jax.tree_util.tree_leaves(state))} arrays, such as "
                                f"BatchNorm's running statistics) that train=True updates: pass with_state=True "
                                f"to get f(params, x) -> (y, new_state), or train=False to use the state as it is")

    @jax.custom_vjp
    def f(params, x):
        y, new_state = checked_apply("as_jax_function", layer.name, layer, params, state, x, key=key, train=train)
        return (y, new_state) if with_state else y

    # custom_vjp residuals must be arrays, not closures: keep (params, x), rerun our vjp backward.
    def forward(params, x):
        return f(params, x), (params, x)

    def backward(residuals, cotangent):
        params, x = residuals
        dy = cotangent[0] if with_state else cotangent  # the new state is not differentiated
        return checked_vjp("as_jax_function", layer.name, layer, params, state, x, key=key, train=train)[2](dy)

    f.defvjp(forward, backward)

    @functools.wraps(f)
    def bridged(params, x):
        try:
            return f(params, x)
        except TypeError as error:
            if "forward-mode" not in str(error):
                raise
        fail("as_jax_function", f"{layer.name} has a handwritten pullback (reverse mode) and no forward-mode "
                                f"rule: jax.jvp, jax.jacfwd and jax.hessian cannot run through it; use jax.grad, "
                                f"jax.vjp or jax.jacrev, and jax.jacrev(jax.jacrev(f)) for a Hessian", TypeError)

    return bridged
