"""Combinators: the layers that compose layers (`identity`, `select`, `at`, `serial`, `parallel`,
`residual`), and `Tape`, which runs a model's named children where the graph is not a chain (`taped`
makes such a model a Layer).

Every child runs through `checked_init` / `checked_apply` / `checked_vjp`: they check that it returns
what the contract says, and in debug mode (`purenet.debug`) that its output and gradients are finite,
naming the path of children down to the first one that is not. Keys: `serial` and `parallel` split
theirs into one per child (in the order given); a `Tape` folds its key with each child's name.

Paths into a structured input (`select`, `at`, `residual(at=...)`) are tuple indices, dict keys or
NamedTuple field names: `0`, `"image"`, or a tuple of them, `(1, "b")`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import zlib
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purenet import debug
from purenet._checks import check_choice, describe, fail, is_int
from purenet.core import (Decode, Layer, PyTree, as_shape_tree, can_decode, is_shape, no_decode, positionwise,
                          stateless, tree_add, zero_cotangent)


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


# ---------------------------------------------------------------------------------- checked calls


class _InitLog:
    """What `recorded_inits` gathers: per child init, in the order they start (parents first), the child
    (`who`), its layer, its depth below the outermost recorded call and what its init returned."""

    def __init__(self):
        self.entries: list[dict] = []
        self.depth = 0


_INIT_LOG: contextvars.ContextVar[_InitLog | None] = contextvars.ContextVar("purenet_init_log", default=None)


@contextlib.contextmanager
def recorded_inits() -> Iterator[_InitLog]:
    """Within the block, every `checked_init` (every child a combinator or a Tape model inits) is
    recorded, with what it returned: the model summary (`purenet.summary`) reads shapes from it."""
    log = _InitLog()
    token = _INIT_LOG.set(log)
    try:
        yield log
    finally:
        _INIT_LOG.reset(token)


def checked_init(owner: str, who: str, layer: Layer, key, in_shape) -> tuple:
    """`layer.init(key, in_shape)`, failing as `owner` naming child `who` if it does not return a triple."""
    log = _INIT_LOG.get()
    if log is None:
        out = layer.init(key, in_shape)
    else:
        entry = {"who": who, "layer": layer.name, "depth": log.depth, "in_shape": in_shape}
        log.entries.append(entry)
        log.depth += 1
        try:
            out = layer.init(key, in_shape)
        finally:
            log.depth -= 1
        entry["out"] = out
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


# ------------------------------------------------------------------------------------- children


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


# ----------------------------------------------------------------------------------------- paths


def _as_path(owner: str, path: Any) -> tuple:
    """An int, a str or a tuple of them -> a non-empty tuple, failing on anything else."""
    path = path if isinstance(path, tuple) else (path,)
    if not path or not all(isinstance(p, str) or is_int(p) for p in path):
        fail(owner, f"expects a path of ints and strings, got {path!r}")
    return path


def _get_at(owner: str, tree: Any, path: tuple) -> Any:
    """The part of `tree` at `path` (tuple indices, dict keys, NamedTuple field names), failing as
    `owner` where a part is missing."""
    for p in path:
        if isinstance(tree, dict) or (isinstance(p, int) and isinstance(tree, (tuple, list))):
            try:
                tree = tree[p]
                continue
            except (KeyError, IndexError):
                pass
        elif isinstance(p, str) and hasattr(tree, "_fields") and p in tree._fields:
            tree = getattr(tree, p)
            continue
        fail(owner, f"path {path!r}: no part {p!r} in {type(tree).__name__} {tree!r:.80}")
    return tree


def _put_at(tree: Any, path: tuple, value: Any) -> Any:
    """A copy of `tree` with the part at `path` replaced by `value` (containers rebuilt, leaves shared)."""
    if not path:
        return value
    p, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, p: _put_at(tree[p], rest, value)}
    if hasattr(tree, "_fields"):
        field = p if isinstance(p, str) else tree._fields[p]
        return tree._replace(**{field: _put_at(getattr(tree, field), rest, value)})
    return type(tree)(_put_at(v, rest, value) if i == p else v for i, v in enumerate(tree))


# ------------------------------------------------------------------------------- the combinators


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
    path = _as_path("Select", path)

    def init(key, in_shape):
        del key
        return _get_at("Select", in_shape, path), {}

    def apply(params, x):
        del params
        return _get_at("Select", x, path)

    def vjp(params, x):
        del params
        return _get_at("Select", x, path), lambda dy: ({}, _put_at(zero_cotangent(x), path, dy))

    return stateless("Select", init, apply, vjp, decode=positionwise(apply))


def at(path: int | str | tuple, layer: Layer) -> Layer:
    """The write-back twin of `select`: `layer` applied to the part of a structured input at `path`,
    the result written back in its place, every other part passed through (a mask, a memory).

    Shapes: in_shape with the part at `path` replaced by the layer's out_shape. Params and state are
    the layer's own. dx is dy with the part at `path` replaced by the layer's dx. Decodes when the
    layer does."""
    path = _as_path("At", path)
    if not isinstance(layer, Layer):
        fail("At", f"expects a Layer, got {layer!r}")
    who = f"layer at {list(path)} ({layer.name})"

    def init(key, in_shape):
        in_shape = as_shape_tree(in_shape)
        out_shape, params, state = checked_init("At", who, layer, key, _get_at("At", in_shape, path))
        return _put_at(in_shape, path, out_shape), params, state

    def apply(params, state, x, *, key=None, train=False):
        y, state = checked_apply("At", who, layer, params, state, _get_at("At", x, path), key=key, train=train)
        return _put_at(x, path, y), state

    def vjp(params, state, x, *, key=None, train=False):
        y, state, inner = checked_vjp("At", who, layer, params, state, _get_at("At", x, path), key=key, train=train)

        def pullback(dy):
            dparams, dpart = inner(_get_at("At", dy, path))
            return dparams, _put_at(dy, path, dpart)

        return _put_at(x, path, y), state, pullback

    def step(params, cache, x_t, *, pos):
        y_t, cache = layer.decode.step(params, cache, _get_at("At", x_t, path), pos=pos)
        return _put_at(x_t, path, y_t), cache

    if not can_decode(layer):
        decode = no_decode("At", f"layer {layer.name} has no decode step")
    else:
        decode = Decode(layer.decode.init_cache, step)
    return Layer(init, apply, vjp, "At", decode)


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


_MERGES = ("concat", "sum", "mean", "mul", None)


def parallel(*layers: Layer, merge: str | None = "concat", route: Layer | None = None,
             **named_layers: Layer) -> Layer:
    """Fan-out: every child sees the same `x`, or with `route` its own part of it. Outputs are
    concatenated on the last axis (`merge="concat"`), added (`"sum"`), averaged (`"mean"`), multiplied
    (`"mul"`; shapes must agree for these three), or kept as a structure (`None`: a tuple, or a dict
    for named children). dx is the sum of the children's dx (`tree_add`).

    `route`: a parameter-free layer (params and state {}) mapping x to one input per child (a tuple,
    or a dict keyed by child name), whose pullback takes the children's dx in that structure; the
    fan-out then bears the router's name in messages and in debug mode (`Bidirectional` is one)."""
    if route is not None and not isinstance(route, Layer):
        fail("Parallel", f"route must be a Layer, got {route!r}")
    owner = "Parallel" if route is None else route.name
    check_choice(owner, "merge", merge, _MERGES)
    children = _children(owner, layers, named_layers)
    n = len(children.layers)
    router = f"router ({owner})"

    def init(key, in_shape):
        in_shape = as_shape_tree(in_shape)
        in_shapes = [in_shape] * n
        if route is not None:
            shapes, p, s = checked_init(owner, router, route, key, in_shape)
            if p != {} or s != {}:
                fail(owner, f"route must be parameter-free (params and state {{}}), got {describe(p)}")
            in_shapes = children.unpack(shapes)
        outs = [checked_init(owner, children.describe(i), layer, k, shape)
                for i, (layer, k, shape) in enumerate(zip(children.layers, jax.random.split(key, n), in_shapes))]
        shapes = [o[0] for o in outs]
        if merge in ("sum", "mean", "mul"):
            if any(s != shapes[0] for s in shapes):
                fail(owner, f"merge={merge!r} needs equal output shapes, got {shapes}")
            out_shape = shapes[0]
        elif merge == "concat":
            if not all(map(is_shape, shapes)) or any(s[:-1] != shapes[0][:-1] for s in shapes):
                fail(owner, f"merge='concat' needs equal shapes but the last axis, got {shapes}")
            out_shape = (*shapes[0][:-1], sum(s[-1] for s in shapes))
        else:
            out_shape = children.pack(shapes)
        return out_shape, children.pack([o[1] for o in outs]), children.pack([o[2] for o in outs])

    def join(ys):
        if merge is not None:
            shapes = [jnp.shape(y) for y in ys]
            keep = (lambda s: s[:-1]) if merge == "concat" else (lambda s: s)
            if any(not isinstance(y, jax.Array | np.ndarray) for y in ys) or any(
                    len(s) == 0 or keep(s) != keep(shapes[0]) for s in shapes):
                needs = "equal shapes but the last axis" if merge == "concat" else "equal output shapes"
                fail(owner, f"merge={merge!r} needs {needs}, got outputs {[describe(y) for y in ys]}")
        if merge == "concat":
            return jnp.concatenate(ys, axis=-1)
        if merge == "mul":
            return _product(ys)
        if merge is None:
            return children.pack(ys)
        total = sum(ys[1:], ys[0])
        return total / n if merge == "mean" else total

    # concat: each child's dy is its slice of dy along the last axis; sum: dy whole; mean: dy / n;
    # mul: dy times the other children's outputs; None: each child's part of dy.
    def split(dy, ys):
        if merge == "concat":
            widths = [y.shape[-1] for y in ys]
            return jnp.split(dy, [sum(widths[:i]) for i in range(1, n)], axis=-1)
        if merge == "mul":
            return [dy * _product(ys[:i] + ys[i + 1:]) for i in range(n)]
        if merge is None:
            return children.unpack(dy)
        return [dy / n if merge == "mean" else dy] * n

    def each(params, state, key, x):
        children.check(owner, params, "params")
        children.check(owner, state, "state")
        return enumerate(zip(children.layers, children.unpack(params), children.unpack(state), _split(key, n), x))

    def apply(params, state, x, *, key=None, train=False):
        xs = [x] * n if route is None else children.unpack(
            checked_apply(owner, router, route, {}, {}, x, key=None, train=train)[0])
        outs = [checked_apply(owner, children.describe(i), layer, p, s, x_i, key=k, train=train)
                for i, (layer, p, s, k, x_i) in each(params, state, key, xs)]
        return join([o[0] for o in outs]), children.pack([o[1] for o in outs])

    # dx = the sum of the children's dx, or the router's pullback of them.
    def vjp(params, state, x, *, key=None, train=False):
        xs, route_pullback = [x] * n, None
        if route is not None:
            routed, _, route_pullback = checked_vjp(owner, router, route, {}, {}, x, key=None, train=train)
            xs = children.unpack(routed)
        outs = [checked_vjp(owner, children.describe(i), layer, p, s, x_i, key=k, train=train)
                for i, (layer, p, s, k, x_i) in each(params, state, key, xs)]
        ys = [o[0] for o in outs]

        def pullback(dy):
            grads = [o[2](d) for o, d in zip(outs, split(dy, ys))]
            dparams, dxs = children.pack([g[0] for g in grads]), [g[1] for g in grads]
            if route_pullback is not None:
                return dparams, route_pullback(children.pack(dxs))[1]
            return dparams, functools.reduce(tree_add, dxs)

        return join(ys), children.pack([o[1] for o in outs]), pullback

    def init_cache(params, batch, max_len):
        return children.pack([layer.decode.init_cache(p, batch, max_len)
                              for layer, p in zip(children.layers, children.unpack(params))])

    def step(params, cache, x_t, *, pos):
        xs = [x_t] * n if route is None else children.unpack(route.decode.step({}, {}, x_t, pos=pos)[0])
        outs = [layer.decode.step(p, c, x_i, pos=pos) for layer, p, c, x_i in
                zip(children.layers, children.unpack(params), children.unpack(cache), xs)]
        return join([o[0] for o in outs]), children.pack([o[1] for o in outs])

    decode = _missing_decode(owner, children)
    if decode is None and route is not None and not can_decode(route):
        decode = no_decode(owner, "its input router has no decode step")
    return Layer(init, apply, vjp, owner, decode or Decode(init_cache, step))


