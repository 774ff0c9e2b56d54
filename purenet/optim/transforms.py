"""Gradient transformations, in the shape of optax's: the contract, combinators and transforms.

An `Optimizer` is a pair of pure functions:

    init(params)                        -> state
    update(grads, state, params=None)   -> (updates, new_state)

and `apply_updates(params, updates)` adds the updates to the params. Each transform below is one such
pair; the aliases (`sgd`, `adam`, ...) are `chain`s of them. States are NamedTuples; moment trees (`mu`,
`nu`, ...) have the tree, shapes and dtypes of `params`, and updates keep the dtype of the gradients.
A learning rate is a number or a schedule (`count -> value`, see `purenet.schedules`), evaluated at the
number of updates done before this one (0 first). Hyperparameters are Python numbers, checked eagerly.
The aliases built from these transforms (`sgd`, `adam`, ...) are in `purenet.optim.aliases`.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from purenet._checks import check_int, check_range, check_real, fail
from purenet.core import leaf_path

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = float | Schedule
Mask = PyTree | Callable[[PyTree], PyTree]


class Optimizer(NamedTuple):
    """A gradient transformation: `init(params) -> state`; `update(grads, state, params=None) ->
    (updates, new_state)`. Transforms and whole optimizers (chains of transforms) share this form."""

    init: Callable[[PyTree], PyTree]
    update: Callable[..., tuple[PyTree, PyTree]]


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """params + updates, leaf by leaf, keeping each param's dtype."""
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def global_norm(tree: PyTree) -> jax.Array:
    """sqrt(sum of squares of every entry of every leaf) -> ()."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def decay_mask(params: PyTree) -> PyTree:
    """The default weight-decay mask: True for leaves with ndim >= 2 (kernels), False for biases, norm
    scales and scalars.

    Examples:
        >>> decay_mask({"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "gamma": jnp.ones(2)})
        {'b': False, 'gamma': False, 'w': True}
    """
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def path_mask(rule: Callable[[str, jax.Array], bool]) -> Callable[[PyTree], PyTree]:
    """A mask by name: `mask(params)` is True where `rule(path, leaf)` is, `path` the leaf's keys
    joined by "/" ("blocks/3/attn/w_q"). For `masked`, `add_decayed_weights` and `adamw(mask=...)`."""

    def mask(params):
        return jax.tree_util.tree_map_with_path(lambda path, p: bool(rule(leaf_path(path), p)), params)

    return mask


def decay_mask_except(*patterns: str) -> Callable[[PyTree], PyTree]:
    """`decay_mask` (ndim >= 2) without the leaves whose path matches one of the shell-style
    `patterns` (fnmatch, `*` crosses "/"): `adamw(lr, mask=decay_mask_except("pos/*", "*embed*"))`
    keeps a learned positional table and the embeddings from decaying."""
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        fail("decay_mask_except", f"expects one or more non-empty path patterns, got {patterns!r}")
    return path_mask(lambda path, p: jnp.ndim(p) >= 2 and not any(fnmatch.fnmatchcase(path, pattern)
                                                                   for pattern in patterns))


# ------------------------------------------------------------------------------------- validation


def _unit(opt: str, name: str, value: Any) -> float:
    return check_range(opt, name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def _non_negative(opt: str, name: str, value: Any) -> float:
    return check_range(opt, name, value, lambda v: 0.0 <= v < math.inf, "a finite number >= 0")


def _positive(opt: str, name: str, value: Any) -> float:
    return check_range(opt, name, value, lambda v: 0.0 < v < math.inf, "a finite number > 0")


def _learning_rate(opt: str, learning_rate: Any) -> None:
    """A finite number >= 0, or a schedule whose value at count 0 is one (a schedule cannot be checked
    at every count; purenet's own schedules refuse negative and infinite values when built)."""
    if not callable(learning_rate):
        check_range(opt, "learning_rate", learning_rate, lambda v: 0.0 <= v < math.inf,
                    "a finite number >= 0 or a schedule")
        return
    first = learning_rate(jnp.zeros((), jnp.int32))
    if jnp.shape(first) != ():
        fail(opt, f"a learning_rate schedule must return a scalar, got shape {jnp.shape(first)} at count 0")
    check_range(opt, "learning_rate(0)", float(first), lambda v: 0.0 <= v < math.inf,
                "a finite number >= 0", what="a learning_rate schedule's value")


def _is_optimizer(opt: Any) -> bool:
    return callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))


def _check_optimizer(opt_name: str, opt: Any) -> None:
    if not _is_optimizer(opt):
        fail(opt_name, f"expects optimizers with init and update (call the factory), got {opt!r}")


def _ema(new, old, decay):
    """One step of an exponential moving average: (1 - decay) * new + decay * old (optax's order)."""
    return (1 - decay) * new + decay * old


# ----------------------------------------------------------------------------------------- states


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


class CountState(NamedTuple):
    """The state of `scale_by_schedule`: the update count."""

    count: jax.Array  # () int32: updates done so far


class TraceState(NamedTuple):
    """The state of `trace` (momentum): one buffer per parameter."""

    trace: PyTree  # momentum buffer, tree of params


class ScaleByRmsState(NamedTuple):
    """The state of `scale_by_rms`: the moving average of squared gradients."""

    nu: PyTree  # EMA of g^2


class ScaleByStddevState(NamedTuple):
    """The state of `scale_by_stddev`: moving averages of gradients and their squares."""

    mu: PyTree  # EMA of g
    nu: PyTree  # EMA of g^2


class ScaleByRssState(NamedTuple):
    """The state of `scale_by_rss` (Adagrad): the running sum of squared gradients."""

    sum_of_squares: PyTree  # initial value + sum of g^2


class ScaleByAdamState(NamedTuple):
    """The state of `scale_by_adam`: the count and both moment estimates."""

    count: jax.Array  # () int32: updates done so far
    mu: PyTree  # EMA of g
    nu: PyTree  # EMA of g^2


class ScaleByLionState(NamedTuple):
    """The state of `scale_by_lion`: the momentum."""

    mu: PyTree  # EMA of g (decay b2)


class MaskedState(NamedTuple):
    """The state of `masked`: the inner transform's state over the masked-in leaves."""

    inner_state: PyTree  # the inner transform's state over the masked-in leaves only


class AccumulateState(NamedTuple):
    """The state of `accumulate_gradients`: the micro-step, the running mean, the inner state."""

    mini_step: jax.Array  # () int32: micro-steps since the last inner update, in [0, every_k)
    mean_grads: PyTree  # running mean of this cycle's gradients, tree of params
    inner_state: PyTree  # the inner optimizer's state, advanced on every k-th call only


def _zeros(params: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, params)


def _next(count: jax.Array) -> jax.Array:
    """count + 1, saturating at the int32 maximum instead of wrapping."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


def _bias_corrected(moment: PyTree, decay: float, count: jax.Array) -> PyTree:
    """moment / (1 - decay^count); the correction is computed in the widest float, then cast."""
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


# ---------------------------------------------------------------------------------- combinators


def identity() -> Optimizer:
    """updates = grads."""
    return Optimizer(lambda params: EmptyState(), lambda grads, state, params=None: (grads, state))


def chain(*opts: Optimizer) -> Optimizer:
    """Apply transforms in order, each to the previous one's updates. State: a tuple, one per transform."""
    for opt in opts:
        _check_optimizer("chain", opt)

    def init(params):
        return tuple(opt.init(params) for opt in opts)

    def update(grads, state, params=None):
        new_state = []
        for opt, opt_state in zip(opts, state):
            grads, opt_state = opt.update(grads, opt_state, params)
            new_state.append(opt_state)
        return grads, tuple(new_state)

    return Optimizer(init, update)


def masked(inner: Optimizer, mask: Mask) -> Optimizer:
    """Apply `inner` to the leaves (or subtrees) where `mask` is True; pass the others through.

    `mask`: a tree of Python bools with the structure of params (or a prefix of it), or a callable
    params -> such a tree. `inner` sees, and keeps state for, the masked-in leaves only."""
    _check_optimizer("masked", inner)

    def mask_of(tree):
        return mask(tree) if callable(mask) else mask

    def keep(tree, mask_tree):  # masked-out subtrees become None, an empty subtree
        return None if tree is None else jax.tree.map(lambda m, x: x if m else None, mask_tree, tree)

    def init(params):
        return MaskedState(inner.init(keep(params, mask_of(params))))

    def update(grads, state, params=None):
        mask_tree = mask_of(grads)
        inner_updates, inner_state = inner.update(
            keep(grads, mask_tree), state.inner_state, keep(params, mask_tree))
        updates = jax.tree.map(lambda m, g, u: u if m else g, mask_tree, grads, inner_updates)
        return updates, MaskedState(inner_state)

    return Optimizer(init, update)


def accumulate_gradients(opt: Optimizer, every_k: int) -> Optimizer:
    """Gradient accumulation (like optax.MultiSteps): average `every_k` micro-step gradients; on every
    k-th call apply `opt` to that mean, otherwise return zero updates and leave `opt`'s state alone.

    The state holds one running mean (tree of params), no copy of the params; `opt` runs only on the
    k-th call (a `lax.cond`)."""
    _check_optimizer("accumulate_gradients", opt)
    check_int("accumulate_gradients", "every_k", every_k, 1)

    def init(params):
        return AccumulateState(jnp.zeros((), jnp.int32), _zeros(params), opt.init(params))

    def update(grads, state, params=None):
        n = state.mini_step + 1  # running mean: mean_n = mean_(n-1) + (g_n - mean_(n-1)) / n
        mean = jax.tree.map(lambda m, g: m + (g - m) / n.astype(m.dtype), state.mean_grads, grads)
        emit = n == every_k

        def inner_step():
            return opt.update(mean, state.inner_state, params)

        def hold():
            shapes = jax.eval_shape(opt.update, mean, state.inner_state, params)[0]
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), state.inner_state

        updates, inner_state = lax.cond(emit, inner_step, hold)
        mean = jax.tree.map(lambda m: jnp.where(emit, jnp.zeros_like(m), m), mean)
        return updates, AccumulateState(jnp.where(emit, 0, n), mean, inner_state)

    return Optimizer(init, update)


