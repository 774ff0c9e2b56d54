"""Checkpoints: params, state, optimizer state, step and PRNG key in one `.npz` file, without pickle.

Every pytree leaf becomes one npz entry named by its `keystr` path (`['params'][0]['w']`); NamedTuple
optimizer states flatten like any pytree. Two more entries: `__meta__`, JSON as uint8 (format version,
step, and per leaf its path, shape and dtype), and `__sha256__`, the digest of meta plus every leaf's
bytes, so corruption is detected rather than loaded. Typed PRNG keys (`jax.random.key`) are stored as
their `key_data` and rewrapped on load; raw uint32 keys (`jax.random.PRNGKey`) are ordinary arrays.

Writes are atomic (`purenet._files.atomic_write`): a temporary file in the same directory, fsync, then
`os.replace`; a failure on the way leaves the previous checkpoint untouched and no temporary file behind.

Sharded parameters (`purenet.training.parallel`, README "Scaling out") are gathered whole into the file
(from every process, which process 0 alone writes), and restored onto the shardings of the template's
leaves when those are sharded jax arrays: save on 8 devices, load onto 2 or onto one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from purenet._checks import fail
from purenet._files import atomic_write
from purenet.core import PyTree

FORMAT_VERSION = 1
_META, _DIGEST = "__meta__", "__sha256__"
_NAME = "Checkpoint"


class Checkpoint(NamedTuple):
    """What a checkpoint holds; also the `like=` template of `load_checkpoint` (its `step` is ignored)."""

    params: PyTree
    state: PyTree
    opt_state: PyTree
    step: int
    key: Any


class CorruptCheckpointError(ValueError):
    """The file is truncated, altered or not a purenet checkpoint."""


# ------------------------------------------------------------------------------------------ leaves


def _is_typed_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _describe(x) -> dict:
    """A leaf's shape and dtype (`key<fry>` for typed keys); works on arrays and ShapeDtypeStructs."""
    x = x if hasattr(x, "dtype") else jnp.asarray(x)
    return {"shape": list(x.shape), "dtype": str(x.dtype)}


def _to_numpy(x) -> np.ndarray:
    """Host bytes of a leaf. Typed keys -> key_data; dtypes numpy cannot name in a .npy header
    (bfloat16, float8) -> viewed as unsigned ints of the same width."""
    x = jax.random.key_data(x) if _is_typed_key(x) else x
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # sharded over several processes
        x = multihost_utils.process_allgather(x, tiled=True)
    array = np.asarray(x)
    if array.dtype.type.__module__ != "numpy":
        array = array.view(f"u{array.dtype.itemsize}")
    return np.asarray(array, order="C")


def _from_numpy(array: np.ndarray, entry: dict, like):
    """The stored leaf as a jax array, laid out like the template's leaf when that is a sharded
    jax.Array (each process places its own shards: `jax.make_array_from_callback`)."""
    if "impl" in entry:
        return jax.random.wrap_key_data(jnp.asarray(array), impl=entry["impl"])
    array = array.view(jnp.dtype(entry["dtype"]))
    sharding = getattr(like, "sharding", None) if isinstance(like, jax.Array) else None
    if sharding is None or len(sharding.device_set) == 1:
        return jnp.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _digest(meta: bytes, arrays: list[np.ndarray]) -> np.ndarray:
    sha = hashlib.sha256(meta)
    for array in arrays:
        sha.update(array.tobytes())
    return np.frombuffer(sha.digest(), dtype=np.uint8)


def _check_not_directory(path) -> None:
    if os.path.isdir(path):
        fail(_NAME, f"{os.fspath(path)} is a directory, expected a checkpoint file (fit writes "
                    f"{os.path.join(os.fspath(path), 'checkpoint.npz')})", IsADirectoryError)


def _brief(names: list[str], shown: int = 5) -> str:
    """A list of leaf names cut to its first few and how many more: a message stays a few lines long."""
    return str(names[:shown])[:-1] + (f", ... and {len(names) - shown} more]" if len(names) > shown else "]")


def _flatten(tree: PyTree) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


# -------------------------------------------------------------------------------------------- save