def _product(ys: list) -> Any:
    out = ys[0]
    for y in ys[1:]:
        out = out * y
    return out


def residual(layer: Layer, *, at: int | str | tuple | None = None) -> Layer:
    """y = x + layer(x); the inner layer must keep the shape. dx = dy + dx_inner.

    With `at` (a path into a structured input, as `select`'s): the inner layer sees the whole input and
    its output is added to the part at `at`, every other part passed through, as a Transformer block
    adds attention's output to x and passes (x, mask) or (x, memory) along:
    y = x with y[at] = x[at] + layer(x). dx = dy (every part) + the inner layer's dx."""
    if not isinstance(layer, Layer):
        fail("Residual", f"expects a Layer, got {layer!r}")
    path = () if at is None else _as_path("Residual", at)
    who = f"inner layer ({layer.name})"

    def init(key, in_shape):
        in_shape = as_shape_tree(in_shape)
        out_shape, params, state = checked_init("Residual", who, layer, key, in_shape)
        if out_shape != _get_at("Residual", in_shape, path):
            fail("Residual", f"inner layer {layer.name} maps {in_shape} to {out_shape}"
                             + (f", not the shape of the part at {list(path)}" if path else ""))
        return in_shape, params, state

    def added(x, y):
        part = _get_at("Residual", x, path)
        if jnp.shape(part) != jnp.shape(y) or not isinstance(y, jax.Array | np.ndarray):
            fail("Residual", f"y = x + layer(x) needs the inner layer {layer.name} to keep x's shape "
                             f"{jnp.shape(part)}, got {describe(y)}")
        return _put_at(x, path, part + y)

    def apply(params, state, x, *, key=None, train=False):
        y, state = checked_apply("Residual", who, layer, params, state, x, key=key, train=train)
        return added(x, y), state

    def vjp(params, state, x, *, key=None, train=False):
        y, state, inner = checked_vjp("Residual", who, layer, params, state, x, key=key, train=train)

        def pullback(dy):
            dparams, dx = inner(_get_at("Residual", dy, path))
            return dparams, tree_add(dx, dy)

        return added(x, y), state, pullback

    def step(params, cache, x_t, *, pos):
        y_t, cache = layer.decode.step(params, cache, x_t, pos=pos)
        return _put_at(x_t, path, _get_at("Residual", x_t, path) + y_t), cache

    if not can_decode(layer):
        decode = no_decode("Residual", f"inner layer {layer.name} has no decode step")
    else:
        decode = Decode(layer.decode.init_cache, step)
    return Layer(init, apply, vjp, "Residual", decode)


