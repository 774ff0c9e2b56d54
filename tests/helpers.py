"""Helpers shared by several test modules: loading an experiment script, fake MNIST files, PNG checks."""

import importlib.util
import pathlib
import sys

import numpy as np

from purenet.data import write_idx

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_experiment(name: str):
    """Import experiments/<name>.py under a private module name, with experiments/ importable (the
    scripts import their shared `common` module from there)."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.append(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_png(path: pathlib.Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def write_fake_mnist(directory: pathlib.Path, num_train: int, num_test: int, seed: int = 0) -> None:
    """Four gzipped IDX files with MNIST's names: random uint8 images (N, 28, 28) and labels 0..9."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count).astype(np.uint8))
