"""Strict JAX for the tests: x64 on (float64 cases), implicit rank promotion raises; `key` and
`autodiff_forbidden` fixtures; hypothesis profiles.

Compiling many small XLA programs dominates the suite's time; at LLVM optimization level 0 they
compile about 3x faster (dot-product checks of Flatten and Dense: 0.6-1.5 s each instead of 1.6-4.9 s).
The tests compare within tolerances and both sides of each gradient comparison are compiled alike;
timing belongs to experiments/benchmark.py, which runs at the default level. An XLA_FLAGS that already
sets the level is kept as it is.
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after XLA_FLAGS: the CPU backend reads them when it starts)
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis draws the same examples on every run ('repeatable', the default), so CI tests what a local
# run tested. `pytest --hypothesis-profile=explore` draws new ones on each run, to hunt for bugs.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def autodiff_forbidden(monkeypatch):
    """JAX's autodiff entry points patched to raise, for run-time checks of the autodiff boundary."""

    def refuse(*args, **kwargs):
        raise AssertionError("JAX autodiff was called inside purenet")

    for name in ("grad", "value_and_grad", "vjp", "jvp", "linearize", "linear_transpose", "custom_vjp",
                 "custom_jvp"):
        monkeypatch.setattr(jax, name, refuse)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True, scope="module")
def fresh_compilation_caches():
    """Drop JAX's in-memory caches of compiled programs after each test module, so a worker's memory
    stays near one module's worth (about 3.4 GB per worker by the end of a run without this)."""
    yield
    jax.clear_caches()
