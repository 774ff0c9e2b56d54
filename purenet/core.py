"""The layer contract (v2), the decode contract, and the combinators that compose layers.

A layer is a named triple of pure functions (one uniform form for every layer, stateful or not):

    init(key, in_shape)                          -> (out_shape, params, state)
    apply(params, state, x, *, key, train)       -> (y, new_state)
    vjp(params, state, x, *, key, train)         -> (y, new_state, pullback)
    pullback(dy)                                 -> (dparams, dx)

- Shapes include the batch dimension first, which may be -1 (unknown). `params` and `state` are pytrees
  of named fields (`{"w": ..., "b": ...}`, `{}` when empty); `dparams` always has the tree of `params`.
  State (BatchNorm's running statistics) is not differentiated. `key` is a PRNG key or None (only
  Dropout in training needs one); combinators split it per child, deterministically.
- Structured inputs: `x` may be a pytree (tuple, dict, NamedTuple) of arrays and `in_shape` the same
  pytree of shapes (a shape is a tuple of ints). `dx` mirrors `x`: an array at every floating-point leaf
  (zeros where the output does not depend on it) and None at every integer or boolean leaf (token ids,
  masks), which have no cotangent. Combinators add cotangents with `tree_add`, which skips None.
- Named children: `serial(embed=..., blocks=..., head=...)` keys params and state by name
  (`params["blocks"][3]["w"]`); positional children give tuples (`params[0]["w"]`).
- Decode: a layer may carry `Decode(init_cache, step)` for step-at-a-time inference (see `Decode`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purenet import debug
from purenet._checks import as_float, describe, fail, is_int

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


class Layer(NamedTuple):
    """A layer: `init`, `apply` and a handwritten `vjp`, a name used in error messages, and `decode`
    (a `Decode`, or None for a layer that cannot run step by step)."""

    init: Callable[..., tuple[Shape, PyTree, PyTree]]
    apply: Callable[..., tuple[Any, PyTree]]
    vjp: Callable[..., tuple[Any, PyTree, Callable]]
    name: str
    decode: Decode | None = None


class Loss(NamedTuple):
    """A loss with its handwritten VJP with respect to the prediction.

    apply(pred, target) -> value;  vjp(pred, target) -> (value, pullback);  pullback(dvalue) -> dpred.
    `value` is a scalar for reduction 'mean' or 'sum'."""

    apply: Callable[..., jax.Array]
    vjp: Callable[..., tuple[jax.Array, Callable]]
    name: str


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


def varying_axes(x: Any) -> frozenset:
    """The mesh axes over which `x` may differ between shards, when traced inside `jax.shard_map`;
    empty elsewhere."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    axes = getattr(manual, "varying", None) if manual is not None else getattr(aval, "vma", None)
    return frozenset(axes or ())


