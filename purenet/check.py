"""The public gradient checker: our handwritten pullbacks against JAX's autodiff.

This is the only module of purenet that may call JAX's autodiff (`jax.vjp`, `jax.jvp`, `jax.grad`,
`jax.custom_vjp`): its job is to compare, and to bridge a purenet layer into a JAX user's `jax.grad`.

Errors are normwise per leaf: `max_abs = max|ours - jax|`, `max_rel = max_abs / max|jax|` (a leaf whose
reference is all zeros is compared absolutely), so a tiny entry cannot make a correct gradient fail.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet.core import Layer, init_model

TOLERANCES = {jnp.dtype("float64"): 1e-10, jnp.dtype("float32"): 1e-4}


class LeafError(NamedTuple):
    max_abs: float
    max_rel: float


class GradientMismatch(AssertionError):
    """Raised when a leaf of our result differs from JAX's beyond tolerance; the message names the leaf."""


def tolerance(dtype) -> float:
    """The relative tolerance of the table for `dtype` (float64 tight, float32 loose)."""
    return TOLERANCES[jnp.dtype(dtype)]


def compare(ours: Any, reference: Any, *, rtol: float, what: str) -> dict[str, LeafError]:
    """Compare two pytrees leaf by leaf; -> {leaf path: LeafError}. Raises GradientMismatch naming the
    first leaf over `rtol` (or a structure or shape mismatch)."""
    ours_leaves, ours_def = jax.tree_util.tree_flatten_with_path(ours)
    ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(reference)
    if ours_def != ref_def:
        raise GradientMismatch(f"{what}: tree structure differs: ours {ours_def} vs jax {ref_def}")
    report, failures = {}, []
    for (path, a), (_, b) in zip(ours_leaves, ref_leaves):
        name = what + jax.tree_util.keystr(path)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise GradientMismatch(f"{name}: shape {a.shape} != jax's {b.shape}")
        max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        max_rel = max_abs / scale if scale > 0 else max_abs
        report[name] = LeafError(max_abs, max_rel)
        if not np.isfinite(max_rel) or max_rel > rtol:
            failures.append(f"{name}: max abs error {max_abs:.3e}, max rel error {max_rel:.3e} > {rtol:.0e}")
    if failures:
        raise GradientMismatch("gradient mismatch\n  " + "\n  ".join(failures))
    return report


def random_input(key: jax.Array, shape, dtype) -> jax.Array:
    """A standard-normal input of `shape` (a batch dimension of -1 becomes 2)."""
    shape = tuple(2 if d == -1 else d for d in shape)
    return jax.random.normal(key, shape, dtype)


def _is_float(x) -> bool:
    return all(jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) for a in jax.tree_util.tree_leaves(x))


def _init_jitted(layer: Layer, key, in_shape, dtype):
    """`init_model` compiled as one program (eager init compiles every initializer op by op)."""
    out_shapes = []

    def init(key):
        out_shape, params, state = init_model(layer, key, in_shape, dtype=dtype)
        out_shapes.append(out_shape)
        return params, state

    params, state = jax.jit(init)(key)
    return tuple(out_shapes[0]), params, state