# -------------------------------------------------------------------------------------- the tape


class Tape:
    """Runs a model's named children forward and replays their pullbacks backward: the runner of a
    model whose graph is not a chain (two inputs, a memory every block reads, a table used twice).
    `taped` makes such a model a Layer from two functions:

        def forward(tape, x):                    # -> (y, what backward needs)
            h = tape("body", body, x)            # child "body" on params["body"] and its state, through
            return tape("head", head, h), None   # checked_vjp; its pullback kept, its new state gathered
        def backward(replay, saved, dy):         # -> (dx, dparams of the params the model uses itself)
            return replay("body", replay("head", dy)), {}
        model = taped("Model", init, forward, backward)

    A name is a key of params, or a path of keys (`("decoder", 3)`); the child runs on the params and
    state there. A child the state has no entry for must be stateless: it runs on the (leafless) state
    its init makes for x's shapes, found once by tracing init (`jax.eval_shape`, nothing computed). A
    name may run several times (a layer every stage shares): a replay (`backward()`) takes its calls
    latest first and sums their dparams; every call is replayed, on None where nothing used its output.
    Keys: the k-th call (k = 0, 1, ...) of a name gets fold_in(fold_in(key, crc32(name)), k), so a
    child's randomness depends on its name, not on the order of the calls. `keep=False` runs the
    children's `apply` (no pullbacks kept). Debug mode names each child as `child 'name' (Layer)`."""

    def __init__(self, owner: str, params: PyTree, state: PyTree, *, key=None, train: bool = False,
                 keep: bool = True):
        self.owner, self.params, self.state, self.key, self.train, self.keep = owner, params, state, key, train, keep
        self.pullbacks: dict[tuple, list] = {}  # path -> the pullback of each call, in order

    def __call__(self, name: str | int | tuple, layer: Layer, x: Any) -> Any:
        """Run child `name` (`layer`) on x -> its output; its new state goes to `self.state`."""
        path = _as_path(self.owner, name)
        who = f"child {_text(path)!r} ({layer.name})"
        params = _get_at(self.owner, self.params, path)
        has_state = _has(self.state, path)
        state = _get_at(self.owner, self.state, path) if has_state else _empty_state(self.owner, who, layer, x)
        calls = self.pullbacks.setdefault(path, [])
        key = None if self.key is None else jax.random.fold_in(
            jax.random.fold_in(self.key, zlib.crc32(_text(path).encode()) & 0x7FFFFFFF), len(calls))
        if self.keep:
            y, new_state, pullback = checked_vjp(self.owner, who, layer, params, state, x, key=key, train=self.train)
        else:
            (y, new_state), pullback = checked_apply(self.owner, who, layer, params, state, x, key=key,
                                                     train=self.train), None
        calls.append(pullback)
        if has_state:
            self.state = _put_at(self.state, path, new_state)
        return y

    def backward(self) -> _Replay:
        """One replay of the recorded pullbacks (`replay(name, dy) -> dx`, then `replay.grads()`)."""
        if not self.keep:
            fail(self.owner, "a Tape made with keep=False kept no pullbacks to replay")
        return _Replay(self)