def vary_like(tree: PyTree, *refs: PyTree) -> PyTree:
    """`tree` cast to vary over every mesh axis some leaf of `refs` varies over (`lax.pcast`): a
    `lax.scan` whose carry starts from constants (zeros) and takes in per-shard data must type its
    carry as varying from the start under `jax.shard_map`. Outside shard_map: `tree` unchanged."""
    axes = frozenset().union(*(varying_axes(r) for r in jax.tree_util.tree_leaves(refs)))

    def cast(a):
        missing = tuple(sorted(axes - varying_axes(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree_util.tree_map(cast, tree) if axes else tree


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


# ------------------------------------------------------------------------------------ combinators


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


# A combinator calls its children through these: they check that a child returns what the contract says
# (a custom layer's `apply` returning y instead of (y, state) would otherwise be unpacked along the
# batch), and in debug mode (`purenet.debug`) that its output and gradients are finite.


def checked_init(owner: str, who: str, layer: Layer, key, in_shape) -> tuple:
    """`layer.init(key, in_shape)`, failing as `owner` naming child `who` if it does not return a triple."""
    out = layer.init(key, in_shape)
    if not (isinstance(out, tuple) and len(out) == 3):
        fail(owner, f"{who}.init must return (out_shape, params, state), got {describe(out)}")
    return out


def checked_apply(owner: str, who: str, layer: Layer, params, state, x, *, key, train) -> tuple:
    """`layer.apply(...)`, failing as `owner` naming child `who` unless it returns `(y, new_state)`."""
    with debug.inside(who):
        out = layer.apply(params, state, x, key=key, train=train)
    if not (isinstance(out, tuple) and len(out) == 2):
        fail(owner, f"{who}.apply must return (y, new_state), got {describe(out)}")
    debug.watch(who, "output", out[0])
    return out


def checked_vjp(owner: str, who: str, layer: Layer, params, state, x, *, key, train) -> tuple:
    """`layer.vjp(...)`, failing as `owner` naming child `who` unless it returns `(y, new_state, pullback)`."""
    with debug.inside(who):
        out = layer.vjp(params, state, x, key=key, train=train)
    if not (isinstance(out, tuple) and len(out) == 3 and callable(out[2])):
        fail(owner, f"{who}.vjp must return (y, new_state, pullback), got {describe(out)}")
    y, new_state, inner = out
    debug.watch(who, "output", y)

    def pullback(dy):
        with debug.inside(who):
            grads = inner(dy)
        if not (isinstance(grads, tuple) and len(grads) == 2):
            fail(owner, f"{who}'s pullback must return (dparams, dx), got {describe(grads)}")
        debug.watch(who, "dparams", grads[0])
        debug.watch(who, "dx", grads[1])
        return grads

    return y, new_state, pullback


class _Children(NamedTuple):
    """A combinator's children: positional (params and state are tuples) or named (dicts)."""

    keys: tuple  # 0..n-1, or the names in the order given
    layers: tuple[Layer, ...]
    named: bool

    def pack(self, values: Sequence) -> tuple | dict:
        return dict(zip(self.keys, values)) if self.named else tuple(values)

    def unpack(self, tree) -> list:
        return [tree[k] for k in self.keys]

    def describe(self, i: int) -> str:
        return f"child {self.keys[i]!r} ({self.layers[i].name})"

    def check(self, owner: str, tree, what: str) -> None:
        """Fail unless `tree` (params or state) has one entry per child, as this combinator's init made it."""
        if self.named:
            ok = isinstance(tree, dict) and set(tree) == set(self.keys)
            expected = f"a dict with keys {list(self.keys)}, one per child"
        else:
            ok = isinstance(tree, (tuple, list)) and len(tree) == len(self.keys)
            expected = f"a tuple of {len(self.keys)} entries, one per child"
        if not ok:
            got = f"a dict with keys {sorted(map(str, tree))}" if isinstance(tree, dict) else describe(tree)
            fail(owner, f"{what} must be {expected} (what this model's init returned), got {got}")


def _children(owner: str, layers: tuple, named: dict) -> _Children:
    if layers and named:
        fail(owner, f"children are either all positional or all named, got {len(layers)} positional and "
                    f"named {sorted(named)}")
    items = dict(enumerate(layers)) if layers else named
    if not items:
        fail(owner, f"expects one or more Layer arguments, got {layers!r}")
    for k, layer in items.items():
        if not isinstance(layer, Layer):
            fail(owner, f"expects one or more Layer arguments, got {k!r}: {layer!r}")
    return _Children(tuple(items), tuple(items.values()), bool(named))


def _missing_decode(owner: str, children: _Children) -> Decode | None:
    """None if every child can decode; else a refusing Decode naming the first that cannot."""
    for i, layer in enumerate(children.layers):
        if not can_decode(layer):
            why = "has no decode step" if layer.decode is None else f"cannot decode ({layer.decode.reason})"
            return no_decode(owner, f"{children.describe(i)} {why}")
    return None


def identity() -> Layer:
    """y = x. Shapes: any -> same (structured inputs too)."""

    def init(key, in_shape):
        del key
        return in_shape, {}

    def apply(params, x):
        del params
        return x

    def vjp(params, x):
        del params
        return x, lambda dy: ({}, dy)

    return stateless("Identity", init, apply, vjp, decode=positionwise(apply))


def select(*path: int | str) -> Layer:
    """`y = x[path[0]][path[1]]...`: one part of a structured input, by tuple index, dict key or
    NamedTuple field name. Shapes: the same part of in_shape. dx has x's structure: dy at the part,
    zeros at the other floating-point leaves, None at integer and boolean leaves."""
    if not path or not all(isinstance(p, str) or is_int(p) for p in path):
        fail("Select", f"expects a path of ints and strings, got {path!r}")

    def get(tree, p):
        if isinstance(tree, dict) or (isinstance(p, int) and isinstance(tree, (tuple, list))):
            try:
                return tree[p]
            except (KeyError, IndexError):
                pass
        elif isinstance(p, str) and hasattr(tree, "_fields") and p in tree._fields:
            return getattr(tree, p)
        fail("Select", f"path {path!r}: no part {p!r} in {type(tree).__name__} {tree!r:.80}")

    def get_path(tree):
        for p in path:
            tree = get(tree, p)
        return tree

    def put(tree, keys, value):  # a copy of tree with the part at keys replaced by value
        if not keys:
            return value
        p, rest = keys[0], keys[1:]
        if isinstance(tree, dict):
            return {**tree, p: put(tree[p], rest, value)}
        if hasattr(tree, "_fields"):
            field = p if isinstance(p, str) else tree._fields[p]
            return tree._replace(**{field: put(getattr(tree, field), rest, value)})
        return type(tree)(put(v, rest, value) if i == p else v for i, v in enumerate(tree))

    def init(key, in_shape):
        del key
        return get_path(in_shape), {}

    def apply(params, x):
        del params
        return get_path(x)

    def vjp(params, x):
        del params
        return get_path(x), lambda dy: ({}, put(zero_cotangent(x), path, dy))

    return stateless("Select", init, apply, vjp, decode=positionwise(apply))


def serial(*layers: Layer, **named_layers: Layer) -> Layer:
    """Compose layers in order: positional children give tuple params and state, named children
    (`serial(embed=..., body=..., head=...)`) dicts keyed by name.

    The VJP runs the children's `vjp`s forward and their pullbacks in reverse; decode steps chain."""
    children = _children("Serial", layers, named_layers)
    n = len(children.layers)

    def init(key, in_shape):
        params, state, shape = [], [], as_shape_tree(in_shape)
        for i, (layer, k) in enumerate(zip(children.layers, jax.random.split(key, n))):
            shape, p, s = checked_init("Serial", children.describe(i), layer, k, shape)
            params.append(p)
            state.append(s)
        return shape, children.pack(params), children.pack(state)

    def each(params, state, key):
        children.check("Serial", params, "params")
        children.check("Serial", state, "state")
        return enumerate(zip(children.layers, children.unpack(params), children.unpack(state), _split(key, n)))

    def apply(params, state, x, *, key=None, train=False):
        new_state = []
        for i, (layer, p, s, k) in each(params, state, key):
            x, s = checked_apply("Serial", children.describe(i), layer, p, s, x, key=k, train=train)
            new_state.append(s)
        return x, children.pack(new_state)

    def vjp(params, state, x, *, key=None, train=False):
        pullbacks, new_state = [], []
        for i, (layer, p, s, k) in each(params, state, key):
            x, s, pullback = checked_vjp("Serial", children.describe(i), layer, p, s, x, key=k, train=train)
            pullbacks.append(pullback)
            new_state.append(s)

        def pullback(dy):
            dparams = [None] * n
            for i in reversed(range(n)):
                dparams[i], dy = pullbacks[i](dy)
            return children.pack(dparams), dy

        return x, children.pack(new_state), pullback

    def init_cache(params, batch, max_len):
        return children.pack([layer.decode.init_cache(p, batch, max_len)
                              for layer, p in zip(children.layers, children.unpack(params))])

    def step(params, cache, x_t, *, pos):
        new_cache = []
        for layer, p, c in zip(children.layers, children.unpack(params), children.unpack(cache)):
            x_t, c = layer.decode.step(p, c, x_t, pos=pos)
            new_cache.append(c)
        return x_t, children.pack(new_cache)

    decode = _missing_decode("Serial", children) or Decode(init_cache, step)
    return Layer(init, apply, vjp, "Serial", decode)


_MERGES = ("concat", "sum", None)


def parallel(*layers: Layer, merge: str | None = "concat", **named_layers: Layer) -> Layer:
    """Fan-out: every child sees the same `x`. Outputs are concatenated on the last axis
    (`merge="concat"`), added (`merge="sum"`, shapes must agree), or kept as a structure (`merge=None`:
    a tuple, or a dict for named children). dx is the sum of the children's dx (`tree_add`)."""
    if merge not in _MERGES:
        fail("Parallel", f"merge must be 'concat', 'sum' or None, got merge={merge!r}")
    children = _children("Parallel", layers, named_layers)
    n = len(children.layers)

    def init(key, in_shape):
        in_shape = as_shape_tree(in_shape)
        outs = [checked_init("Parallel", children.describe(i), layer, k, in_shape)
                for i, (layer, k) in enumerate(zip(children.layers, jax.random.split(key, n)))]
        shapes = [o[0] for o in outs]
        if merge == "sum":
            if any(s != shapes[0] for s in shapes):
                fail("Parallel", f"merge='sum' needs equal output shapes, got {shapes}")
            out_shape = shapes[0]
        elif merge == "concat":
            if not all(map(is_shape, shapes)) or any(s[:-1] != shapes[0][:-1] for s in shapes):
                fail("Parallel", f"merge='concat' needs equal shapes but the last axis, got {shapes}")
            out_shape = (*shapes[0][:-1], sum(s[-1] for s in shapes))
        else:
            out_shape = children.pack(shapes)
        return out_shape, children.pack([o[1] for o in outs]), children.pack([o[2] for o in outs])

    def join(ys):
        if merge in ("concat", "sum"):
            shapes = [jnp.shape(y) for y in ys]
            keep = (lambda s: s[:-1]) if merge == "concat" else (lambda s: s)
            if any(not isinstance(y, jax.Array | np.ndarray) for y in ys) or any(
                    len(s) == 0 or keep(s) != keep(shapes[0]) for s in shapes):
                needs = "equal shapes but the last axis" if merge == "concat" else "equal output shapes"
                fail("Parallel", f"merge={merge!r} needs {needs}, got outputs {[describe(y) for y in ys]}")
        if merge == "concat":
            return jnp.concatenate(ys, axis=-1)
        return sum(ys[1:], ys[0]) if merge == "sum" else children.pack(ys)

    def split(dy, widths):
        if merge == "concat":
            return jnp.split(dy, [sum(widths[:i]) for i in range(1, n)], axis=-1)
        return [dy] * n if merge == "sum" else children.unpack(dy)

    def each(params, state, key):
        children.check("Parallel", params, "params")
        children.check("Parallel", state, "state")
        return enumerate(zip(children.layers, children.unpack(params), children.unpack(state), _split(key, n)))

    def apply(params, state, x, *, key=None, train=False):
        outs = [checked_apply("Parallel", children.describe(i), layer, p, s, x, key=k, train=train)
                for i, (layer, p, s, k) in each(params, state, key)]
        return join([o[0] for o in outs]), children.pack([o[1] for o in outs])

    # concat: each child's dy is its slice of dy along the last axis; sum: each child gets dy whole;
    # None: each child gets its part of dy. dx = sum of the children's dx.
    def vjp(params, state, x, *, key=None, train=False):
        outs = [checked_vjp("Parallel", children.describe(i), layer, p, s, x, key=k, train=train)
                for i, (layer, p, s, k) in each(params, state, key)]
        ys = [o[0] for o in outs]
        joined = join(ys)
        widths = [y.shape[-1] for y in ys] if merge == "concat" else None

        def pullback(dy):
            grads = [o[2](d) for o, d in zip(outs, split(dy, widths))]
            dx = grads[0][1]
            for g in grads[1:]:
                dx = tree_add(dx, g[1])
            return children.pack([g[0] for g in grads]), dx

        return joined, children.pack([o[1] for o in outs]), pullback

    def init_cache(params, batch, max_len):
        return children.pack([layer.decode.init_cache(p, batch, max_len)
                              for layer, p in zip(children.layers, children.unpack(params))])

    def step(params, cache, x_t, *, pos):
        outs = [layer.decode.step(p, c, x_t, pos=pos)
                for layer, p, c in zip(children.layers, children.unpack(params), children.unpack(cache))]
        return join([o[0] for o in outs]), children.pack([o[1] for o in outs])

    decode = _missing_decode("Parallel", children) or Decode(init_cache, step)
    return Layer(init, apply, vjp, "Parallel", decode)


def residual(layer: Layer) -> Layer:
    """y = x + layer(x); the inner layer must keep the shape. dx = dy + dx_inner."""
    if not isinstance(layer, Layer):
        fail("Residual", f"expects a Layer, got {layer!r}")

    who = f"inner layer ({layer.name})"

    def init(key, in_shape):
        in_shape = as_shape_tree(in_shape)
        out_shape, params, state = checked_init("Residual", who, layer, key, in_shape)
        if out_shape != in_shape:
            fail("Residual", f"inner layer {layer.name} maps {in_shape} to {out_shape}")
        return out_shape, params, state

    def added(x, y):
        if jnp.shape(x) != jnp.shape(y) or not isinstance(y, jax.Array | np.ndarray):
            fail("Residual", f"y = x + layer(x) needs the inner layer {layer.name} to keep x's shape "
                             f"{jnp.shape(x)}, got {describe(y)}")
        return x + y

    def apply(params, state, x, *, key=None, train=False):
        y, state = checked_apply("Residual", who, layer, params, state, x, key=key, train=train)
        return added(x, y), state

    def vjp(params, state, x, *, key=None, train=False):
        y, state, inner = checked_vjp("Residual", who, layer, params, state, x, key=key, train=train)

        def pullback(dy):
            dparams, dx = inner(dy)
            return dparams, dx + dy

        return added(x, y), state, pullback

    def step(params, cache, x_t, *, pos):
        y_t, cache = layer.decode.step(params, cache, x_t, pos=pos)
        return x_t + y_t, cache

    if not can_decode(layer):
        decode = no_decode("Residual", f"inner layer {layer.name} has no decode step")
    else:
        decode = Decode(layer.decode.init_cache, step)
    return Layer(init, apply, vjp, "Residual", decode)


# ----------------------------------------------------------------------------------- conveniences


def init_model(model: Layer, key: jax.Array, in_shape: Any, *, dtype=jnp.float32):
    """`model.init` with params, and the floating-point leaves of state (BatchNorm's running statistics),
    cast to `dtype`; integer state (counters) keeps its dtype. -> (out_shape, params, state)."""
    if not isinstance(model, Layer):
        fail("init_model", f"model must be a Layer, got {describe(model)}")
    out_shape, params, state = checked_init("init_model", model.name, model, key, as_shape_tree(in_shape))
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    state = jax.tree_util.tree_map(lambda a: a.astype(dtype) if is_differentiable(a) else a, state)
    return out_shape, params, state
