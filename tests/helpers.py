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


def random_init(model, in_shape, dtype=np.float32, *, scale: float = 0.5, seed: int = 0) -> tuple:
    """-> (out_shape, params, state) of `init_model(model, key, in_shape, dtype=dtype)`'s form: every param
    drawn N(0, scale^2) by numpy; state's floating-point leaves are running statistics (BatchNorm's):
    variances ("var") 1, the others 0; integer state 0."""
    out_shape, params, state = traced_init(model, in_shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(dtype), params)

    def statistic(path, s):
        if not np.issubdtype(s.dtype, np.floating):
            return np.zeros(s.shape, s.dtype)
        return np.full(s.shape, 1.0 if jax.tree_util.keystr(path).endswith("['var']") else 0.0, dtype)

    return out_shape, params, jax.tree_util.tree_map_with_path(statistic, state)


def fan_in_init(model, in_shape, dtype=np.float32, *, seed: int = 0, bias_scale: float = 0.0) -> tuple:
    """-> (out_shape, params, state) like `random_init`, drawn at the scales of the zoo's initializers,
    for a model that must compute something (train, or decode tokens that depend on the source): every
    LayerNorm gamma 1; other 1-D leaves (biases, beta) N(0, bias_scale^2), 0 by default; embedding tables
    ("embed" in the path) N(0, 1 / F); other kernels LeCun's N(0, 1 / fan_in), fan_in = the product of
    all axes but the last. For stateless models."""
    out_shape, shapes, state = traced_init(model, in_shape)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['gamma']"):
            return np.ones(s.shape, dtype)
        if len(s.shape) == 1:
            return (bias_scale * rng.standard_normal(s.shape)).astype(dtype) if bias_scale else np.zeros(s.shape, dtype)
        fan_in = s.shape[-1] if "embed" in name else int(np.prod(s.shape[:-1]))
        return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(dtype)

    return out_shape, jax.tree_util.tree_map_with_path(draw, shapes), state


def random_params(model, in_shape, dtype, *, scale: float = 0.5, seed: int = 0) -> tuple:
    """(params, state) of `random_init`: every param drawn N(0, scale^2) in `dtype` by numpy, the init
    only traced, so a gradient check compiles one program, not the init's ops one by one."""
    return random_init(model, in_shape, dtype, scale=scale, seed=seed)[1:]
