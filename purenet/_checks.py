"""Argument validation shared by every module: each error goes through `fail`, so messages always read
`Owner: what was expected, got what` (`Conv2D: in_shape[-1] (=3) != in_channels (=1)`).

Constructors validate their hyperparameters once, eagerly; `init` validates shapes; `apply` validates
only what `init` could not know (the trailing sizes of a real input).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NoReturn, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def fail(owner: str, message: str, error: type[Exception] = ValueError) -> NoReturn:
    """Raise `error` reading `owner: message`."""
    raise error(f"{owner}: {message}")


def raised_by_fail(error: BaseException) -> bool:
    """Whether `error` was raised by `fail` (the last frame of its traceback), i.e. is purenet's own."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is fail.__code__


def check_x64(owner: str, dtype) -> None:
    """Fail for a 64-bit dtype while JAX's 64-bit mode is off (JAX would give 32 bits, with a warning only)."""
    if jnp.dtype(dtype).itemsize == 8 and jnp.issubdtype(dtype, jnp.floating) and not jax.config.jax_enable_x64:
        fail(owner, f"dtype={jnp.dtype(dtype).name} needs 64-bit mode, which is off: call "
                    f"jax.config.update('jax_enable_x64', True) at startup, or pass dtype=jnp.float32 (without it "
                    f"JAX computes in float32)")


def is_int(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_rank(owner: str, shape: Sequence[int], rank: int, layout: str) -> None:
    """Fail unless `shape` has `rank` dimensions, naming the expected layout and the received shape."""
    if len(shape) != rank:
        fail(owner, f"expected input of rank {rank} {layout}, got shape {tuple(shape)}")


def check_positive(owner: str, name: str, value: Any) -> tuple[int, ...]:
    """`value` (an int or a sequence of ints) as a tuple of ints, failing unless every entry is > 0."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(is_int(v) and v > 0 for v in values):
        fail(owner, f"{name} must be positive integers, got {name}={value!r}")
    return tuple(int(v) for v in values)


def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """`value` as an int, failing unless it is an integer (not a bool) >= `minimum` (step counts)."""
    if not is_int(value) or value < minimum:
        fail(owner, f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)


def check_per_axis(owner: str, name: str, value: Any, n: int) -> tuple[int, ...]:
    """An int, or a sequence of `n` ints, all > 0 -> a tuple of `n` ints (kernel sizes, strides)."""
    values = check_positive(owner, name, value)
    values = values * n if len(values) == 1 else values
    if len(values) != n:
        fail(owner, f"{name} must be an int or a sequence of {n} ints, got {name}={value!r}")
    return values


def _as_real(value: Any) -> float | None:
    """`value` as a Python float, or None if it is not a real number (a bool, a string, NaN)."""
    try:
        number = None if isinstance(value, (bool, str)) else float(value)
    except (TypeError, ValueError):
        return None
    return None if number is None or math.isnan(number) else number


def check_real(owner: str, name: str, value: Any, *, finite: bool = False) -> float:
    """`value` as a Python float (so a NumPy float64 cannot promote float32 arrays), failing unless it
    is a real number (a bool, a string or NaN is not; with `finite`, neither is an infinity)."""
    number = _as_real(value)
    if number is None or (finite and math.isinf(number)):
        kind = "a finite real number" if finite else "a real number"
        fail(owner, f"{name} must be {kind}, got {name}={value!r}")
    return number


def check_range(owner: str, name: str, value: Any, ok: Callable[[float], bool], expected: str, *,
                what: str | None = None) -> float:
    """`value` as a float, failing unless it is a real number and `ok(value)`; the messages read
    `{what} must be a real number, got {name}={value!r}`, then `{what} must be {expected}, got ...`
    (`what` defaults to `name`)."""
    number = _as_real(value)
    if number is None or not ok(number):
        fail(owner, f"{what or name} must be {'a real number' if number is None else expected}, "
                    f"got {name}={value!r}")
    return number


def check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(owner, f"{name} must be a bool, got {name}={value!r}")
    return value


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        fail(owner, f"{name} must be one of {tuple(choices)}, got {name}={value!r}")
    return value


def check_padding(owner: str, padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    """'SAME', 'VALID' (any case) or `n` explicit (lo, hi) pairs of ints >= 0 -> str or tuple of pairs."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            fail(owner, f"padding must be 'SAME', 'VALID' or {n} (lo, hi) pairs, got padding={padding!r}")
        return padding.upper()

    def is_pair(p):
        return isinstance(p, (tuple, list)) and len(p) == 2 and all(is_int(v) and v >= 0 for v in p)

    if not isinstance(padding, (tuple, list)) or len(padding) != n or not all(map(is_pair, padding)):
        fail(owner, f"padding must be 'SAME', 'VALID' or {n} (lo, hi) pairs of ints >= 0, "
                    f"got padding={padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def as_float(x: Any, like: Any = jnp.float32) -> jax.Array:
    """`x` unchanged if it is floating-point, else (integers, booleans) cast to the dtype JAX promotes it
    to with `like` (a dtype or an array: int32 with float32 -> float32). Layers compute on features in
    floating point whatever the input's dtype, as `x @ w` does in Dense."""
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return x
    return jnp.asarray(x).astype(jnp.promote_types(jnp.result_type(x), jnp.result_type(like)))


def is_concrete(x: Any) -> bool:
    """Whether `x`'s values are known now (not a tracer inside `jit`), so they can be checked."""
    return not isinstance(x, jax.core.Tracer)


def _kind(value: Any) -> str:
    """One word for an element of a tuple: `array` for any array or tracer, else its type's name."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return "array"
    return "function" if callable(value) else type(value).__name__


def describe(value: Any) -> str:
    """A short description of what a caller passed: an array's shape and dtype, a tuple's length."""
    if value is None:
        return "None"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} {value.dtype}"
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return f"a tuple of {len(value)} ({', '.join(_kind(v) for v in value[:4])})"
    if callable(value) and hasattr(value, "__name__"):
        return f"the function {value.__name__}"
    return f"{type(value).__name__} {value!r:.60}"


def check_params(owner: str, params: Any, expected: dict[str, tuple]) -> None:
    """Fail unless `params` is a dict with exactly the keys of `expected`, each leaf of the expected
    shape (None: any size on that axis), as the layer's init made it (not another model's params)."""

    def shape_text(shape):
        return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"

    def fits(leaf, shape):
        return (hasattr(leaf, "shape") and len(leaf.shape) == len(shape)
                and all(d is None or d == n for d, n in zip(shape, leaf.shape)))

    if isinstance(params, dict) and set(params) == set(expected) and all(
            fits(params[k], shape) for k, shape in expected.items()):
        return
    want = "{" + ", ".join(f"{k!r}: {shape_text(s)}" for k, s in expected.items()) + "}"
    if isinstance(params, dict):
        got = "{" + ", ".join(f"{k!r}: {tuple(getattr(v, 'shape', ())) if hasattr(v, 'shape') else type(v).__name__}"
                              for k, v in params.items()) + "}"
    else:
        got = describe(params)
    fail(owner, f"params must be {want} as this layer's init made them, got {got}")
