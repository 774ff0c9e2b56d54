"""Minibatches from a dict of equally long arrays: a seeded permutation per epoch, optional remainder."""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from purenet._checks import check_int, fail


def num_batches(num_samples: int, batch_size: int, *, drop_remainder: bool = False) -> int:
    """How many batches `batches` yields for `num_samples` samples."""
    check_int("batches", "batch_size", batch_size, 1)
    return num_samples // batch_size if drop_remainder else -(-num_samples // batch_size)


def batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0, epoch: int = 0,
            shuffle: bool = True, drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts with the keys of `arrays`, each value (B, ...) sliced along the leading axis.

    With `shuffle`, the order is the permutation drawn from numpy's generator seeded by (seed, epoch):
    same (seed, epoch), same order; a new epoch, a new order. Every sample appears exactly once per
    epoch; the last batch is smaller, or dropped with `drop_remainder`. Works for numpy and jax arrays.
    """
    if not arrays:
        fail("batches", "arrays must be a non-empty dict of arrays")
    lengths = {name: (value.shape[0] if np.ndim(value) else None) for name, value in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        fail("batches", f"arrays must share their leading length, got {lengths}")
    num_samples = next(iter(lengths.values()))
    count = num_batches(num_samples, batch_size, drop_remainder=drop_remainder)  # validates batch_size
    order = np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle else None
    return _iterate(dict(arrays), batch_size, count, order)


def _iterate(arrays, batch_size, count, order):
    """The generator behind `batches` (kept apart so that `batches` validates when called)."""
    for i in range(count):
        if order is None:
            yield {name: value[i * batch_size:(i + 1) * batch_size] for name, value in arrays.items()}
        else:
            index = order[i * batch_size:(i + 1) * batch_size]  # (B,)
            yield {name: value[index] for name, value in arrays.items()}
