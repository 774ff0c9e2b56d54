"""The layer contract (v2), the decode contract, the pytree rules of cotangents, and the lifting of
simple functions to layers. The combinators that compose layers are in `purenet.combinators`.

A layer is a named triple of pure functions (one uniform form for every layer, stateful or not):

    init(key, in_shape)                          -> (out_shape, params, state)
    apply(params, state, x, *, key, train)       -> (y, new_state)
    vjp(params, state, x, *, key, train)         -> (y, new_state, pullback)
    pullback(dy)                                 -> (dparams, dx)

- Shapes include the batch dimension first, which may be -1 (unknown). `params` and `state` are pytrees
  of named fields (`{"w": ..., "b": ...}`, `{}` when empty); `dparams` always has the tree of `params`.
  State (BatchNorm's running statistics) is not differentiated. `key` is a PRNG key or None (only
  Dropout in training needs one); combinators derive one per child, deterministically.
- Structured inputs: `x` may be a pytree (tuple, dict, NamedTuple) of arrays and `in_shape` the same
  pytree of shapes (a shape is a tuple of ints). `dx` mirrors `x`: an array at every floating-point leaf
  (zeros where the output does not depend on it) and None at every integer or boolean leaf (token ids,
  masks), which have no cotangent. Combinators add cotangents with `tree_add`, which skips None.
- Named children: `serial(embed=..., blocks=..., head=...)` keys params and state by name
  (`params["blocks"][3]["w"]`); positional children give tuples (`params[0]["w"]`).
- Decode: a layer may carry `Decode(init_cache, step)` for step-at-a-time inference (see `Decode`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple, NoReturn

import jax
import jax.numpy as jnp

from purenet._checks import as_float, check_x64, describe, fail, is_int, raised_by_fail

Shape = tuple[int, ...]
PyTree = Any


class Decode(NamedTuple):
    """Step-at-a-time inference, beside a layer's `apply` (eval mode):

        init_cache(params, batch, max_len)       -> cache
        step(params, cache, x_t, *, pos)         -> (y_t, new_cache)

    `x_t` is one position of the sequence with its time axis dropped ((N, T, F) -> (N, F), ids (N, T) ->
    (N,)), `pos` its index (an int or a traced int32 scalar), `cache` a pytree of fixed-size arrays (an
    RNN's carried state, a key/value buffer). Stepping pos = 0, 1, ... equals `apply` on the whole
    sequence, position by position. Both functions are pure and jittable. A layer that cannot decode
    has `decode=None`, or (combinators, layers with an option that rules it out) a `no_decode` whose
    functions fail and whose `reason` says why."""

    init_cache: Callable[..., PyTree]
    step: Callable[..., tuple[Any, PyTree]]
    reason: str | None = None  # None: supported


class _LayerFields(NamedTuple):
    init: Callable[..., tuple[Shape, PyTree, PyTree]]
    apply: Callable[..., tuple[Any, PyTree]]
    vjp: Callable[..., tuple[Any, PyTree, Callable]]
    name: str
    decode: Decode | None = None


class Layer(_LayerFields):
    """A layer: `init`, `apply` and a handwritten `vjp`, a name used in error messages, and `decode`
    (a `Decode`, or None for a layer that cannot run step by step).

    The three functions are stored guarded: a call with the habits of other libraries fails naming the
    layer and what to write instead (`init(key, x)` with data, a `None` batch size, `apply(params, x)`
    without the state, the key passed positionally); so does calling the layer itself (`layer(x)`)."""

    __slots__ = ()

    def __new__(cls, init: Callable, apply: Callable, vjp: Callable, name: str, decode: Decode | None = None):
        return super().__new__(cls, _guard_init(name, init), _guard_call(name, "apply", apply),
                               _guard_call(name, "vjp", vjp), name, decode)

    def _replace(self, **fields) -> Layer:
        """A copy with `fields` replaced, its functions guarded under its (new) name."""
        return Layer(**{**self._asdict(), **fields})

    def __call__(self, *args, **kwargs) -> NoReturn:
        del args, kwargs
        fail(self.name, "a Layer is not called like a function (PyTorch's model(x), Flax's model.apply(variables, "
                        "x)): it is three pure functions. Write out_shape, params, state = layer.init(key, "
                        "in_shape) once, then y, state = layer.apply(params, state, x) (or layer.vjp(...) for "
                        "the gradient)", TypeError)


class Loss(NamedTuple):
    """A loss with its handwritten VJP with respect to the prediction.

    apply(pred, target) -> value;  vjp(pred, target) -> (value, pullback);  pullback(dvalue) -> dpred.
    `value` is a scalar for reduction 'mean' or 'sum'."""

    apply: Callable[..., jax.Array]
    vjp: Callable[..., tuple[jax.Array, Callable]]
    name: str

    def __call__(self, *args, **kwargs) -> NoReturn:
        del args, kwargs
        fail(self.name, "a Loss is not called like a function (PyTorch's loss_fn(pred, target)): write value = "
                        "loss.apply(pred, target), or value, pullback = loss.vjp(pred, target) for its gradient",
             TypeError)


# ------------------------------------------------------------------------- guarded layer functions
# What users of other libraries write by habit, caught where the layer's functions are called, so the
# message names the layer (the functions themselves are unchanged: `functools.wraps` keeps their
# signatures, and a guarded function given to `Layer` again is unwrapped first).


def _inner(fn: Callable) -> Callable:
    return getattr(fn, "_purenet_unguarded", fn)


def _shape_problem(in_shape: Any) -> str | None:
    """What is wrong with an in_shape that no layer reads: data in place of a shape, or a None size."""
    if hasattr(in_shape, "shape") and hasattr(in_shape, "dtype"):
        return (f"init(key, in_shape) takes the input's shape, not data: got {describe(in_shape)}; call "
                f"init(key, x.shape) (Flax's init(key, x) reads an example input, purenet's only its shape)")
    if isinstance(in_shape, dict):
        parts = in_shape.values()
    elif isinstance(in_shape, (tuple, list)):
        if not hasattr(in_shape, "_fields") and any(d is None for d in in_shape) and all(
                d is None or is_int(d) for d in in_shape):
            return (f"in_shape {tuple(in_shape)} holds None: write -1 for an unknown batch size (Keras and "
                    f"TensorFlow write None), e.g. init(key, {tuple(-1 if d is None else d for d in in_shape)})")
        parts = in_shape
    else:
        return None
    return next((p for p in map(_shape_problem, parts) if p), None)


def _unknown_sizes(in_shape: Any) -> list:
    """The shapes in `in_shape` with -1 past the batch axis (only the batch size may be unknown)."""
    if isinstance(in_shape, dict):
        return [s for v in in_shape.values() for s in _unknown_sizes(v)]
    if is_shape(in_shape):
        return [tuple(in_shape)] if any(d < 0 for d in in_shape[1:]) else []
    if isinstance(in_shape, (tuple, list)):
        return [s for v in in_shape for s in _unknown_sizes(v)]
    return []


def _guard_init(name: str, init: Callable) -> Callable:
    init = _inner(init)

    @functools.wraps(init)
    def guarded(*args, **kwargs):
        in_shape = args[1] if len(args) > 1 else kwargs.get("in_shape")
        if len(args) + len(kwargs) == 1:
            fail(name, "init takes (key, in_shape), got one argument: out_shape, params, state = "
                       "layer.init(jax.random.PRNGKey(0), (-1, ...))", TypeError)
        problem = _shape_problem(in_shape)
        if problem:
            fail(name, problem)
        try:
            return init(*args, **kwargs)
        except Exception as error:
            unknown = _unknown_sizes(in_shape)
            if raised_by_fail(error) or not unknown:
                raise
            fail(name, f"in_shape {unknown[0]} has an unknown size (-1) past the batch axis: only the batch "
                       f"size (axis 0) may be -1; give every other size ({type(error).__name__} from inside "
                       f"init: {str(error)[:160]})")

    guarded._purenet_unguarded = init
    return guarded


def _guard_call(name: str, what: str, fn: Callable) -> Callable:
    fn = _inner(fn)

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        given = len(args) + sum(k in kwargs for k in ("params", "state", "x"))
        if given < 3:
            fail(name, f"{what}(params, state, x, *, key=None, train=False) got {given} of its 3 arguments: "
                       f"pass the state init returned ({{}} for a stateless layer) between params and x, "
                       f"`y, state = layer.{what}(params, state, x)` (Flax's apply(variables, x) and Equinox's "
                       f"model(x) keep the state elsewhere)", TypeError)
        if given > 3:
            extra = ", ".join(describe(a) for a in args[3:])
            fail(name, f"{what} takes key and train as keywords: {what}(params, state, x, key=key, train=True), "
                       f"got {given - 3} more positional argument(s): {extra}", TypeError)
        return fn(*args, **kwargs)

    guarded._purenet_unguarded = fn
    return guarded


# ---------------------------------------------------------------------------------- pytree rules


def is_shape(tree: Any) -> bool:
    """A shape leaf of an `in_shape` pytree: a tuple or list of ints."""
    return isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields") and all(map(is_int, tree))


def as_shape_tree(in_shape: Any) -> Any:
    """`in_shape` with every shape leaf made a tuple (lists become tuples); containers kept."""
    return jax.tree_util.tree_map(tuple, in_shape, is_leaf=is_shape)


def is_differentiable(leaf: Any) -> bool:
    """Floating-point (or complex) leaves have cotangents; integer and boolean ones do not."""
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Sum two cotangents of the same input, leaf by leaf; None (no cotangent: an integer or boolean
    leaf) is skipped: None + None = None.

    Examples:
        >>> tree_add({"x": 1.0, "ids": None}, {"x": 2.0, "ids": None})
        {'ids': None, 'x': 3.0}
    """

    def add(u, v):
        return v if u is None else u if v is None else u + v

    return jax.tree_util.tree_map(add, a, b, is_leaf=lambda v: v is None)


def zero_cotangent(x: PyTree) -> PyTree:
    """The cotangent of an input the output does not depend on: zeros at float leaves, None elsewhere."""
    return jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) if is_differentiable(a) else None, x)


