"""purenet: a functional neural-network library on JAX where every gradient is written by hand.

`import purenet as pn` gives every public name: the contract and the combinators, every layer, losses,
training and checkpoints, and as modules the optimizers (`pn.optim`), data (`pn.data`), the model zoo
(`pn.models`), reference weights in and out (`pn.interop`), mixed precision (`pn.precision`: `Policy`,
`with_policy`) and the checker (`pn.check`). The modules group them by role: core (the contract),
combinators (serial, parallel, residual, the tape), ops (paired primitives), layers/, losses, models/,
interop/, optim/, training/, data/, check.
"""

from purenet import check, data, debug, initializers, interop, models, ops, optim, precision
from purenet.combinators import Tape, at, identity, parallel, residual, select, serial
from purenet.core import (Decode, Layer, Loss, can_decode, elementwise, init_model, is_differentiable, no_decode,
                          positionwise, stateless, tree_add, zero_cotangent)
from purenet.layers import *  # noqa: F403 (every layer: purenet.layers.__all__)
from purenet.losses import (TokenTargets, masked_softmax_cross_entropy, mean_squared_error,
                            sigmoid_binary_cross_entropy, softmax_cross_entropy,
                            softmax_cross_entropy_with_targets)
from purenet.optim import schedules
from purenet.precision import Policy, with_policy
from purenet.training import (Checkpoint, CorruptCheckpointError, FitResult, NonFiniteError, checkpoint, fit,
                              grad_step, load_checkpoint, locate_nonfinite, make_eval_step, make_train_step, metrics,
                              save_checkpoint)

__version__ = "0.2.0"