class _Replay:
    """One backward pass over a Tape: each call replays a child's pullback (its latest call not yet
    replayed) and adds its dparams; dy None (nothing used that output) gives dx None and no dparams.
    `grads()`, once every call is replayed, gives the dparams in the tree of params."""

    def __init__(self, tape: Tape):
        self.tape, self.params = tape, tape.params
        self.left = {path: len(calls) for path, calls in tape.pullbacks.items()}
        self.dparams: dict[tuple, PyTree] = {}

    def __call__(self, name: str | int | tuple, dy: Any) -> Any:
        path = _as_path(self.tape.owner, name)
        if not self.left.get(path):
            fail(self.tape.owner, f"child {_text(path)!r} has no call left to replay (it ran "
                                  f"{len(self.tape.pullbacks.get(path, []))} times)")
        self.left[path] -= 1
        if dy is None:  # nothing used this call's output
            return None
        dparams, dx = self.tape.pullbacks[path][self.left[path]](dy)
        self.dparams[path] = tree_add(self.dparams.get(path), dparams)
        return dx

    def grads(self) -> PyTree:
        """dparams in the tree of params, once every call is replayed: each child's, zeros elsewhere
        (a parameter the model differentiates itself and then sets in this tree)."""
        left = {_text(path): n for path, n in self.left.items() if n}
        if left:
            fail(self.tape.owner, f"grads() before every call is replayed: calls left {left}")
        dparams = jax.tree_util.tree_map(jnp.zeros_like, self.tape.params)
        for path, grads in self.dparams.items():
            dparams = _put_at(dparams, path, grads)
        return dparams


