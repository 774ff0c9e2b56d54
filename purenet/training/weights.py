"""Weights only: a model's params and state in one file, for inference or fine-tuning, without the
optimizer state, the step or the key that a training checkpoint (`checkpoint.py`) holds.

Two formats, chosen by the file name: `.safetensors` (the ecosystem's format for weights, readable by
Hugging Face's tools and PyTorch) and `.npz` (numpy's, read with `allow_pickle=False`); neither can run
code when loaded. Tensors are named by their path, `params/conv1/w`, `state/bn/mean`; the tree (dicts,
tuples) is kept in the file's metadata, so a file loads back as the same tree without a template.
Writes are atomic (`purenet._files.atomic_write`). `load_weights` also reads the params and state out of
a training checkpoint (`fit`'s `checkpoint.npz`), whatever its optimizer was.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import describe, fail
from purenet._files import atomic_write
from purenet.core import PyTree
from purenet.training import checkpoint

FORMAT = "purenet-weights"
VERSION = 1
_META = "__purenet__"  # the npz entry (uint8 JSON) or the safetensors metadata key holding the tree
_SUFFIXES = (".safetensors", ".npz")


# ------------------------------------------------------------------------------------------ names
# A tree's skeleton is JSON: {"d": {key: ...}} for a dict (and a NamedTuple, by field), {"t": [...]} for a
# tuple or list, null for None, and at each leaf its name. Dict keys in sorted order, as JAX flattens them.


def _skeleton(tree: Any, name: str, leaves: list) -> Any:
    """`tree`'s skeleton; appends (name, leaf) to `leaves` in JAX's flattening order."""
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            fail("save_weights", f"dict keys must be strings to name tensors, got {sorted(map(repr, tree))[:4]} at "
                                 f"{name}")
        return {"d": {k: _skeleton(tree[k], f"{name}/{k}", leaves) for k in sorted(tree)}}
    if hasattr(tree, "_fields"):
        return {"d": {k: _skeleton(getattr(tree, k), f"{name}/{k}", leaves) for k in tree._fields}}
    if isinstance(tree, (tuple, list)):
        return {"t": [_skeleton(v, f"{name}/{i}", leaves) for i, v in enumerate(tree)]}
    if tree is None:
        return None
    leaves.append((name, tree))
    return name


def _entries(params: PyTree, state: PyTree) -> tuple[dict, list[tuple[str, Any]]]:
    """-> (the skeleton {"params": ..., "state": ...}, [(name, leaf)]), names `params/...`, `state/...`."""
    leaves: list = []
    return {"params": _skeleton(params, "params", leaves), "state": _skeleton(state, "state", leaves)}, leaves


def _build(skeleton: Any, restore) -> Any:
    """The tree of a skeleton, each leaf `restore(name)`."""
    if isinstance(skeleton, dict) and "d" in skeleton:
        return {k: _build(v, restore) for k, v in skeleton["d"].items()}
    if isinstance(skeleton, dict):
        return tuple(_build(v, restore) for v in skeleton["t"])
    return None if skeleton is None else restore(skeleton)


def _from_names(names: list[str]) -> dict:
    """The skeleton of a training checkpoint's params and state, from their names alone: digits index
    tuples (a position without leaves, a stateless layer's, becomes {}), other names key dicts."""
    root: dict = {}
    for name in names:
        node, parts = root, name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = name

    def skeleton(node):
        if isinstance(node, str):
            return node
        if node and all(k.isdigit() for k in node):
            return {"t": [skeleton(node.get(str(i), {})) for i in range(max(map(int, node)) + 1)]}
        return {"d": {k: skeleton(v) for k, v in sorted(node.items())}}

    tree = skeleton(root)["d"]
    return {"params": tree.get("params", {"d": {}}), "state": tree.get("state", {"d": {}})}


def _checkpoint_name(keystr: str) -> str:
    """A checkpoint leaf's keystr (`['params']['conv1']['w']`, `[0]`, `.h`) as a weights name."""
    parts = re.findall(r"\['((?:[^'\\]|\\.)*)'\]|\[(-?\d+)\]|\.(\w+)", keystr)
    return "/".join(text or index or attr for text, index, attr in parts)


# ------------------------------------------------------------------------------------------- save


def _as_stored(leaf) -> np.ndarray:
    """Host bytes of a leaf; dtypes numpy cannot name in a file (bfloat16) viewed as unsigned ints."""
    return checkpoint._to_numpy(leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf))


def save_weights(path: str | os.PathLike, params: PyTree, state: PyTree | None = None) -> None:
    """Write `params` and `state` (None: none) to `path`, a `.safetensors` or `.npz` file, atomically.

    Tensors are named `params/<path>` and `state/<path>` (`params/blocks/0/attn/w_q`); the tree and each
    leaf's dtype go in the file's metadata, so `load_weights(path)` returns the same tree. With several
    processes, sharded leaves are gathered and process 0 writes."""
    path = os.fspath(path)
    if not path.endswith(_SUFFIXES):
        fail("save_weights", f"path must end in .safetensors or .npz (the format), got {path!r}")
    if os.path.isdir(path):
        fail("save_weights", f"{path} is a directory, expected a file name", IsADirectoryError)
    skeleton, leaves = _entries(params, {} if state is None else state)
    names = [name for name, _ in leaves]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        fail("save_weights", f"two leaves would share the name {twice[0]} (a dict key holding '/'?)")
    arrays = {name: _as_stored(leaf) for name, leaf in leaves}
    meta = {"format": FORMAT, "version": VERSION, "tree": skeleton,
            "dtypes": {name: _dtype(leaf) for name, leaf in leaves}}
    if jax.process_index() != 0:
        return
    if path.endswith(".safetensors"):
        from safetensors.numpy import save  # noqa: PLC0415 (its numpy API: no torch)

        data = save(arrays, metadata={_META: json.dumps(meta)})
        with atomic_write(path) as f:
            f.write(data)
    else:
        with atomic_write(path) as f:
            np.savez(f, **arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})