def check_layer(
    layer: Layer,
    in_shape,
    *,
    key: jax.Array,
    dtype=jnp.float64,
    x: Any = None,
    train: bool = False,
    num_cotangents: int = 2,
    rtol: float | None = None,
) -> dict[str, LeafError]:
    """Check one layer: declared out_shape, primal output and new state equal `apply`'s, and for
    `num_cotangents` random cotangents `dy` our `(dparams, dx)` equal `jax.vjp(apply)`'s.

    `x` defaults to a standard-normal input of `in_shape` in `dtype`; an integer `x` (token ids) is not
    differentiated and the layer's `dx` must be None. Both sides run in one `jax.jit` program (the
    registry tests check separately that jit equals eager). -> per-leaf report; raises GradientMismatch."""
    rtol = tolerance(dtype) if rtol is None else rtol
    k_init, k_x, k_dy, k_layer = jax.random.split(key, 4)
    out_shape, params, state = _init_jitted(layer, k_init, in_shape, dtype)
    if x is None:
        x = random_input(k_x, in_shape, dtype)
    differentiate_x = _is_float(x)

    @jax.jit
    def ours_and_jax(params, state, x, k_layer, k_dy):
        ctx = dict(key=k_layer, train=train)
        y, new_state, pullback = layer.vjp(params, state, x, **ctx)
        y_ref, state_ref = layer.apply(params, state, x, **ctx)
        if differentiate_x:
            _, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, state, x, **ctx)[0], params, x)
        else:
            _, jax_pullback = jax.vjp(lambda p: layer.apply(p, state, x, **ctx)[0], params)
            jax_pullback = (lambda f: lambda dy: (f(dy)[0], None))(jax_pullback)
        dys = [jax.random.normal(k, y.shape, y.dtype) for k in jax.random.split(k_dy, num_cotangents)]
        return (y, new_state), (y_ref, state_ref), [pullback(dy) for dy in dys], [jax_pullback(dy) for dy in dys]

    (y, new_state), (y_ref, state_ref), ours, theirs = ours_and_jax(params, state, x, k_layer, k_dy)
    expected = tuple(y.shape[0] if d == -1 else d for d in out_shape)
    if tuple(y.shape) != expected:
        raise GradientMismatch(f"{layer.name}: declared out_shape {out_shape} != output {y.shape}")
    report = compare(y, y_ref, rtol=rtol, what=f"{layer.name}.y")
    report |= compare(new_state, state_ref, rtol=rtol, what=f"{layer.name}.state")
    for (dparams, dx), (dparams_ref, dx_ref) in zip(ours, theirs):
        if differentiate_x:
            report |= compare(dx, dx_ref, rtol=rtol, what=f"{layer.name}.dx")
        elif dx is not None:
            raise GradientMismatch(f"{layer.name}.dx: integer input must get dx None, got {type(dx)}")
        report |= compare(dparams, dparams_ref, rtol=rtol, what=f"{layer.name}.dparams")
    return report


def check_dot_product(
    layer: Layer, in_shape, *, key: jax.Array, dtype=jnp.float64, train: bool = False, rtol=None
) -> float:
    """The adjoint identity <dy, J t> = <pullback(dy), t> between JAX's forward-mode `jvp` of `apply` and
    our pullback, for random tangents `t` on params and x. -> relative gap; raises GradientMismatch."""
    rtol = tolerance(dtype) if rtol is None else rtol
    k_init, k_x, k_t, k_dy, k_layer = jax.random.split(key, 5)
    _, params, state = _init_jitted(layer, k_init, in_shape, dtype)
    x = random_input(k_x, in_shape, dtype)

    @jax.jit
    def both_sides(params, x):
        leaves, treedef = jax.tree_util.tree_flatten((params, x))
        keys = jax.random.split(k_t, len(leaves))
        tangent = treedef.unflatten([jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
        y, jt = jax.jvp(lambda p, x: layer.apply(p, state, x, key=k_layer, train=train)[0], (params, x), tangent)
        dy = jax.random.normal(k_dy, y.shape, y.dtype)
        _, _, pullback = layer.vjp(params, state, x, key=k_layer, train=train)
        pairs = zip(jax.tree_util.tree_leaves(pullback(dy)), jax.tree_util.tree_leaves(tangent))
        rhs = sum(jnp.vdot(a, b) for a, b in pairs)
        return jnp.vdot(dy, jt), rhs, jnp.linalg.norm(dy) * jnp.linalg.norm(jt)

    lhs, rhs, scale = both_sides(params, x)
    gap = float(jnp.abs(lhs - rhs) / (scale + 1e-300))
    if not gap <= rtol:
        raise GradientMismatch(f"{layer.name}: <dy, J t> = {lhs} but <pullback(dy), t> = {rhs} (gap {gap:.2e})")
    return gap


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
    `jax.grad(loss.apply(model.apply(params, state, x)[0], target))`. -> per-leaf report."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    rtol = tolerance(dtype) if rtol is None else rtol
    y, _, pullback = model.vjp(params, state, x, key=key, train=train)
    value, loss_pullback = loss.vjp(y, target)
    dparams, _ = pullback(loss_pullback(jnp.ones_like(value)))

    def reference(p):
        return loss.apply(model.apply(p, state, x, key=key, train=train)[0], target)

    value_ref, dparams_ref = jax.value_and_grad(reference)(params)
    report = compare(value, value_ref, rtol=rtol, what=f"{model.name}.loss")
    return report | compare(dparams, dparams_ref, rtol=rtol, what=f"{model.name}.dparams")


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
