"""Non-finite values: the error `fit`'s guard raises, and an opt-in debug mode that names the first layer
whose output or gradient holds a NaN or an infinity.

Inside `with debug_nonfinite():`, the combinators (`serial`, `parallel`, `residual`, `at`) and the
`Tape` that models run their children on check every child's output as the forward pass runs and every
child's (dparams, dx) as the pullbacks run, and raise `NonFiniteLayerError` at the first non-finite one,
with the path of children down to it (a NaN in a GPT's attention: `child 'body' (Serial) > child
'blocks' (Serial) > child 0 (EncoderBlock) > ... > child 'attn' (MultiHeadAttention): non-finite
output`). Only concrete values can be checked: run the model eagerly (not under `jax.jit`; traced
values are skipped).
`purenet.training.locate_nonfinite` does that for one training step; `fit(..., debug_nonfinite=True)`
calls it on the step where the loss or the parameters first become non-finite.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import is_concrete

_ACTIVE = contextvars.ContextVar("purenet_debug_nonfinite", default=False)


class NonFiniteError(FloatingPointError):
    """A NaN or an infinity where purenet checks for one (fit's loss guard, the debug mode)."""


class NonFiniteLayerError(NonFiniteError):
    """The first layer whose output or gradient is non-finite; `path` names the children down to it."""

    def __init__(self, layer: str, what: str, detail: str):
        super().__init__(layer, what, detail)
        self.path, self.layer, self.what, self.detail = [], layer, what, detail

    def __str__(self) -> str:
        where = " > ".join([*self.path, self.layer])
        return f"{where}: non-finite {self.what} ({self.detail})"


@contextlib.contextmanager
def debug_nonfinite() -> Iterator[None]:
    """Within the block, combinators check their children's outputs and gradients (eager values only)."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def inside(child: str) -> Iterator[None]:
    """A combinator runs a child's apply, vjp or pullback within this: a NonFiniteLayerError raised there
    gets `child` prefixed to its path."""
    try:
        yield
    except NonFiniteLayerError as error:
        error.path.insert(0, child)
        raise


def nonfinite_leaf(tree: Any) -> str | None:
    """None if every concrete floating-point leaf of `tree` is finite, else a description of the first
    that is not (`['w']: 3 nan, 0 inf of 12 values`). Traced and integer leaves are skipped."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None or not is_concrete(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        values = np.asarray(leaf)
        if not np.all(np.isfinite(values)):
            name = jax.tree_util.keystr(path) or "value"
            return (f"{name}: {int(np.isnan(values).sum())} nan, {int(np.isinf(values).sum())} inf of "
                    f"{values.size} values")
    return None


def watch(layer: str, what: str, tree: Any) -> None:
    """In debug mode, raise NonFiniteLayerError if `tree` (a layer's output or gradient) is non-finite."""
    if _ACTIVE.get():
        detail = nonfinite_leaf(tree)
        if detail is not None:
            raise NonFiniteLayerError(layer, what, detail)
