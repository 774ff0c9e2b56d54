"""Training: the jitted step built only from handwritten VJPs and `fit`; metrics; checkpoints."""

from purenet.training import checkpoint, metrics, parallel
from purenet.training.checkpoint import Checkpoint, CorruptCheckpointError, load_checkpoint, save_checkpoint
from purenet.debug import NonFiniteError
from purenet.training.loop import FitResult, fit, grad_step, locate_nonfinite, make_eval_step, make_train_step

__all__ = ["Checkpoint", "CorruptCheckpointError", "FitResult", "NonFiniteError", "checkpoint", "fit", "grad_step",
           "load_checkpoint", "locate_nonfinite", "make_eval_step", "make_train_step", "metrics", "parallel",
           "save_checkpoint"]
