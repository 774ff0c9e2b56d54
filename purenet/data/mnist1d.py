"""MNIST-1D (Greydanus & Steinbach), generated locally by the `mnist1d` package, cached as .npz.

We call the package's generator (`mnist1d.data.make_dataset` on its templates), never `get_dataset`,
which may download a pickle. Generating the default 5,000 signals takes about 2.5 s on an idle core
(15 s on a busy one), so the arrays are cached in <cache root>/mnist1d/ (atomic write); a cache hit
takes milliseconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import random

import numpy as np

from purenet._checks import check_int, fail
from purenet._files import atomic_write
from purenet.data.download import cache_dir

NUM_CLASSES = 10


def _generate(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`num_samples` (a multiple of 10) shuffled signals (N, 40) and labels (N,), from the package's
    default arguments but `num_samples` and `seed`; the global `random`/`np.random` states it reseeds
    are restored afterwards."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        fail("load_mnist1d", f"needs the mnist1d package ({err}); install it with `pip install mnist1d`",
             ImportError)
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, 1.0  # we split ourselves
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        dataset = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return dataset["x"], dataset["y"]


def load_mnist1d(*, num_train: int = 4000, num_test: int = 1000, seed: int = 42,
                 data_dir: str | os.PathLike | None = None, cache: bool = True) -> dict[str, np.ndarray]:
    """MNIST-1D signals: {"x_train": float32 (num_train, 40), "y_train": int32 (num_train,), "x_test":
    float32 (num_test, 40), "y_test": int32 (num_test,)}.

    The defaults (5,000 signals, seed 42, first 4,000 for training) match the package's default dataset.
    With `cache`, the arrays are read from / written to `data_dir` (default: <cache root>/mnist1d).
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test), ("seed", seed)):
        check_int("load_mnist1d", arg, value, 0)
    if num_train + num_test == 0:
        fail("load_mnist1d", "num_train + num_test must be positive, got 0")
    num_samples = -(-(num_train + num_test) // NUM_CLASSES) * NUM_CLASSES  # generator makes N // 10 per class
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"  # _generate raises the ImportError that says how to install it
    directory = pathlib.Path(data_dir) if data_dir is not None else cache_dir() / "mnist1d"
    path = directory / f"mnist1d-{version}-n{num_samples}-seed{seed}.npz"
    if cache and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    else:
        x, y = _generate(num_samples, seed)
        x, y = x.astype(np.float32), y.astype(np.int32)  # (N, 40), (N,)
        if cache:
            with atomic_write(path) as f:
                np.savez(f, x=x, y=y)
    return {"x_train": x[:num_train], "y_train": y[:num_train],
            "x_test": x[num_train:num_train + num_test], "y_test": y[num_train:num_train + num_test]}