def leaf_path(path: tuple) -> str:
    """A leaf's key path as the names a user reads: `params["blocks"][3]["w_q"]` -> `"blocks/3/w_q"`."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):  # DictKey, SequenceKey / FlattenedIndexKey, GetAttrKey
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


# ------------------------------------------------------------------------------ stateless lifting


def positionwise(apply: Callable[[PyTree, Any], Any]) -> Decode:
    """The decode step of a layer that treats every position alike (Dense, activations, LayerNorm,
    Embedding): no cache, `step` is `apply(params, x_t)`."""

    def init_cache(params, batch, max_len):
        del params, batch, max_len
        return {}

    def step(params, cache, x_t, *, pos):
        del pos
        return apply(params, x_t), cache

    return Decode(init_cache, step)


def stateless(
    name: str,
    init: Callable[[jax.Array, Shape], tuple[Shape, PyTree]],
    apply: Callable[[PyTree, Any], Any],
    vjp: Callable[[PyTree, Any], tuple[Any, Callable]],
    *,
    decode: Decode | None = None,
) -> Layer:
    """Lift a layer without state or randomness (`init -> (out_shape, params)`, `apply(params, x)`,
    `vjp(params, x) -> (y, pullback)`) to the uniform contract, with `state = {}`."""

    def init_fn(key, in_shape):
        out_shape, params = init(key, as_shape_tree(in_shape))
        return out_shape, params, {}

    def apply_fn(params, state, x, *, key=None, train=False):
        del key, train
        return apply(params, x), state

    def vjp_fn(params, state, x, *, key=None, train=False):
        del key, train
        y, pullback = vjp(params, x)
        return y, state, pullback

    return Layer(init_fn, apply_fn, vjp_fn, name, decode)


def elementwise(name: str, forward: Callable, derivative: Callable) -> Layer:
    """A parameter-free layer `y = f(x)` whose pullback is `dx = dy * derivative(x, y)`. Integer and
    boolean inputs are promoted to float32 first (`as_float`)."""

    def init(key, in_shape):
        del key
        return in_shape, {}

    def apply(params, x):
        del params
        return forward(as_float(x))

    def vjp(params, x):
        del params
        x = as_float(x)
        y = forward(x)

        def pullback(dy):
            return {}, dy * derivative(x, y)

        return y, pullback

    return stateless(name, init, apply, vjp, decode=positionwise(apply))


def no_decode(owner: str, reason: str) -> Decode:
    """A `Decode` that fails, naming the layer and why it cannot run step by step."""

    def refuse(*args, **kwargs):
        del args, kwargs
        fail(owner, f"cannot decode step by step: {reason}")

    return Decode(refuse, refuse, f"{owner}: {reason}")


def can_decode(layer: Layer) -> bool:
    """Whether `layer` runs step by step (its `decode` exists and is not a `no_decode`)."""
    return layer.decode is not None and layer.decode.reason is None


# ----------------------------------------------------------------------------------- conveniences


def init_model(model: Layer, key: jax.Array, in_shape: Any, *, dtype=jnp.float32):
    """`model.init` with params, and the floating-point leaves of state (BatchNorm's running statistics),
    cast to `dtype`; integer state (counters) keeps its dtype. float64 needs JAX's 64-bit mode (else it
    fails, rather than giving float32 silently). -> (out_shape, params, state)."""
    if not isinstance(model, Layer):
        fail("init_model", f"model must be a Layer, got {describe(model)}")
    check_x64("init_model", dtype)
    out = model.init(key, as_shape_tree(in_shape))
    if not (isinstance(out, tuple) and len(out) == 3):
        fail("init_model", f"{model.name}.init must return (out_shape, params, state), got {describe(out)}")
    out_shape, params, state = out
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    state = jax.tree_util.tree_map(lambda a: a.astype(dtype) if is_differentiable(a) else a, state)
    return out_shape, params, state


# Names that lived here before purenet 0.3 split this module: `from purenet.core import serial` keeps
# working, with a DeprecationWarning naming the new home.
_MOVED = {**dict.fromkeys(("checked_init", "checked_apply", "checked_vjp", "identity", "select", "serial", "parallel",
                           "residual"), "purenet.combinators"),
          **dict.fromkeys(("varying_axes", "vary_like"), "purenet._sharding")}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'purenet.core' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 (only on the deprecated path)

    warnings.warn(f"purenet.core.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
