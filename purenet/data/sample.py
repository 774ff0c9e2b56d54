"""The shipped offline MNIST sample: 5,000 real digits, 500 per class (provenance in MNIST_SAMPLE.md);
full MNIST instead where its files are found; images as float arrays for a model."""

from __future__ import annotations

import importlib.resources
import os

import numpy as np

from purenet._checks import fail, is_int
from purenet.data.download import load_mnist

SAMPLE_FILE = "mnist_sample.npz"
NUM_CLASSES = 10
PER_CLASS = 500


def load_mnist_sample(*, num_train: int = 4000, num_test: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """A stratified, seeded train/test split of the shipped sample (num_train / 10 and num_test / 10
    digits of each class, shuffled within each split), no network needed.

    Returns {"x_train": uint8 (num_train, 28, 28), "y_train": int32 (num_train,), "x_test": uint8
    (num_test, 28, 28), "y_test": int32 (num_test,)}.
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test)):
        if not is_int(value) or value < 0 or value % NUM_CLASSES:
            fail("load_mnist_sample", f"{arg} must be a non-negative multiple of {NUM_CLASSES}, "
                                      f"got {arg}={value!r}")
    train_per_class, test_per_class = num_train // NUM_CLASSES, num_test // NUM_CLASSES
    if train_per_class + test_per_class > PER_CLASS:
        fail("load_mnist_sample", f"num_train + num_test must be <= {NUM_CLASSES * PER_CLASS}, "
                                  f"got {num_train} + {num_test}")
    with importlib.resources.files("purenet.data").joinpath(SAMPLE_FILE).open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"].astype(np.int32)

    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(members[:train_per_class])
        test_idx.append(members[train_per_class:train_per_class + test_per_class])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return {"x_train": images[train_idx], "y_train": labels[train_idx],
            "x_test": images[test_idx], "y_test": labels[test_idx]}


def load_mnist_or_sample(data_dir=None) -> tuple[dict[str, np.ndarray], str]:
    """Full MNIST if its four files are found (in `data_dir`, else the cache; see `load_mnist`), else
    the shipped sample's default split. -> (arrays as `load_mnist_sample` returns them, a description
    of the source such as "the shipped offline MNIST sample (4,000 train / 1,000 test)"). A `data_dir`
    that is not a directory fails (a typo must not fall back to the sample); an existing one without the
    files falls back, and the description says so."""
    if data_dir is not None and not os.path.isdir(data_dir):
        fail("load_mnist_or_sample", f"data_dir={os.fspath(data_dir)!r} is not a directory", FileNotFoundError)
    try:
        data, source = load_mnist("mnist", data_dir=data_dir), "full MNIST"
    except FileNotFoundError:
        data, source = load_mnist_sample(), "the shipped offline MNIST sample"
    return data, f"{source} ({len(data['y_train']):,} train / {len(data['y_test']):,} test)"


def to_float_images(images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """uint8 images (N, H, W) -> float32 (N, H, W, 1) scaled to [0, 1], then (x - mean) / std."""
    return ((images.astype(np.float32) / 255.0 - mean) / std)[..., None]
