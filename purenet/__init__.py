"""purenet: a functional neural-network library on JAX where every gradient is written by hand.

`import purenet as pn` gives every public name: the contract and the combinators, every layer, losses,
training and checkpoints, and as modules the optimizers (`pn.optim`), data (`pn.data`), the model zoo
(`pn.models`), reference weights in and out (`pn.interop`), mixed precision (`pn.precision`: `Policy`,
`with_policy`), per-step XLA options (`pn.compiler`) and the checker (`pn.check`; its bridge to `jax.grad`
is `pn.as_jax_function`), `pn.summary` (a model's table of shapes and parameters) and weights-only files
(`pn.save_weights`, `pn.load_weights`). The modules group them by role: core (the contract),
combinators (serial, parallel, residual, the tape), ops (paired primitives), layers/, losses, models/,
interop/, optim/, training/, data/, compiler, check.
"""

from purenet import check, compiler, data, debug, initializers, interop, models, ops, optim, precision
from purenet.check import as_jax_function
from purenet.combinators import Tape, at, identity, parallel, residual, select, serial
from purenet.core import (Decode, Layer, Loss, can_decode, elementwise, init_model, is_differentiable, no_decode,
                          positionwise, stateless, tree_add, zero_cotangent)
from purenet.layers import *  # noqa: F403 (every layer: purenet.layers.__all__)
from purenet.losses import (TokenTargets, masked_softmax_cross_entropy, mean_squared_error,
                            sigmoid_binary_cross_entropy, softmax_cross_entropy,
                            softmax_cross_entropy_with_targets)
from purenet.optim import schedules
from purenet.precision import Policy, with_policy
from purenet.summaries import summary
from purenet.training import (Checkpoint, CorruptCheckpointError, FitResult, NonFiniteError, checkpoint, fit,
                              grad_step, load_checkpoint, load_weights, locate_nonfinite, make_eval_step,
                              make_train_step, metrics, save_checkpoint, save_weights)

__version__ = "0.2.0"


def _readable_signatures() -> None:
    """A NamedTuple defined under `from __future__ import annotations` keeps its field types as
    `ForwardRef('int')` in its constructor's annotations, which `help()` shows; make them the plain
    strings every other signature shows (`init: 'Callable[...]'`)."""
    import sys  # noqa: PLC0415
    import typing  # noqa: PLC0415

    for name, module in list(sys.modules.items()):
        if name != "purenet" and not name.startswith("purenet."):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, type) and issubclass(obj, tuple) and obj.__module__ == name:
                for cls in obj.__mro__:
                    notes = getattr(cls.__new__, "__annotations__", {})
                    for field, note in notes.items():
                        if isinstance(note, typing.ForwardRef):
                            notes[field] = note.__forward_arg__


_readable_signatures()
