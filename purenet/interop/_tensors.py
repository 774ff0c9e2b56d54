"""The machinery every family shares: a table from the reference's tensor names to purenet's parameter
paths, checked reads and atomic writes of safetensors files (through safetensors' numpy API: no torch).

A family (gpt2.py, bert.py, ...) gives a `Family`: how to build its config from the tensors' shapes and
the reference's config dict, the model, and its table of `Entry`s. An entry maps one tensor to one leaf:
"same" (the layouts agree), "linear" (torch's Linear keeps (out, in), purenet (in, out)), "conv" (torch's
(O, I, KH, KW), purenet's (KH, KW, I, O)) or "lead1"/"lead2" (the reference adds leading axes of size 1).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import fail
from purenet._files import atomic_write
from purenet.core import Layer

CONFIG_KEY = "config"  # the safetensors metadata entry holding the reference's config dict (JSON)
_FLOATS = (np.float16, np.float32, np.float64)


class Entry(NamedTuple):
    """One tensor of the reference: its name, the leaf it fills (("params" | "state", key, ...)), its layout."""

    name: str
    path: tuple
    kind: str = "same"


class Family(NamedTuple):
    """What `load` and `save` need to know about one architecture (see the module docstring)."""

    owner: str  # the name in messages: "load_gpt2"
    canonical: Callable[[str], str]  # a file's tensor name -> the name the entries use (prefixes, old names)
    config: Callable[[dict, dict, dict], Any]  # (shapes {name: shape}, reference config dict, overrides) -> config
    model: Callable[[Any], Layer]
    in_shape: Callable[[Any, dict], Any]  # (config, shapes) -> an input shape init accepts (the params' shapes
    # do not depend on it but for the input's channels, which the tensors' shapes tell)
    entries: Callable[[Any], list]  # config -> [Entry]
    reference_config: Callable[[Any, dict], dict]  # (config, shapes) -> the reference's config dict
    aliases: Callable[[Any], dict] = lambda config: {}  # another name of an entry's tensor -> the entry's name
    buffers: Callable[[str], bool] = lambda name: False  # tensors of the reference that hold no parameter
    extra: Callable[[Any], dict] = lambda config: {}  # buffers the reference's state_dict needs, written on save


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _listing(names) -> str:
    names = sorted(names, key=_natural)
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def reference_shape(kind: str, shape: tuple) -> tuple:
    """The reference's shape of a tensor whose purenet leaf has `shape`."""
    if kind == "linear":
        return tuple(reversed(shape))
    if kind == "conv":  # (KH, KW, I, O) -> (O, I, KH, KW)
        return (shape[3], shape[2], shape[0], shape[1])
    if kind.startswith("lead"):
        return (1,) * int(kind[4:]) + tuple(shape)
    return tuple(shape)


def to_ours(kind: str, a: np.ndarray) -> np.ndarray:
    """The reference's tensor -> purenet's layout."""
    if kind == "linear":
        return a.T
    if kind == "conv":
        return a.transpose(2, 3, 1, 0)
    if kind.startswith("lead"):
        return a.reshape(a.shape[int(kind[4:]):])
    return a


def to_reference(kind: str, a: np.ndarray) -> np.ndarray:
    """purenet's leaf -> the reference's layout (a contiguous copy)."""
    if kind == "linear":
        a = a.T
    elif kind == "conv":
        a = a.transpose(3, 2, 0, 1)
    elif kind.startswith("lead"):
        a = a.reshape(reference_shape(kind, a.shape))
    return np.ascontiguousarray(a)


