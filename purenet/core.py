"""The layer contract and the combinators that compose layers.

A layer is a named triple of pure functions (one uniform form for every layer, stateful or not):

    init(key, in_shape)                          -> (out_shape, params, state)
    apply(params, state, x, *, key, train)       -> (y, new_state)
    vjp(params, state, x, *, key, train)         -> (y, new_state, pullback)
    pullback(dy)                                 -> (dparams, dx)

`in_shape` includes the leading batch dimension, which may be -1 (unknown). `params` and `state` are
pytrees (dicts with named fields, `{}` when empty); `dparams` always has the tree of `params`. State
(BatchNorm's running statistics) is not differentiated: only `y` receives a cotangent. `key` is a PRNG key
or None (only Dropout in training needs one); combinators split it per child, deterministically.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

Shape = tuple[int, ...]
PyTree = Any


class Layer(NamedTuple):
    """A layer: `init`, `apply` and a handwritten `vjp`, plus a name used in error messages."""

    init: Callable[..., tuple[Shape, PyTree, PyTree]]
    apply: Callable[..., tuple[jax.Array, PyTree]]
    vjp: Callable[..., tuple[jax.Array, PyTree, Callable]]
    name: str


# ----------------------------------------------------------------------------------------- errors


def fail(layer: str, message: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` reading `Layer: message`; every purenet error goes through here."""
    raise error(f"{layer}: {message}")


def check_rank(layer: str, shape: Sequence[int], rank: int, layout: str) -> None:
    """Fail unless `shape` has `rank` dimensions, naming the expected layout and the received shape."""
    if len(shape) != rank:
        fail(layer, f"expected input of rank {rank} {layout}, got shape {tuple(shape)}")


def check_positive(layer: str, name: str, value: Any) -> tuple[int, ...]:
    """Return `value` as a tuple of ints, failing unless every entry is an int > 0."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        fail(layer, f"{name} must be positive integers, got {name}={value!r}")
    return values


def check_real(owner: str, name: str, value: Any) -> float:
    """Return `value` as a float, failing unless it is a real number (a bool or NaN is not)."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or math.isnan(number):
        fail(owner, f"{name} must be a real number, got {name}={value!r}")
    return number


def check_trailing(layer: str, expected: Sequence[int], x: jax.Array) -> None:
    """At `apply`: fail unless `x.shape[1:]` equals the `expected` non-batch shape given to `init`."""
    if tuple(x.shape[1:]) != tuple(expected):
        fail(layer, f"expected input shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")


# ------------------------------------------------------------------------------ stateless lifting


def stateless(
    name: str,
    init: Callable[[jax.Array, Shape], tuple[Shape, PyTree]],
    apply: Callable[[PyTree, jax.Array], jax.Array],
    vjp: Callable[[PyTree, jax.Array], tuple[jax.Array, Callable]],
) -> Layer:
    """Lift a layer without state or randomness (`init -> (out_shape, params)`, `apply(params, x)`,
    `vjp(params, x) -> (y, pullback)`) to the uniform contract, with `state = {}`."""

    def init_fn(key, in_shape):
        out_shape, params = init(key, tuple(in_shape))
        return out_shape, params, {}

    def apply_fn(params, state, x, *, key=None, train=False):
        del key, train
        return apply(params, x), state

    def vjp_fn(params, state, x, *, key=None, train=False):
        del key, train
        y, pullback = vjp(params, x)
        return y, state, pullback

    return Layer(init_fn, apply_fn, vjp_fn, name)


def elementwise(name: str, forward: Callable, derivative: Callable) -> Layer:
    """A parameter-free layer `y = f(x)` whose pullback is `dx = dy * derivative(x, y)`."""

    def init(key, in_shape):
        del key
        return in_shape, {}

    def apply(params, x):
        del params
        return forward(x)

    def vjp(params, x):
        del params
        y = forward(x)

        def pullback(dy):
            return {}, dy * derivative(x, y)

        return y, pullback

    return stateless(name, init, apply, vjp)


# ------------------------------------------------------------------------------------ combinators


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


def identity() -> Layer:
    """y = x. Shapes: any -> same."""

    def init(key, in_shape):
        del key
        return in_shape, {}

    def vjp(params, x):
        del params
        return x, lambda dy: ({}, dy)

    return stateless("Identity", init, lambda params, x: x, vjp)


