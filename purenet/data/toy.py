"""Synthetic toy sets for quick checks: 2-D classification and 1-D regression, seeded numpy."""

from __future__ import annotations

import numpy as np

from purenet._checks import check_int, fail

CLUSTER_CENTERS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # (4, 2)


def _check(name: str, num_samples: int, noise: float) -> None:
    check_int(name, "num_samples", num_samples, 1)
    if not noise >= 0:
        fail(name, f"noise must be >= 0, got noise={noise!r}")


def four_clusters(num_samples: int, *, seed: int = 0, noise: float = 0.3) -> dict[str, np.ndarray]:
    """Points around the 4 corners (+-1, +-1), Gaussian with std `noise`; classes as balanced as
    num_samples allows, in shuffled order. Returns {"x": float32 (N, 2), "y": int32 (N,) in 0..3}."""
    _check("four_clusters", num_samples, noise)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_samples) % len(CLUSTER_CENTERS)).astype(np.int32)  # (N,)
    x = CLUSTER_CENTERS[y] + noise * rng.standard_normal((num_samples, 2))  # (N, 2)
    return {"x": x.astype(np.float32), "y": y}


def regression_1d(num_samples: int, *, seed: int = 0, noise: float = 0.1) -> dict[str, np.ndarray]:
    """y = sin(3 x) + noise * standard normal, x uniform in [-1, 1].
    Returns {"x": float32 (N, 1), "y": float32 (N, 1)}."""
    _check("regression_1d", num_samples, noise)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (num_samples, 1))  # (N, 1)
    y = np.sin(3.0 * x) + noise * rng.standard_normal((num_samples, 1))  # (N, 1)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}


def sorting_task(length: int = 6, digits: int = 3, *, test_fraction: float = 0.25,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """minGPT's sorting demo: every sequence of `length` digits from {0, .., digits - 1}, split at random
    into disjoint train and test sets of distinct sequences (no sequence in both).
    Returns (train (A, length), test (B, length)) int32, B = round(test_fraction * digits**length)."""
    check_int("sorting_task", "length", length, 1)
    check_int("sorting_task", "digits", digits, 2)
    if digits ** length > 10 ** 6:
        fail("sorting_task", f"digits**length must be at most 1e6 (every sequence is enumerated), "
                             f"got {digits}**{length} = {digits ** length}")
    if not 0 < test_fraction < 1:
        fail("sorting_task", f"test_fraction must be in (0, 1), got {test_fraction!r}")
    grid = np.indices((digits,) * length).reshape(length, -1).T.astype(np.int32)  # (digits**length, length)
    grid = grid[np.random.default_rng(seed).permutation(len(grid))]
    num_test = max(1, round(test_fraction * len(grid)))
    return grid[num_test:], grid[:num_test]
