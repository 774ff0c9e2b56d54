"""Training by role: `step` (the pure, jitted step builders made only of handwritten VJPs), `loop` (the one
step-based loop, `run_steps`), `fit` (epochs over a dataset, and its guards), `matched` (set prediction,
the target matched on the host), `parallel`, `checkpoint` (training checkpoints), `weights` (params and
state alone, safetensors or npz), `metrics`."""

from purenet.training import checkpoint, metrics, parallel
from purenet.training.checkpoint import Checkpoint, CorruptCheckpointError, load_checkpoint, save_checkpoint
from purenet.debug import NonFiniteError
from purenet.training.fit import FitResult, fit
from purenet.training.loop import Run, StopTraining, run_steps
from purenet.training.matched import fit_matched, make_matched_step, make_predict
from purenet.training.step import data_parallel_grad, grad_step, locate_nonfinite, make_eval_step, make_train_step
from purenet.training.weights import load_weights, save_weights

__all__ = ["Checkpoint", "CorruptCheckpointError", "FitResult", "NonFiniteError", "Run", "StopTraining", "checkpoint",
           "data_parallel_grad", "fit", "fit_matched", "grad_step", "load_checkpoint", "load_weights",
           "locate_nonfinite", "make_eval_step", "make_matched_step", "make_predict", "make_train_step", "metrics",
           "parallel", "run_steps", "save_checkpoint", "save_weights"]
