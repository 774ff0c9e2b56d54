"""A model summary, as Flax's `tabulate` and Keras' `summary()` print one: per named child, its output
shape and its parameters (paths, shapes, counts, bytes), and the totals.

Nothing is computed: the model's `init` is traced (`jax.eval_shape`) with every child's init recorded
(`purenet.combinators.recorded_inits`), and each recorded child is found in the params tree by the
params its init returned, which gives its path (`blocks/0/attn`). Where several share a path (a residual
and its inner serial hold the same params) the innermost is shown, the layer owning them; parameters no
recorded child owns (a model's own table, such as a tied embedding) get a row of their own, layer `-`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import check_int, fail
from purenet.combinators import recorded_inits
from purenet.core import Layer, as_shape_tree, is_shape


class SummaryRow(NamedTuple):
    """One row: the child's path in params (`blocks/0/attn`), its layer's name, its declared output
    shape, the parameters under its path (its children's included) and their bytes, and the leaves it
    holds itself as (name, shape, dtype); `below`: how many leaves of children deeper than `depth` it
    counts without listing."""

    path: str
    layer: str
    out_shape: Any
    params: int
    bytes: int
    own: tuple
    below: int = 0


class Summary(NamedTuple):
    """`summary`'s result: `str(summary)` (or `print(summary)`) is the table; the fields hold its figures.
    `params` counts every parameter, `bytes` their size, `state` the values of the state (BatchNorm's
    running statistics) and `state_bytes` theirs."""

    model: str
    in_shape: Any
    out_shape: Any
    rows: tuple
    params: int
    bytes: int
    state: int
    state_bytes: int

    def __str__(self) -> str:
        header = ("path", "layer", "output shape", "params", "bytes", "parameters (own)")
        def own(r):
            leaves = [f"{name} {_shape_text(shape)}" + ("" if dtype == "float32" else f" {dtype}")
                      for name, shape, dtype in r.own]
            return ", ".join(leaves + ([f"{r.below} leaves in its children"] if r.below else []))

        lines = [(r.path, r.layer, _shape_text(r.out_shape), f"{r.params:,}", _bytes_text(r.bytes), own(r))
                 for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(5)]
        right = (False, False, False, True, True)

        def line(cells):
            text = "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))
            return (text + "  " + cells[5]).rstrip()

        rule = "  ".join("-" * w for w in widths) + "  " + "-" * len(header[5])
        return "\n".join([f"{self.model}: input {_shape_text(self.in_shape)} -> output {_shape_text(self.out_shape)}",
                          line(header), rule, *map(line, lines), rule,
                          f"total: {self.params:,} parameters ({_bytes_text(self.bytes)}); state: {self.state:,} "
                          f"values ({_bytes_text(self.state_bytes)})"])


def _shape_text(shape: Any) -> str:
    if is_shape(shape):
        return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, (tuple, list)):
        return "(" + ", ".join(map(_shape_text, shape)) + ")"
    return str(shape)


def _bytes_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # unreachable


def _containers(tree: Any, path: tuple, found: dict) -> None:
    """id(container) -> its path, for every dict, tuple and list in `tree` (the first path where seen)."""
    if isinstance(tree, (dict, tuple, list)):
        found.setdefault(id(tree), path)
        for k, v in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
            _containers(v, (*path, k), found)


def _text(path: tuple) -> str:
    return "/".join(map(str, path))


def summary(model: Layer, in_shape: Any, *, depth: int | None = None) -> Summary:
    """The summary of `model` at `in_shape` (a shape with the batch first, -1 if unknown, or a pytree of
    shapes): per named child, in order, its path, layer, output shape and parameters; and the totals.
    `depth` (as Flax's `tabulate`): rows down to that many path parts (`blocks/0` is 2), deeper children
    counted in their ancestor's row. Traced, nothing computed or allocated. `print(pn.summary(model,
    (-1, 28, 28, 1)))` prints the table. -> Summary."""
    if not isinstance(model, Layer):
        fail("summary", f"model must be a Layer, got {type(model).__name__}")
    if depth is not None:
        check_int("summary", "depth", depth, 1)
    found: dict = {}

    def trace(key):
        with recorded_inits() as log:
            out_shape, params, state = model.init(key, as_shape_tree(in_shape))
        ids: dict = {}
        _containers(params, (), ids)
        rows: dict = {}  # path -> (layer, out_shape); entries come parents first: the innermost wins
        for entry in log.entries:
            child = entry.get("out", (None, None))[1]
            path = ids.get(id(child)) if isinstance(child, (dict, list)) or (isinstance(child, tuple) and child) \
                else None
            if path:
                rows[path] = (entry["layer"], entry["out"][0])
        rows = [(path, layer, shape) for path, (layer, shape) in rows.items()]
        leaves = [(tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in p), tuple(a.shape),
                   jnp.dtype(a.dtype).name, int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize)
                  for p, a in jax.tree_util.tree_flatten_with_path(params)[0]]
        found.update(out_shape=out_shape, rows=rows, leaves=leaves,
                     state=[(int(np.prod(a.shape)), int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize)
                            for a in jax.tree_util.tree_leaves(state)])
        return jnp.zeros(())

    jax.eval_shape(trace, jax.random.PRNGKey(0))
    rows, leaves = found["rows"], found["leaves"]
    every = [path for path, _, _ in rows]
    if depth is not None:
        rows = [row for row in rows if len(row[0]) <= depth]
    recorded = len(rows)
    paths = [path for path, _, _ in rows]

    def owner(leaf_path, among):  # the deepest row whose path is a prefix of the leaf's
        prefixes = [p for p in among if leaf_path[:len(p)] == p]
        return max(prefixes, key=len) if prefixes else None

    own: dict = {}
    below: dict = {}
    for leaf_path, shape, dtype, _ in leaves:
        row, deepest = owner(leaf_path, paths), owner(leaf_path, every)
        if depth is not None and row is not None and deepest is not None and len(deepest) > depth:
            below[row] = below.get(row, 0) + 1  # a deeper child's, not shown
            continue
        if row is None:  # a parameter the model holds itself: a row for its parent path
            row = leaf_path[:-1] if depth is None else leaf_path[:-1][:depth]
            if row not in paths:
                paths.append(row)
                rows.append((row, "-", None))
        own.setdefault(row, []).append((_text(leaf_path[len(row):]), shape, dtype))
    order = sorted(range(len(rows)), key=lambda i: (i >= recorded, i))  # recorded first, in order
    out = []
    for i in order:
        path, layer, out_shape = rows[i]
        under = [(size, nbytes) for leaf_path, shape, _, nbytes in leaves
                 for size in [int(np.prod(shape))] if leaf_path[:len(path)] == path]
        out.append(SummaryRow(_text(path) or "(model)", layer, "-" if out_shape is None else out_shape,
                              sum(s for s, _ in under), sum(b for _, b in under), tuple(own.get(path, ())),
                              below.get(path, 0)))
    return Summary(model.name, as_shape_tree(in_shape), found["out_shape"], tuple(out),
                   sum(int(np.prod(s)) for _, s, _, _ in leaves), sum(b for *_, b in leaves),
                   sum(n for n, _ in found["state"]), sum(b for _, b in found["state"]))