# ------------------------------------------------------------------------------------- transforms


def scale(step_size: float) -> Optimizer:
    """updates = step_size * grads."""
    step_size = check_real("scale", "step_size", step_size, finite=True)

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: g * jnp.asarray(step_size, g.dtype), grads), state

    return Optimizer(lambda params: EmptyState(), update)


def scale_by_schedule(schedule: Schedule) -> Optimizer:
    """updates = schedule(count) * grads, count = updates done so far (0 first)."""
    if not callable(schedule):
        fail("scale_by_schedule", f"schedule must be callable (count -> value), got schedule={schedule!r}")

    def init(params):
        del params
        return CountState(jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        step_size = schedule(state.count)
        updates = jax.tree.map(lambda g: g * jnp.asarray(step_size, g.dtype), grads)
        return updates, CountState(_next(state.count))

    return Optimizer(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> Optimizer:
    """updates = -learning_rate * grads (a descent step; `flip_sign=False` keeps the sign)."""
    _learning_rate("scale_by_learning_rate", learning_rate)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def trace(decay: float, *, nesterov: bool = False) -> Optimizer:
    """Momentum: t = g + decay * t; updates = t, or g + decay * t with Nesterov."""
    decay = _unit("trace", "decay", decay)

    def init(params):
        return TraceState(_zeros(params))

    def update(grads, state, params=None):
        del params
        new_trace = jax.tree.map(lambda g, t: g + decay * t, grads, state.trace)
        updates = jax.tree.map(lambda g, t: g + decay * t, grads, new_trace) if nesterov else new_trace
        return updates, TraceState(new_trace)

    return Optimizer(init, update)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0) -> Optimizer:
    """RMSProp scaling: nu = decay * nu + (1 - decay) * g^2; updates = g / sqrt(nu + eps)."""
    decay = _unit("scale_by_rms", "decay", decay)
    eps = _positive("scale_by_rms", "eps", eps)
    initial_scale = _non_negative("scale_by_rms", "initial_scale", initial_scale)

    def init(params):
        return ScaleByRmsState(jax.tree.map(lambda p: jnp.full_like(p, initial_scale), params))

    def update(grads, state, params=None):
        del params
        nu = jax.tree.map(lambda g, v: _ema(g**2, v, decay), grads, state.nu)
        updates = jax.tree.map(lambda g, v: g * lax.rsqrt(v + eps), grads, nu)
        return updates, ScaleByRmsState(nu)

    return Optimizer(init, update)


def scale_by_stddev(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0) -> Optimizer:
    """Centered RMSProp scaling: EMAs mu of g and nu of g^2; updates = g / sqrt(nu - mu^2 + eps)."""
    decay = _unit("scale_by_stddev", "decay", decay)
    eps = _positive("scale_by_stddev", "eps", eps)
    initial_scale = _non_negative("scale_by_stddev", "initial_scale", initial_scale)

    def init(params):
        return ScaleByStddevState(_zeros(params), jax.tree.map(lambda p: jnp.full_like(p, initial_scale),
                                                               params))

    def update(grads, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: _ema(g, m, decay), grads, state.mu)
        nu = jax.tree.map(lambda g, v: _ema(g**2, v, decay), grads, state.nu)
        updates = jax.tree.map(lambda g, m, v: g * lax.rsqrt(v - m**2 + eps), grads, mu, nu)
        return updates, ScaleByStddevState(mu, nu)

    return Optimizer(init, update)


def scale_by_rss(initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> Optimizer:
    """Adagrad scaling: s = s + g^2; updates = g / sqrt(s + eps) (0 where s == 0)."""
    initial = _non_negative("scale_by_rss", "initial_accumulator_value", initial_accumulator_value)
    eps = _positive("scale_by_rss", "eps", eps)

    def init(params):
        return ScaleByRssState(jax.tree.map(lambda p: jnp.full_like(p, initial), params))

    def update(grads, state, params=None):
        del params
        sums = jax.tree.map(lambda g, s: g**2 + s, grads, state.sum_of_squares)
        updates = jax.tree.map(lambda g, s: jnp.where(s > 0, lax.rsqrt(s + eps), 0.0) * g, grads, sums)
        return updates, ScaleByRssState(sums)

    return Optimizer(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam scaling: EMAs mu of g (b1) and nu of g^2 (b2), bias-corrected by 1 - b^count;
    updates = mu_hat / (sqrt(nu_hat) + eps)."""
    b1 = _unit("scale_by_adam", "b1", b1)
    b2 = _unit("scale_by_adam", "b2", b2)
    eps = _positive("scale_by_adam", "eps", eps)

    def init(params):
        return ScaleByAdamState(jnp.zeros((), jnp.int32), _zeros(params), _zeros(params))

    def update(grads, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), grads, state.mu)
        nu = jax.tree.map(lambda g, v: _ema(g**2, v, b2), grads, state.nu)
        count = _next(state.count)
        mu_hat, nu_hat = _bias_corrected(mu, b1, count), _bias_corrected(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamState(count, mu, nu)

    return Optimizer(init, update)


def scale_by_lion(b1: float = 0.9, b2: float = 0.99) -> Optimizer:
    """Lion scaling: updates = sign((1 - b1) * g + b1 * mu); then mu = (1 - b2) * g + b2 * mu."""
    b1 = _unit("scale_by_lion", "b1", b1)
    b2 = _unit("scale_by_lion", "b2", b2)

    def init(params):
        return ScaleByLionState(_zeros(params))

    def update(grads, state, params=None):
        del params
        updates = jax.tree.map(lambda g, m: jnp.sign(_ema(g, m, b1)), grads, state.mu)
        mu = jax.tree.map(lambda g, m: _ema(g, m, b2), grads, state.mu)
        return updates, ScaleByLionState(mu)

    return Optimizer(init, update)


def add_decayed_weights(weight_decay: float = 0.0, mask: Mask | None = None) -> Optimizer:
    """updates = grads + weight_decay * params, on the leaves where `mask` is True (None: all leaves;
    see `masked`). `update` needs `params`."""
    weight_decay = _non_negative("add_decayed_weights", "weight_decay", weight_decay)

    def update(grads, state, params=None):
        if params is None:
            fail("add_decayed_weights", "update needs params, got params=None")
        if weight_decay == 0:
            return grads, state
        return jax.tree.map(lambda g, p: g + weight_decay * p, grads, params), state

    decay = Optimizer(lambda params: EmptyState(), update)
    return decay if mask is None else masked(decay, mask)


def clip(max_delta: float) -> Optimizer:
    """Clip every entry of the updates to [-max_delta, max_delta]."""
    max_delta = _positive("clip", "max_delta", max_delta)

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), grads), state

    return Optimizer(lambda params: EmptyState(), update)


def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Rescale the updates to global norm `max_norm` when their global norm exceeds it."""
    max_norm = _positive("clip_by_global_norm", "max_norm", max_norm)

    def update(grads, state, params=None):
        del params
        norm = global_norm(grads)
        small = norm < max_norm
        clipped = jax.tree.map(lambda g: lax.select(small, g, g / norm.astype(g.dtype) * max_norm), grads)
        return clipped, state

    return Optimizer(lambda params: EmptyState(), update)
