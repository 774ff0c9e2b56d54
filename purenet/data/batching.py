"""Minibatches from a dict of equally long arrays (or pytrees of them: `{"x": (ids, mask), "y": labels}`):
a seeded permutation per epoch, optional remainder."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import numpy as np

from purenet._checks import check_int, fail


def leading_lengths(arrays: Mapping[str, Any]) -> dict[str, int | None]:
    """The leading length of every array in `arrays` (values may be pytrees of arrays), keyed by the
    leaf's name (`x[0]`, `x['mask']`, `y`); None for a leaf with no axis."""
    lengths = {}
    for name, value in arrays.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            lengths[name + jax.tree_util.keystr(path)] = int(np.shape(leaf)[0]) if np.ndim(leaf) else None
    return lengths


def brief(mapping: Mapping, shown: int = 6) -> str:
    """`{k: v, ...}` of the first entries of a mapping, and how many more: a message stays short."""
    items = list(mapping.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:shown])
    return "{" + text + (f", ... ({len(items) - shown} more)" if len(items) > shown else "") + "}"


def num_batches(num_samples: int, batch_size: int, *, drop_remainder: bool = False) -> int:
    """How many batches `batches` yields for `num_samples` samples."""
    check_int("batches", "batch_size", batch_size, 1)
    return num_samples // batch_size if drop_remainder else -(-num_samples // batch_size)


def batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0, epoch: int = 0,
            shuffle: bool = True, drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts with the keys of `arrays`, each value (B, ...) sliced along the leading axis (every leaf
    of a value that is a pytree: `{"x": (ids, mask), "y": labels}`).

    With `shuffle`, the order is the permutation drawn from numpy's generator seeded by (seed, epoch):
    same (seed, epoch), same order; a new epoch, a new order. Every sample appears exactly once per
    epoch; the last batch is smaller, or dropped with `drop_remainder`. Works for numpy and jax arrays.
    """
    if not arrays:
        fail("batches", "arrays must be a non-empty dict of arrays")
    lengths = leading_lengths(arrays)
    if not lengths or None in lengths.values() or len(set(lengths.values())) != 1:
        fail("batches", f"arrays must share their leading length, got {brief(lengths)}")
    num_samples = next(iter(lengths.values()))
    count = num_batches(num_samples, batch_size, drop_remainder=drop_remainder)  # validates batch_size
    order = np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle else None
    return _iterate(dict(arrays), batch_size, count, order)


def _iterate(arrays, batch_size, count, order):
    """The generator behind `batches` (kept apart so that `batches` validates when called)."""
    for i in range(count):
        if order is None:
            part = slice(i * batch_size, (i + 1) * batch_size)
        else:
            part = order[i * batch_size:(i + 1) * batch_size]  # (B,)
        yield {name: jax.tree_util.tree_map(lambda a: a[part], value) for name, value in arrays.items()}
