"""Schedules: pure functions `count -> value` for learning rates (and any other hyperparameter).

`count` is the number of updates done so far, a Python int or an int array (traced under `jax.jit`);
every schedule is elementwise, so `schedule(jnp.arange(n))` gives the first n values. Values follow
optax's schedules of the same names, but are computed in the default float dtype whatever the count's
integer dtype (optax divides an int32 count in float32, even with x64 on). Arguments are checked when
the schedule is built: values are finite and >= 0 (a negative learning rate would ascend the loss),
`power`, `decay_rate` > 0, `alpha` >= 0, step counts integers.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

import math

from purenet._checks import check_int, check_range, fail

Schedule = Callable[[Any], jax.Array]


def _value(owner: str, name: str, value: Any) -> float:
    """A schedule's value (a learning rate, a decay): a finite number >= 0."""
    return check_range(owner, name, value, lambda v: 0 <= v < math.inf, "a finite number >= 0")


def _positive(owner: str, name: str, value: Any) -> float:
    return check_range(owner, name, value, lambda v: 0 < v < math.inf, "a finite number > 0")


def _float(count: Any) -> jax.Array:
    """The count in the default float dtype (float64 with x64 on): int32 / int would give float32."""
    return jnp.asarray(count, dtype=jnp.result_type(float))


def constant_schedule(value: float) -> Schedule:
    """value at every count."""
    _value("constant_schedule", "value", value)
    return lambda count: jnp.full(jnp.shape(count), value)


def polynomial_schedule(init_value: float, end_value: float, power: float, transition_steps: int,
                        transition_begin: int = 0) -> Schedule:
    """init_value for count <= transition_begin, then (init - end) * (1 - t / transition_steps)^power + end
    with t = count - transition_begin, and end_value from t >= transition_steps on."""
    for arg, value in (("init_value", init_value), ("end_value", end_value)):
        _value("polynomial_schedule", arg, value)
    _positive("polynomial_schedule", "power", power)
    check_int("polynomial_schedule", "transition_steps", transition_steps, 1)
    check_int("polynomial_schedule", "transition_begin", transition_begin, 0)

    def schedule(count):
        done = jnp.clip(_float(count) - transition_begin, 0, transition_steps)
        remaining = (transition_steps - done) / transition_steps  # exactly >= 0: no NaN from a power
        return (init_value - end_value) * remaining**power + end_value

    return schedule


def linear_schedule(init_value: float, end_value: float, transition_steps: int,
                    transition_begin: int = 0) -> Schedule:
    """Linear from init_value (count <= transition_begin) to end_value over transition_steps."""
    for arg, value in (("init_value", init_value), ("end_value", end_value)):
        _value("linear_schedule", arg, value)
    check_int("linear_schedule", "transition_steps", transition_steps, 1)
    check_int("linear_schedule", "transition_begin", transition_begin, 0)
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(init_value: float,
                                boundaries_and_scales: dict[int, float] | None = None) -> Schedule:
    """init_value times the product of every scale whose boundary count has been reached."""
    _value("piecewise_constant_schedule", "init_value", init_value)
    if boundaries_and_scales is not None and not isinstance(boundaries_and_scales, dict):
        fail("piecewise_constant_schedule", f"boundaries_and_scales must be a dict {{count: scale}}, got "
                                            f"{boundaries_and_scales!r}")
    pieces = (boundaries_and_scales or {}).items()
    for boundary, factor in pieces:
        check_int("piecewise_constant_schedule", "a boundary", boundary, 0)
        _value("piecewise_constant_schedule", f"the scale at boundary {boundary}", factor)
    pieces = sorted(pieces)

    def schedule(count):
        value = jnp.full(jnp.shape(count), init_value)
        for boundary, factor in pieces:
            value = jnp.where(count < boundary, value, value * factor)
        return value

    return schedule


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float, *,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value: float | None = None) -> Schedule:
    """init_value * decay_rate^(t / transition_steps), t = count - transition_begin (init_value while
    t <= 0); `staircase` floors the exponent; `end_value` bounds the decay (or growth, decay_rate > 1)."""
    _value("exponential_decay", "init_value", init_value)
    check_int("exponential_decay", "transition_steps", transition_steps, 1)
    _positive("exponential_decay", "decay_rate", decay_rate)
    check_int("exponential_decay", "transition_begin", transition_begin, 0)
    if end_value is not None:
        _value("exponential_decay", "end_value", end_value)
    bound = jnp.maximum if decay_rate < 1 else jnp.minimum

    def schedule(count):
        elapsed = _float(count) - transition_begin
        exponent = elapsed / transition_steps
        if staircase:
            exponent = jnp.floor(exponent)
        value = jnp.where(elapsed <= 0, init_value, init_value * decay_rate**exponent)
        return value if end_value is None else bound(value, end_value)

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """init_value * ((1 - alpha) * (1 + cos(pi * min(count, decay_steps) / decay_steps)) / 2 + alpha):
    from init_value to alpha * init_value over decay_steps, then flat."""
    _value("cosine_decay_schedule", "init_value", init_value)
    check_int("cosine_decay_schedule", "decay_steps", decay_steps, 1)
    _value("cosine_decay_schedule", "alpha", alpha)

    def schedule(count):
        done = jnp.minimum(_float(count), decay_steps) / decay_steps
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * done))
        return init_value * ((1 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine_decay_schedule(init_value: float, peak_value: float, warmup_steps: int,
                                 decay_steps: int, end_value: float = 0.0) -> Schedule:
    """Linear warmup from init_value to peak_value over warmup_steps, then cosine decay to end_value,
    reached at count = decay_steps (which counts the warmup steps too).

    Examples:
        >>> lr = warmup_cosine_decay_schedule(0.0, 1e-3, warmup_steps=100, decay_steps=1100, end_value=1e-4)
        >>> [round(float(lr(count)), 6) for count in (0, 50, 100, 600, 1100, 5000)]
        [0.0, 0.0005, 0.001, 0.00055, 0.0001, 0.0001]
    """
    name = "warmup_cosine_decay_schedule"
    for arg, value in (("init_value", init_value), ("peak_value", peak_value), ("end_value", end_value)):
        _value(name, arg, value)
    check_int(name, "warmup_steps", warmup_steps, 0)
    check_int(name, "decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        fail(name, f"decay_steps must exceed warmup_steps, got decay_steps={decay_steps}, "
                   f"warmup_steps={warmup_steps}")
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    decay_part = cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha)
    if warmup_steps == 0:
        return decay_part
    warmup_part = linear_schedule(init_value, peak_value, warmup_steps)
    return lambda count: jnp.where(count < warmup_steps, warmup_part(count), decay_part(count - warmup_steps))