def save_checkpoint(path, *, params: PyTree, state: PyTree, opt_state: PyTree, step: int, key) -> None:
    """Write a checkpoint to `path` atomically (the file name is used as given, no suffix added).

    `key` is a raw uint32 key, a typed key, or None."""
    _check_not_directory(path)
    tree = Checkpoint(params, state, opt_state, 0, key)._asdict()
    del tree["step"]
    named = [(name, leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf))  # Python scalars -> arrays
             for name, leaf in _flatten(tree)]
    arrays = [_to_numpy(leaf) for _, leaf in named]
    meta = {"format_version": FORMAT_VERSION, "step": int(step),
            "leaves": [{"path": name} | _describe(leaf) for name, leaf in named]}
    for entry, (_, leaf) in zip(meta["leaves"], named):
        if _is_typed_key(leaf):
            entry["impl"] = str(jax.random.key_impl(leaf))
    meta_bytes = json.dumps(meta).encode()
    entries = {name: array for (name, _), array in zip(named, arrays)}
    entries[_META] = np.frombuffer(meta_bytes, dtype=np.uint8)
    entries[_DIGEST] = _digest(meta_bytes, arrays)

    if jax.process_index() == 0:  # with several processes (each holding the gathered leaves) one writes
        with atomic_write(path) as f:
            np.savez(f, **entries)


# -------------------------------------------------------------------------------------------- load


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (meta, {path: array}) after checking the digest; raises CorruptCheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {name: npz[name] for name in npz.files}
        meta_bytes = entries.pop(_META).tobytes()
        digest = entries.pop(_DIGEST)
        meta = json.loads(meta_bytes)
        arrays = [entries[leaf["path"]] for leaf in meta["leaves"]]
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, TypeError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CorruptCheckpointError(
            f"{_NAME}: {path} is truncated or corrupt ({type(error).__name__}: {error})") from error
    shapes_agree = all(a.shape[:len(leaf["shape"])] == tuple(leaf["shape"])
                       for leaf, a in zip(meta["leaves"], arrays))
    if not shapes_agree or not np.array_equal(digest, _digest(meta_bytes, arrays)):
        raise CorruptCheckpointError(
            f"{_NAME}: {path} is corrupt: its contents do not match their SHA-256 and metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        fail(_NAME, f"{path} has format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return meta, {leaf["path"]: a for leaf, a in zip(meta["leaves"], arrays)}


def load_checkpoint(path, *, like: Checkpoint) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`, validated against the template `like`.

    `like` is a Checkpoint whose params/state/opt_state/key have the expected trees, shapes and dtypes
    (arrays or jax.ShapeDtypeStruct; its step is ignored). A missing or extra leaf, or a shape or dtype
    mismatch, raises ValueError naming the leaf path, expected and found; a damaged file raises
    CorruptCheckpointError. -> Checkpoint with jax arrays and the stored step."""
    if not isinstance(like, Checkpoint):
        fail(_NAME, f"like must be a Checkpoint(params, state, opt_state, step, key), got {type(like)}")
    path = os.fspath(path)
    _check_not_directory(path)
    meta, arrays = _read(path)
    stored = {leaf["path"]: leaf for leaf in meta["leaves"]}

    template = like._asdict()
    del template["step"]
    named, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected_paths = [jax.tree_util.keystr(p) for p, _ in named]
    missing = [p for p in expected_paths if p not in stored]
    extra = sorted(stored.keys() - set(expected_paths))
    if missing or extra:
        positional = any(p.startswith("['params'][0]") for p in extra)
        hint = (" (the file names layers by position, params[0], ...: it was written for a model built with "
                "positional children, as purenet 0.1's experiments were; rebuild that model to load it)"
                if positional and not any(p.startswith("['params'][0]") for p in missing) else "")
        weights_only = ("; to read only its params and state (for inference, or another optimizer), call "
                        "purenet.load_weights(path, like=(params, state))"
                        if all(p.startswith("['opt_state']") for p in missing + extra) else "")
        fail(_NAME, f"tree structure of {path} differs from `like`{hint}: missing leaves {_brief(missing)}, "
                    f"unexpected leaves {_brief(extra)}{weights_only}")
    leaves = []
    for name, (_, leaf) in zip(expected_paths, named):
        expected, found = _describe(leaf), stored[name]
        if (expected["shape"], expected["dtype"]) != (found["shape"], found["dtype"]):
            fail(_NAME, f"leaf {name}: expected shape {tuple(expected['shape'])} {expected['dtype']}, "
                        f"found shape {tuple(found['shape'])} {found['dtype']} in {path}")
        leaves.append(_from_numpy(arrays[name], found, leaf))
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    return Checkpoint(step=meta["step"], **tree)
