"""Helpers shared by several test modules: loading an experiment script, the template to load its
checkpoint, fake MNIST files, PNG checks, the fenced code blocks of a Markdown file (README.md, the
documentation's guides)."""

import importlib.util
import pathlib
import re
import sys

import jax
import numpy as np

from purenet.core import init_model
from purenet.data import write_idx
from purenet.training import Checkpoint

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


def checkpoint_template(model, in_shape, optimizer, seed: int) -> Checkpoint:
    """The `like=` template for `load_checkpoint` of a run of `model` seeded by `seed` (`fit`, `run_steps`
    with key PRNGKey(seed)) with `optimizer`."""
    _, params, state = init_model(model, jax.random.PRNGKey(seed), in_shape)
    return Checkpoint(params, state, optimizer.init(params), 0, jax.random.PRNGKey(seed))


FENCE = re.compile(r"^```(?P<language>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)


def code_blocks(markdown: str, language: str | None = None) -> list[tuple[str, str, str]]:
    """The fenced blocks of a Markdown text, in order, as (language, info string, body); only those of
    `language` when given."""
    blocks = [(m["language"], m["info"].strip(), m["body"]) for m in FENCE.finditer(markdown)]
    return [b for b in blocks if language is None or b[0] == language]


def is_png(path: pathlib.Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def write_fake_mnist(directory: pathlib.Path, num_train: int, num_test: int, seed: int = 0) -> None:
    """Four gzipped IDX files with MNIST's names: random uint8 images (N, 28, 28) and labels 0..9."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count).astype(np.uint8))


def traced_init(model, in_shape, key=None) -> tuple:
    """`model.init` traced (jax.eval_shape), not run: -> (out_shape, params, state), the arrays as
    ShapeDtypeStructs. Run eagerly, `init` compiles each of its random draws as a program of its own;
    where the trees and shapes are the claim, or numpy draws the values, tracing is all it takes."""
    declared = []

    def init(k):
        out_shape, params, state = model.init(k, in_shape)
        declared.append(out_shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.PRNGKey(0) if key is None else key)
    return declared[0], params, state


def random_params(model, in_shape, dtype, *, scale: float = 0.5, seed: int = 0) -> tuple:
    """(params, state) of `model.init`'s trees for `in_shape`, every param drawn N(0, scale^2) in `dtype`
    by numpy: the init is only traced (`traced_init`), so a gradient check compiles one program, not
    the init's ops one by one. For stateless models (state has no leaves)."""
    _, shapes, state = traced_init(model, in_shape)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(dtype), shapes), state