def serial(*layers: Layer) -> Layer:
    """Compose layers in order. Params and state are tuples with one entry per child.

    The VJP runs the children's `vjp`s forward and their pullbacks in reverse."""
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        fail("Serial", f"expects one or more Layer arguments, got {layers!r}")
    n = len(layers)

    def init(key, in_shape):
        params, state, shape = [], [], tuple(in_shape)
        for layer, k in zip(layers, jax.random.split(key, n)):
            shape, p, s = layer.init(k, shape)
            params.append(p)
            state.append(s)
        return shape, tuple(params), tuple(state)

    def apply(params, state, x, *, key=None, train=False):
        new_state = []
        for layer, p, s, k in zip(layers, params, state, _split(key, n)):
            x, s = layer.apply(p, s, x, key=k, train=train)
            new_state.append(s)
        return x, tuple(new_state)

    def vjp(params, state, x, *, key=None, train=False):
        pullbacks, new_state = [], []
        for layer, p, s, k in zip(layers, params, state, _split(key, n)):
            x, s, pullback = layer.vjp(p, s, x, key=k, train=train)
            pullbacks.append(pullback)
            new_state.append(s)

        def pullback(dy):
            dparams = [None] * n
            for i in reversed(range(n)):
                dparams[i], dy = pullbacks[i](dy)
            return tuple(dparams), dy

        return x, tuple(new_state), pullback

    return Layer(init, apply, vjp, "Serial")


def parallel(*layers: Layer, merge: str = "concat") -> Layer:
    """Fan-out: every child sees the same `x`; outputs are concatenated on the last axis
    (`merge="concat"`) or added (`merge="sum"`, shapes must agree). dx is the sum of the children's dx."""
    if merge not in ("concat", "sum"):
        fail("Parallel", f"merge must be 'concat' or 'sum', got merge={merge!r}")
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        fail("Parallel", f"expects one or more Layer arguments, got {layers!r}")
    n = len(layers)

    def init(key, in_shape):
        outs = [layer.init(k, tuple(in_shape)) for layer, k in zip(layers, jax.random.split(key, n))]
        shapes = [o[0] for o in outs]
        if merge == "sum":
            if any(s != shapes[0] for s in shapes):
                fail("Parallel", f"merge='sum' needs equal output shapes, got {shapes}")
            out_shape = shapes[0]
        else:
            if any(s[:-1] != shapes[0][:-1] for s in shapes):
                fail("Parallel", f"merge='concat' needs equal shapes but the last axis, got {shapes}")
            out_shape = (*shapes[0][:-1], sum(s[-1] for s in shapes))
        return out_shape, tuple(o[1] for o in outs), tuple(o[2] for o in outs)

    def join(ys):
        return jnp.concatenate(ys, axis=-1) if merge == "concat" else sum(ys[1:], ys[0])

    def apply(params, state, x, *, key=None, train=False):
        outs = [
            layer.apply(p, s, x, key=k, train=train)
            for layer, p, s, k in zip(layers, params, state, _split(key, n))
        ]
        return join([o[0] for o in outs]), tuple(o[1] for o in outs)

    # concat: each child's dy is its slice of dy along the last axis; sum: each child gets dy whole.
    def vjp(params, state, x, *, key=None, train=False):
        outs = [
            layer.vjp(p, s, x, key=k, train=train)
            for layer, p, s, k in zip(layers, params, state, _split(key, n))
        ]
        widths = [o[0].shape[-1] for o in outs]

        def pullback(dy):
            if merge == "concat":
                splits = [sum(widths[:i]) for i in range(1, n)]
                dys = jnp.split(dy, splits, axis=-1)
            else:
                dys = [dy] * n
            grads = [o[2](d) for o, d in zip(outs, dys)]
            dx = sum((g[1] for g in grads[1:]), grads[0][1])
            return tuple(g[0] for g in grads), dx

        return join([o[0] for o in outs]), tuple(o[1] for o in outs), pullback

    return Layer(init, apply, vjp, "Parallel")


def residual(layer: Layer) -> Layer:
    """y = x + layer(x); the inner layer must keep the shape. dx = dy + dx_inner."""

    def init(key, in_shape):
        out_shape, params, state = layer.init(key, tuple(in_shape))
        if tuple(out_shape) != tuple(in_shape):
            fail("Residual", f"inner layer {layer.name} maps {tuple(in_shape)} to {tuple(out_shape)}")
        return out_shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        y, state = layer.apply(params, state, x, key=key, train=train)
        return x + y, state

    def vjp(params, state, x, *, key=None, train=False):
        y, state, inner = layer.vjp(params, state, x, key=key, train=train)

        def pullback(dy):
            dparams, dx = inner(dy)
            return dparams, dx + dy

        return x + y, state, pullback

    return Layer(init, apply, vjp, "Residual")


# ----------------------------------------------------------------------------------- conveniences


def init_model(model: Layer, key: jax.Array, in_shape: Shape, *, dtype=jnp.float32):
    """`model.init` with params cast to `dtype` (state keeps its own dtypes). -> (out_shape, params, state)."""
    out_shape, params, state = model.init(key, tuple(in_shape))
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    return out_shape, params, state


class Loss(NamedTuple):
    """A loss with its handwritten VJP with respect to the prediction.

    apply(pred, target) -> value;  vjp(pred, target) -> (value, pullback);  pullback(dvalue) -> dpred.
    `value` is a scalar for reduction 'mean' or 'sum'."""

    apply: Callable[..., jax.Array]
    vjp: Callable[..., tuple[jax.Array, Callable]]
    name: str