def _dtype(leaf) -> str:
    return str(jnp.dtype(leaf.dtype) if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype)


# ------------------------------------------------------------------------------------------- load


def _read(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """-> ({name: stored array}, meta {"tree", "dtypes"}) of a weights file, or of a training checkpoint's
    params and state."""
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head.startswith(b"PK"):  # a zip: npz
            with np.load(path, allow_pickle=False) as npz:
                files = set(npz.files)
                if {"__meta__", "__sha256__"} <= files:  # a training checkpoint
                    return _from_checkpoint(path)
                if _META not in files:
                    fail("load_weights", f"{path} is an .npz file but not purenet weights (no {_META} entry)")
                meta = json.loads(npz[_META].tobytes())
                arrays = {name: npz[name] for name in meta["dtypes"]}
        else:
            from safetensors import safe_open  # noqa: PLC0415

            with safe_open(path, framework="np") as f:
                metadata = f.metadata() or {}
                if _META not in metadata:
                    fail("load_weights", f"{path} is a safetensors file without purenet's metadata (written by "
                                         f"another tool?): its tensors are {_names(sorted(f.keys()))}; for a "
                                         f"reference model's file, see purenet.interop")
                meta = json.loads(metadata[_META])
                arrays = {name: f.get_tensor(name) for name in meta["dtypes"]}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, TypeError) as error:
        if isinstance(error, FileNotFoundError) or str(error).startswith("load_weights:"):
            raise
        fail("load_weights", f"{path} is truncated or not a weights file ({type(error).__name__}: {error})")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        fail("load_weights", f"{path} has format {meta.get('format')!r} version {meta.get('version')}, expected "
                             f"{FORMAT!r} version {VERSION}")
    return arrays, meta


def _from_checkpoint(path: str) -> tuple[dict, dict]:
    meta, stored = checkpoint._read(path)
    arrays, dtypes = {}, {}
    for leaf in meta["leaves"]:
        name = _checkpoint_name(leaf["path"])
        if name.split("/")[0] in ("params", "state") and "impl" not in leaf:
            arrays[name], dtypes[name] = stored[leaf["path"]], leaf["dtype"]
    return arrays, {"format": FORMAT, "version": VERSION, "tree": _from_names(list(arrays)), "dtypes": dtypes}


def _names(names: list[str], shown: int = 5) -> str:
    """The first few names and how many more: a message stays a line long."""
    if not names:
        return "none"
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_weights(path: str | os.PathLike, *, like: tuple[PyTree, PyTree] | None = None) -> tuple[PyTree, PyTree]:
    """Read the params and state written by `save_weights` (or held by a training checkpoint such as
    fit's `checkpoint.npz`, whatever its optimizer) -> (params, state) as jax arrays.

    `like`: None returns the tree stored in the file; a pair `(params, state)` (arrays or
    `jax.ShapeDtypeStruct`s, e.g. `init_model(model, key, in_shape)[1:]`) checks every leaf's name, shape
    and dtype against it, failing with the first leaf that differs, or the names missing from the file and
    unknown to `like` (a few, then how many more), and returns `like`'s tree, each leaf on the template
    leaf's sharding when that is a jax array."""
    path = os.fspath(path)
    if os.path.isdir(path):
        fail("load_weights", f"{path} is a directory, expected a weights file (or fit's checkpoint.npz in it)",
             IsADirectoryError)
    if not os.path.exists(path):
        fail("load_weights", f"no file at {path}", FileNotFoundError)
    arrays, meta = _read(path)
    dtypes = meta["dtypes"]

    def restore(name, like_leaf=None):
        return checkpoint._from_numpy(arrays[name], {"dtype": dtypes[name]}, like_leaf)

    if like is None:
        tree = meta["tree"]
        return _build(tree["params"], restore), _build(tree["state"], restore)
    if not (isinstance(like, (tuple, list)) and len(like) == 2):
        fail("load_weights", f"like must be a pair (params, state) as init_model returns them, got {describe(like)}")
    _, expected = _entries(*like)
    names = [name for name, _ in expected]
    missing = [n for n in names if n not in dtypes]
    unknown = [n for n in dtypes if n not in set(names)]
    if missing or unknown:
        fail("load_weights", f"{path} does not hold the leaves of like=: {len(missing)} missing from the file "
                             f"({_names(missing)}), {len(unknown)} in the file unknown to like= ({_names(unknown)}); "
                             f"build like= from the model that wrote it (init_model(model, key, in_shape)[1:])")
    for name, leaf in expected:
        want, found = (tuple(np.shape(leaf)), _dtype(leaf)), (tuple(arrays[name].shape), dtypes[name])
        if want != found:
            fail("load_weights", f"leaf {name}: the file has shape {found[0]} {found[1]}, like= has {want[0]} "
                                 f"{want[1]} (another model's weights, or another dtype: cast like= or the file)")
    treedef = jax.tree_util.tree_structure(tuple(like))
    return jax.tree_util.tree_unflatten(treedef, [restore(name, leaf) for name, leaf in expected])