def _paths(config_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A file, or a directory holding model.safetensors -> (the file, the config.json beside it)."""
    path = pathlib.Path(config_path)
    if path.is_dir():
        path = path / "model.safetensors"
    return path, path.parent / "config.json"


def read(owner: str, path) -> tuple[dict[str, np.ndarray], dict]:
    """-> (tensors {name: array}, the reference's config dict: the file's metadata entry, else config.json
    beside the file, else {})."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    file, config_json = _paths(path)
    if not file.is_file():
        fail(owner, f"no safetensors file at {str(file)!r}", FileNotFoundError)
    try:  # the file is memory-mapped: a 124M-parameter GPT-2 is not read twice into memory
        with safe_open(str(file), framework="np") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, ValueError, OSError) as error:
        fail(owner, f"{str(file)!r} is not a readable safetensors file ({error})")
    if CONFIG_KEY in metadata:
        return tensors, json.loads(metadata[CONFIG_KEY])
    if config_json.is_file():
        return tensors, json.loads(config_json.read_text())
    return tensors, {}


def _template(family: Family, config, shapes: dict) -> tuple[Layer, Any]:
    model = family.model(config)
    shapes = jax.eval_shape(lambda k: model.init(k, family.in_shape(config, shapes))[1:], jax.random.PRNGKey(0))
    return model, {"params": shapes[0], "state": shapes[1]}