def taped(name: str, init: Callable, forward: Callable, backward: Callable, *,
          decode: Decode | None = None) -> Layer:
    """A model whose graph is not a chain (two inputs, a memory every block reads, a table used twice)
    as a Layer, its named children run on a `Tape`:

        forward(tape, x)             -> (y, saved)    children run as tape(name, layer, input)
        backward(replay, saved, dy)  -> (dx, own)     replay(name, d) once per call, latest first

    `own` holds the dparams of the params the model uses itself (a table used twice, a temperature):
    the layer's dparams are the replay's (every child's, in the tree of params) with `own`'s entries
    put in. apply runs `forward` on a tape that keeps no pullbacks; state gathers the children's."""

    def apply(params, state, x, *, key=None, train=False):
        tape = Tape(name, params, state, key=key, train=train, keep=False)
        return forward(tape, x)[0], tape.state

    def vjp(params, state, x, *, key=None, train=False):
        tape = Tape(name, params, state, key=key, train=train)
        y, saved = forward(tape, x)

        def pullback(dy):
            replay = tape.backward()
            dx, own = backward(replay, saved, dy)
            dparams = replay.grads()
            return ({**dparams, **own} if own else dparams), dx

        return y, tape.state, pullback

    return Layer(init, apply, vjp, name, decode)


def _text(path: tuple) -> str:
    return "/".join(map(str, path))


def _empty_state(owner: str, who: str, layer: Layer, x: Any) -> PyTree:
    """The state `layer`'s init makes for x's shapes, failing unless it has no leaves."""
    shapes = jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), x)
    leaves, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=is_shape)
    state = _traced_state(layer, treedef, tuple(leaves))
    if jax.tree_util.tree_leaves(state):
        fail(owner, f"{who} has state, but the state given has no entry for it")
    return state


@functools.lru_cache(maxsize=256)
def _traced_state(layer: Layer, treedef, shapes: tuple) -> PyTree:
    in_shape = jax.tree_util.tree_unflatten(treedef, shapes)
    return jax.eval_shape(lambda k: layer.init(k, in_shape)[2], jax.random.PRNGKey(0))


def _has(tree: Any, path: tuple) -> bool:
    for p in path:
        if isinstance(tree, dict) and p in tree:
            tree = tree[p]
        elif isinstance(tree, (tuple, list)) and is_int(p) and 0 <= p < len(tree):
            tree = tree[p]
        else:
            return False
    return True
