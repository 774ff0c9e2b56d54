"""XLA compiler options per compiled step: a measured table per backend and jaxlib version, and a switch.

`jax.jit(fn, compiler_options={...})` hands XLA options to that one compiled program (XLA_FLAGS sets them
for the whole process). purenet's compiled entry points (`make_train_step`, `make_eval_step`, `generate`,
`greedy_search`, `beam_search`) take `compiler_options`:

- "auto" (the default): the rules of `MEASURED` for the default backend and this jaxlib's major.minor
  version; the first rule whose primitive the step's program holds gives its options (none match: no
  options). Decided once, at the first call, from the traced program. A version or backend not in the
  table gets no options: a set measured on one XLA may slow another.
- None: no options (a plain `jax.jit`).
- a dict {name: value}: exactly these XLA options (`xla_cpu_...`, `xla_gpu_...`), checked once with a
  one-op compile: an unknown name or a bad value raises, naming it.

A table rule whose option this jaxlib does not know is dropped with a warning. Options apply to a
top-level jit only, so a step called inside another `jax.jit` (its arguments traced) runs without them,
compiled as part of the outer program.

The table holds what was measured on whole training steps, each option set against none in one process
(`experiments/benchmark.py --sweep-options`; docs/performance.md, "Per-step XLA options", has the runs).
On the CPU, XLA hands products, convolutions and some fusions to YNNPACK by default; for a step holding a
convolution, YNNPACK for single products only (convolutions left to Eigen) took 0.73-0.85 of the time of
the LeNet-5 steps, 0.73-0.82 of a ResNet-14's and 0.93-0.95 of a ViT's on 32 x 32 x 3 images (2-core
AVX2 EPYC, two runs). Steps without a convolution keep the default: that set made the char-LSTM 1.14x
slower and YNNPACK off 1.42x, and no set moved the GPT step by more than 3% (oneDNN for products, not
offered: GPT 0.93 in one run, but it killed the process on some programs of an AVX-512 machine).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.extend as jex

from purenet._checks import fail

__all__ = ["Compiled", "check_options", "jit", "jit_per_model", "measured_options"]

Options = Mapping[str, Any]

#: (backend, jaxlib major.minor) -> rules (primitive name, options): the first rule whose primitive the
#: step's program holds applies. What was measured, on which machines: the module docstring.
MEASURED: dict[tuple[str, str], tuple[tuple[str, Options], ...]] = {
    # a step holding a convolution: YNNPACK for products only, one at a time; convolutions to Eigen
    ("cpu", "0.10"): (("conv_general_dilated",
                       {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),),
}

AUTO = "auto"


def _version() -> str:
    return ".".join(jax.lib.__version__.split(".")[:2])


@functools.lru_cache(maxsize=None)
def _unknown(backend: str, items: tuple) -> str | None:
    """None if XLA on `backend` (the default one) accepts the options `items` ((name, value) pairs), else
    its message."""
    del backend  # part of the cache's key
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(items)).lower(1.0).compile()
    except Exception as error:  # XLA's INVALID_ARGUMENT (a JaxRuntimeError) names the option
        return str(error).splitlines()[0]
    return None


def check_options(owner: str, compiler_options) -> dict | str | None:
    """`compiler_options` checked: "auto", None, or a dict of XLA options (compiled once with one op on
    the default backend; an unknown name or bad value raises a ValueError naming it) -> the same."""
    if compiler_options is None or compiler_options == AUTO:
        return compiler_options
    if not isinstance(compiler_options, Mapping) or not all(isinstance(k, str) for k in compiler_options):
        fail(owner, f"compiler_options must be 'auto', None or a dict of XLA options such as "
                    f"{{'xla_cpu_multi_thread_eigen': False}}, got {compiler_options!r}")
    options = dict(compiler_options)
    problem = _unknown(jax.default_backend(), tuple(sorted(options.items())))
    if problem is not None:
        fail(owner, f"XLA on {jax.default_backend()} (jaxlib {jax.lib.__version__}) does not take "
                    f"compiler_options={options!r}: {problem}")
    return options


def _primitives(jaxpr) -> set[str]:
    """The names of every primitive in `jaxpr` (a ClosedJaxpr or Jaxpr), sub-programs included."""
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jex.core.jaxprs_in_params(eqn.params):
            found |= _primitives(sub)
    return found


def measured_options(jaxpr) -> dict:
    """The options `MEASURED` gives the program `jaxpr` on the default backend with this jaxlib: the
    first rule whose primitive it holds, its unknown names dropped with a warning; {} when none matches."""
    backend = jax.default_backend()
    rules = MEASURED.get((backend, _version()), ())
    held = _primitives(jaxpr.jaxpr if hasattr(jaxpr, "jaxpr") else jaxpr) if rules else set()
    for primitive, options in rules:
        if primitive in held:
            kept = {}
            for name, value in options.items():
                problem = _unknown(backend, ((name, value),))
                if problem is None:
                    kept[name] = value
                else:
                    warnings.warn(f"purenet.compiler: the measured option {name}={value!r} is not taken by "
                                  f"this jaxlib ({jax.lib.__version__}): {problem}; compiled without it",
                                  stacklevel=3)
            return kept
    return {}


class Compiled:
    """`jax.jit(fn, **jit_kwargs)` with `compiler_options` ("auto", None or a dict; module docstring).

    Callable as the jitted function; `options` is None until the first call (or `lower`, `trace`) has
    decided "auto", then the dict of options in use ({} for none). `lower`/`trace` are the jitted
    function's, with those options."""

    def __init__(self, fn: Callable, compiler_options=AUTO, **jit_kwargs):
        self._fn, self._jit_kwargs = fn, jit_kwargs
        self._plain = jax.jit(fn, **jit_kwargs)
        self._chosen = None  # the jitted function to call outside a trace, once decided
        self.options = None
        if compiler_options is None:
            self._decided({})
        elif compiler_options != AUTO:
            self._decided(dict(compiler_options))
        functools.update_wrapper(self, fn)

    def _decided(self, options: dict) -> None:
        self.options = options
        self._chosen = jax.jit(self._fn, compiler_options=options, **self._jit_kwargs) if options else self._plain

    def _ready(self, args, kwargs):
        """The jitted function to run, "auto" decided from the program these arguments trace."""
        if self._chosen is None:
            self._decided(measured_options(self._plain.trace(*args, **kwargs).jaxpr))
        return self._chosen

    def __call__(self, *args, **kwargs):
        if self._chosen is self._plain:  # no options: nothing to keep out of an outer jit, no leaves to scan
            return self._plain(*args, **kwargs)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs))):
            return self._plain(*args, **kwargs)  # inside another jit: options belong to the outer program
        return self._ready(args, kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._ready(args, kwargs).lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._ready(args, kwargs).trace(*args, **kwargs)


def jit(fn: Callable, *, owner: str, compiler_options=AUTO, **jit_kwargs) -> Compiled:
    """`fn` compiled as `jax.jit(fn, **jit_kwargs)` with `compiler_options` checked for `owner`."""
    return Compiled(fn, check_options(owner, compiler_options), **jit_kwargs)


@functools.lru_cache(maxsize=64)
def _per_model(fn: Callable, model, options, static_argnames: tuple) -> Compiled:
    return Compiled(fn, dict(options) if isinstance(options, tuple) else options, static_argnames=static_argnames)


def jit_per_model(fn: Callable, model, *, owner: str, compiler_options=AUTO, static_argnames: tuple) -> Compiled:
    """`fn` (whose static argument `model` is one of `static_argnames`) compiled with `compiler_options`,
    one `Compiled` per model and options, so that "auto" decides for each model's own program."""
    options = check_options(owner, compiler_options)
    key = tuple(sorted(options.items())) if isinstance(options, dict) else options
    return _per_model(fn, model, key, tuple(static_argnames))