def _leaf(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _select(owner: str, family: Family, tensors: dict, ignore) -> dict:
    """The tensors by canonical name, without buffers and ignored names; aliases checked against their
    entry and dropped."""
    selected = {}
    for name, value in tensors.items():
        if any(name.startswith(prefix) for prefix in ignore):
            continue
        canonical = family.canonical(name)
        if canonical in selected:
            fail(owner, f"tensor {name!r} appears twice in the file (as {canonical!r})")
        selected[canonical] = value
    return {name: value for name, value in selected.items() if not family.buffers(name)}


def from_tensors(family: Family, tensors: dict[str, np.ndarray], config, *, ignore=(), dtype=None):
    """The reference's tensors -> purenet's (params, state) for `config`, checking names, shapes and dtypes;
    `ignore`: name prefixes deliberately left out (a head this model does not have)."""
    owner = family.owner
    tensors = _select(owner, family, tensors, ignore)
    entries = family.entries(config)
    expected = {e.name for e in entries}
    for alias, target in family.aliases(config).items():  # a tied tensor stored twice must be stored equal
        if alias in tensors:
            if target in tensors and not np.array_equal(tensors[alias], tensors[target]):
                fail(owner, f"tensor {alias!r} should be tied to {target!r} (the same parameter), but differs")
            tensors.setdefault(target, tensors[alias])
            del tensors[alias]
    unknown, missing = set(tensors) - expected, expected - set(tensors)
    if unknown or missing:
        fail(owner, "the file does not hold this architecture's tensors: "
                    + (f"missing {len(missing)}: {_listing(missing)}" if missing else "nothing missing")
                    + (f"; unknown {len(unknown)}: {_listing(unknown)}" if unknown else "; nothing unknown")
                    + (" (pass ignore=(prefix, ...) to leave tensors out deliberately)" if unknown else ""))
    _, template = _template(family, config, {name: a.shape for name, a in tensors.items()})
    first = None
    for entry in entries:
        a, want = tensors[entry.name], reference_shape(entry.kind, _leaf(template, entry.path).shape)
        if a.dtype.type not in _FLOATS:
            fail(owner, f"tensor {entry.name!r} has dtype {a.dtype}, expected a float (float16, float32, float64)")
        if first is None:
            first = entry
        elif a.dtype != tensors[first.name].dtype:
            fail(owner, f"tensor {entry.name!r} has dtype {a.dtype}, unlike {first.name!r} "
                        f"({tensors[first.name].dtype})")
        if tuple(a.shape) != want:
            fail(owner, f"tensor {entry.name!r} has shape {tuple(a.shape)}, expected {want} for this config")
    by_path = {entry.path: entry for entry in entries}

    def fill(path, leaf):
        key = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        if key not in by_path:
            fail(owner, f"internal: no tensor fills {jax.tree_util.keystr(path)}")
        entry = by_path[key]
        a = to_ours(entry.kind, tensors[entry.name])
        return jnp.asarray(a, dtype or a.dtype)

    trees = jax.tree_util.tree_map_with_path(fill, template)
    return trees["params"], trees["state"]


def to_tensors(family: Family, params, state, config) -> dict[str, np.ndarray]:
    """purenet's (params, state) -> the reference's tensors {name: array}, with the buffers its
    state_dict needs."""
    trees = {"params": params, "state": state}
    tensors = {}
    for entry in family.entries(config):
        try:
            leaf = _leaf(trees, entry.path)
        except (KeyError, IndexError, TypeError):
            fail(family.owner, f"params/state have no leaf {entry.path[1:]} for tensor {entry.name!r}: "
                               f"not this config's tree")
        tensors[entry.name] = to_reference(entry.kind, np.asarray(leaf))
    return tensors | family.extra(config)


def _config(family: Family, tensors: dict, reference_config: dict, overrides: dict | None, ignore=()):
    shapes = {family.canonical(n): tuple(a.shape) for n, a in tensors.items()
              if not any(n.startswith(p) for p in ignore)}
    return family.config(shapes, reference_config, overrides or {})


def read_config(family: Family, path, *, overrides: dict | None = None, ignore=()):
    """The purenet config of a file: sizes from its shapes, the rest from its reference config."""
    return _config(family, *read(family.owner, path), overrides, ignore)


def load(family: Family, path, *, overrides: dict | None = None, ignore=(), dtype=None):
    """-> (model, params, state) from a safetensors file (or a directory holding model.safetensors and
    config.json)."""
    tensors, reference_config = read(family.owner, path)
    config = _config(family, tensors, reference_config, overrides, ignore)
    params, state = from_tensors(family, tensors, config, ignore=ignore, dtype=dtype)
    return family.model(config), params, state


def save(family: Family, path, params, state, config, *, config_json: bool = False) -> None:
    """Write the reference's tensors to `path` atomically (a temporary file beside it, then a rename), the
    reference's config dict in the file's metadata; with `config_json`, also config.json beside it."""
    from safetensors.numpy import save as serialize

    tensors = to_tensors(family, params, state, config)
    reference_config = family.reference_config(config, {name: a.shape for name, a in tensors.items()})
    data = serialize(tensors,
                     metadata={"format": "pt", CONFIG_KEY: json.dumps(reference_config, sort_keys=True)})
    path = pathlib.Path(os.fspath(path))
    with atomic_write(path) as f:
        f.write(data)
    if config_json:
        with atomic_write(path.parent / "config.json") as f:
            f.write((json.dumps(reference_config, indent=2, sort_keys=True) + "\n").encode())


def setting(owner: str, reference_config: dict, overrides: dict, name: str, key: str, default: Any = None) -> Any:
    """One hyperparameter that shapes cannot tell: `overrides[name]`, else the reference config's `key`,
    else `default`; fails naming both when none is given."""
    if overrides.get(name) is not None:
        return overrides[name]
    if key in reference_config and reference_config[key] is not None:
        return reference_config[key]
    if default is None:
        fail(owner, f"{name} is not in the file's metadata nor in a config.json beside it: pass {name}= "
                    f"(the reference config's {key!r})")
    return default


def count(shapes: dict, pattern: str) -> int:
    """How many consecutive indices i from 0 have a tensor name matching pattern.format(i=i)."""
    i = 0
    while any(re.fullmatch(pattern.format(i=i), name) for name in shapes):
        i += 1
    return i


def shape_of(owner: str, shapes: dict, name: str) -> tuple:
    if name not in shapes:
        fail(owner, f"the file has no tensor {name!r}, which this architecture needs")
    return shapes[name]


ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu",
               "silu": "silu", "swish": "silu", "tanh": "tanh"}  # the reference's hidden_act -> ours


def activation(owner: str, name: str) -> str:
    if name not in ACTIVATIONS:
        fail(owner, f"activation {name!r} has no purenet counterpart; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def reference_activation(name: str) -> str:
    return {"gelu_exact": "gelu", "gelu": "gelu_new"}.get(name, name)
