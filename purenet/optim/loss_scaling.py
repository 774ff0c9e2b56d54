"""Loss scaling for float16 training: pure functions, and an optimizer wrapper that applies them.

float16 holds magnitudes from 6.1e-5 (subnormals down to 6.0e-8) to 65504: the small cotangents of a
backward pass in float16 round to zero (underflow) and their gradients vanish. Loss scaling multiplies
the loss's cotangent, the seed of the backward pass, by a scale S, so that every cotangent is S times
larger (the pullbacks are linear in it), and divides the parameter gradients by S before the update
(`unscale`, in float32 under a precision policy). Too large an S overflows to inf or NaN instead: that
step's update is skipped and, with a dynamic scale, S shrinks by `backoff_factor`; after
`growth_interval` finite steps in a row it grows by `growth_factor` (`adjust_scale`, as PyTorch's
GradScaler and jmp's DynamicLossScale do).

    optimizer = dynamic_loss_scale(adam(1e-3))        # an Optimizer, its state a LossScaleState
    step = make_train_step(model, loss, optimizer)    # seeds the pullback with loss_scale(opt_state)

`make_train_step` and `fit` read the scale from the optimizer's state (`loss_scale`), so the wrapper
must be the outermost transform. In a loop of your own: seed the loss pullback with
`loss_scale(opt_state)` instead of 1 and pass the gradients to the wrapper's `update` as they come.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purenet._checks import check_int, check_range, fail
from purenet.optim.transforms import Optimizer, _check_optimizer

PyTree = Any


class LossScaleState(NamedTuple):
    """The state of `static_loss_scale` and `dynamic_loss_scale`."""

    scale: jax.Array  # () float32: the loss's cotangent this step (S)
    good_steps: jax.Array  # () int32: finite steps in a row since the scale last changed
    inner_state: PyTree  # the wrapped optimizer's state, left as it was on a skipped step


def all_finite(tree: PyTree) -> jax.Array:
    """Whether every entry of every floating-point leaf of `tree` is finite -> () bool."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def unscale(grads: PyTree, scale: jax.Array) -> tuple[PyTree, jax.Array]:
    """Gradients of the scaled loss -> (grads / scale, each leaf in its own dtype (divided in at least
    float32), and whether all of them are finite, () bool)."""

    def divide(g):
        acc = jnp.promote_types(g.dtype, jnp.float32)
        return (g.astype(acc) / scale.astype(acc)).astype(g.dtype)

    grads = jax.tree.map(divide, grads)
    return grads, all_finite(grads)


def adjust_scale(scale: jax.Array, good_steps: jax.Array, finite: jax.Array, *, growth_interval: int,
                 growth_factor: float, backoff_factor: float, min_scale: float) -> tuple[jax.Array, jax.Array]:
    """The dynamic rule -> (scale, good_steps) after a step whose gradients were `finite` or not:
    not finite: scale * backoff_factor (at least `min_scale`), good_steps 0; finite: good_steps + 1, and
    at `growth_interval` the scale times `growth_factor` (kept if that is not finite), good_steps 0."""
    good = good_steps + 1
    grow = good >= growth_interval
    grown = scale * growth_factor
    grown = jnp.where(jnp.isfinite(grown), grown, scale)
    on_finite = jnp.where(grow, grown, scale), jnp.where(grow, 0, good)
    on_overflow = jnp.maximum(scale * backoff_factor, jnp.asarray(min_scale, scale.dtype)), jnp.zeros_like(good)
    return (jnp.where(finite, on_finite[0], on_overflow[0]).astype(scale.dtype),
            jnp.where(finite, on_finite[1], on_overflow[1]).astype(good_steps.dtype))


def loss_scale(opt_state: PyTree) -> jax.Array | None:
    """The scale to seed the loss's pullback with: `opt_state.scale` where the optimizer is a loss-scale
    wrapper (its state a LossScaleState), else None (seed 1)."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None


def _loss_scaled(inner: Optimizer, initial_scale: float, adjust: Callable) -> Optimizer:
    """The wrapper: unscale, skip a non-finite step (zero updates, inner state kept), adjust the scale."""

    def init(params):
        return LossScaleState(jnp.asarray(initial_scale, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params))

    def update(grads, state, params=None):
        grads, finite = unscale(grads, state.scale)
        grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)  # no inf reaches inner
        updates, inner_state = inner.update(grads, state.inner_state, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), inner_state, state.inner_state)
        return updates, LossScaleState(*adjust(state.scale, state.good_steps, finite), inner_state)

    return Optimizer(init, update)


def _scale_value(owner: str, name: str, value: Any) -> float:
    largest = float(jnp.finfo(jnp.float32).max)
    return check_range(owner, name, value, lambda v: 0 < v <= largest, "a number > 0 that float32 holds")


def static_loss_scale(optimizer: Optimizer, scale: float) -> Optimizer:
    """`optimizer` on the gradients of the loss scaled by a fixed `scale` (unscaled before it runs); a
    step whose gradients are not finite is skipped (zero updates, `optimizer`'s state unchanged).
    State: LossScaleState(scale, good_steps (unused, 0), optimizer's state)."""
    _check_optimizer("static_loss_scale", optimizer)
    scale = _scale_value("static_loss_scale", "scale", scale)
    return _loss_scaled(optimizer, scale, lambda s, good, finite: (s, good))


def dynamic_loss_scale(optimizer: Optimizer, *, initial_scale: float = 2.0**15, growth_interval: int = 2000,
                       growth_factor: float = 2.0, backoff_factor: float = 0.5, min_scale: float = 1.0) -> Optimizer:
    """`optimizer` on the gradients of the loss scaled by S (unscaled before it runs), S adjusted after
    every step (`adjust_scale`): a step whose gradients are not finite is skipped (zero updates,
    `optimizer`'s state unchanged) and S times `backoff_factor`, at least `min_scale`; after
    `growth_interval` finite steps in a row S times `growth_factor`. The defaults are PyTorch's
    GradScaler's. State: LossScaleState(S, good_steps, optimizer's state)."""
    owner = "dynamic_loss_scale"
    _check_optimizer(owner, optimizer)
    initial_scale = _scale_value(owner, "initial_scale", initial_scale)
    min_scale = _scale_value(owner, "min_scale", min_scale)
    if min_scale > initial_scale:
        fail(owner, f"min_scale (={min_scale}) must be at most initial_scale (={initial_scale})")
    growth_interval = check_int(owner, "growth_interval", growth_interval, 1)
    growth_factor = check_range(owner, "growth_factor", growth_factor, lambda v: 1 <= v < math.inf,
                                "a finite number >= 1")
    backoff_factor = check_range(owner, "backoff_factor", backoff_factor, lambda v: 0 < v < 1, "in (0, 1)")

    def adjust(scale, good_steps, finite):
        return adjust_scale(scale, good_steps, finite, growth_interval=growth_interval, growth_factor=growth_factor,
                            backoff_factor=backoff_factor, min_scale=min_scale)

    return _loss_scaled(optimizer, initial_scale, adjust)
