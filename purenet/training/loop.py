"""Training: a jitted step built only from handwritten VJPs, an eval step, and `fit` over epochs.

A batch is a dict {"x": inputs (N, ...), "y": targets}: integer labels (N,) for classification, or an
array the loss compares with the model's output. Metrics are mean-reduced scalars per batch: always
"loss", plus "accuracy" by default when "y" holds integer labels and the output has one more axis
(logits (N, K)). Custom metrics: a dict {name: fn(outputs, targets) -> scalar}.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from purenet._checks import check_positive, fail
from purenet.core import Layer, Loss, PyTree
from purenet.data.batching import batches
from purenet.optim.transforms import apply_updates
from purenet.training.checkpoint import save_checkpoint
from purenet.training.metrics import accuracy

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]


def _metrics(value, outputs, targets, metrics: Metrics | None) -> dict[str, jax.Array]:
    if metrics is None:
        is_labels = (hasattr(targets, "dtype") and jnp.issubdtype(targets.dtype, jnp.integer)
                     and outputs.ndim == targets.ndim + 1)
        metrics = {"accuracy": accuracy} if is_labels else {}
    return {"loss": value} | {name: fn(outputs, targets) for name, fn in metrics.items()}


def grad_step(model: Layer, loss: Loss, params: PyTree, state: PyTree, batch: Batch, key,
              train: bool = True):
    """The handwritten gradient of `loss(model(x), y)` w.r.t. params: model.vjp, loss.vjp, pullbacks.

    -> (loss_value (), dparams (tree of params), new_state, outputs (N, ...)). Pure; jit the caller."""
    outputs, new_state, pullback = model.vjp(params, state, batch["x"], key=key, train=train)
    value, loss_pullback = loss.vjp(outputs, batch["y"])
    dparams, _ = pullback(loss_pullback(jnp.ones_like(value)))
    return value, dparams, new_state, outputs


def make_train_step(model: Layer, loss: Loss, optimizer, *, metrics: Metrics | None = None) -> Callable:
    """A jitted, pure `step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)`.

    `optimizer` has optax's `init`/`update(grads, opt_state, params)` interface; `key` feeds the model's
    randomness (Dropout). Uses no JAX autodiff: only model.vjp, loss.vjp and the optimizer."""

    def step(params, state, opt_state, batch, key):
        value, dparams, state, outputs = grad_step(model, loss, params, state, batch, key, train=True)
        updates, opt_state = optimizer.update(dparams, opt_state, params)
        params = apply_updates(params, updates)
        return params, state, opt_state, _metrics(value, outputs, batch["y"], metrics)

    return jax.jit(step)


def make_eval_step(model: Layer, loss: Loss, *, metrics: Metrics | None = None) -> Callable:
    """A jitted `eval_step(params, state, batch) -> metrics` in eval mode (train=False, no key)."""

    def eval_step(params, state, batch):
        outputs, _ = model.apply(params, state, batch["x"], key=None, train=False)
        return _metrics(loss.apply(outputs, batch["y"]), outputs, batch["y"], metrics)

    return jax.jit(eval_step)


# --------------------------------------------------------------------------------------------- fit


class FitResult(NamedTuple):
    """`fit`'s result; history maps "loss", "accuracy", "val_loss", ... to one float per epoch run."""

    params: PyTree
    state: PyTree
    opt_state: PyTree
    history: dict[str, list[float]]


def _check_data(data, name: str) -> dict:
    """-> {"x", "y"} of `data`, failing unless both are present with the same nonzero length."""
    if not isinstance(data, Mapping) or not {"x", "y"} <= set(data):
        fail("fit", f"{name} must be a dict with keys 'x' and 'y', got {type(data).__name__}")
    x, y = data["x"], data["y"]
    if len(x) != len(y) or len(x) == 0:
        fail("fit", f"{name}['x'] and {name}['y'] need the same nonzero length, got {len(x)} and {len(y)}")
    return {"x": x, "y": y}


def _sizes(data: dict, batch_size: int) -> list[int]:
    n = len(data["x"])
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _evaluate(eval_step, params, state, data: dict, batch_size: int) -> dict[str, float]:
    """Mean metrics over `data` in order, batch by batch, weighted by batch size."""
    results = [eval_step(params, state, batch) for batch in batches(data, batch_size, shuffle=False)]
    return _weighted_mean(results, _sizes(data, batch_size))


def _weighted_mean(results: list[dict], sizes: list[int]) -> dict[str, float]:
    results, weights = jax.device_get(results), np.asarray(sizes, np.float64) / sum(sizes)
    return {name: float(np.dot(weights, [r[name] for r in results])) for name in results[0]}


def fit(model: Layer, loss: Loss, optimizer, params: PyTree, state: PyTree, train_data: Batch, *,
        epochs: int, batch_size: int, seed: int, val_data: Batch | None = None,
        early_stopping: int | None = None, progress: bool = True, opt_state: PyTree | None = None,
        checkpoint_dir: str | os.PathLike | None = None, metrics: Metrics | None = None) -> FitResult:
    """Train for `epochs` over mini-batches of `train_data` ({"x": (N, ...), "y": (N, ...)}).

    Batches come from `purenet.data.batching.batches` (a permutation seeded by (seed, epoch)); the
    model's key at step t is `fold_in(PRNGKey(seed), t)`: a seed fixes the run. The last smaller batch
    is kept: it compiles once more, then its shape repeats every epoch. After each epoch: evaluate
    `val_data` (if given), save `checkpoint_dir/checkpoint.npz` (if given), append to history.
    `early_stopping=patience` stops after `patience` epochs without a lower val loss (train loss
    without val_data) and returns the best epoch's params, state and opt_state.
    `opt_state=None` starts from `optimizer.init(params)`. -> FitResult."""
    check_positive("fit", "epochs", epochs)
    check_positive("fit", "batch_size", batch_size)
    if early_stopping is not None:
        check_positive("fit", "early_stopping", early_stopping)
    train_data = _check_data(train_data, "train_data")
    val_data = None if val_data is None else _check_data(val_data, "val_data")
    train_step = make_train_step(model, loss, optimizer, metrics=metrics)
    eval_step = make_eval_step(model, loss, metrics=metrics) if val_data is not None else None
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)

    base_key, sizes = jax.random.PRNGKey(seed), _sizes(train_data, batch_size)
    history: dict[str, list[float]] = {}
    best, best_value, best_epoch, step = (params, state, opt_state), np.inf, 0, 0
    for epoch in range(epochs):
        results = []
        shuffled = batches(train_data, batch_size, seed=seed, epoch=epoch)
        with tqdm(shuffled, total=len(sizes), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                  unit="batch") as bar:
            for batch in bar:
                key = jax.random.fold_in(base_key, step)
                params, state, opt_state, batch_metrics = train_step(params, state, opt_state, batch, key)
                results.append(batch_metrics)
                step += 1
                if progress and len(results) % 10 == 0:
                    bar.set_postfix({k: f"{float(v):.4f}" for k, v in batch_metrics.items()})
            epoch_metrics = _weighted_mean(results, sizes)
            if eval_step is not None:
                val = _evaluate(eval_step, params, state, val_data, batch_size)
                epoch_metrics |= {f"val_{k}": v for k, v in val.items()}
            bar.set_postfix({k: f"{v:.4f}" for k, v in epoch_metrics.items()})
        for name, value in epoch_metrics.items():
            history.setdefault(name, []).append(value)
        if checkpoint_dir is not None:
            save_checkpoint(os.path.join(checkpoint_dir, "checkpoint.npz"), params=params, state=state,
                            opt_state=opt_state, step=step, key=base_key)
        if early_stopping is not None:
            monitored = epoch_metrics["val_loss" if eval_step is not None else "loss"]
            if monitored < best_value:
                best, best_value, best_epoch = (params, state, opt_state), monitored, epoch
            elif epoch - best_epoch >= early_stopping:
                break
    if early_stopping is not None:
        params, state, opt_state = best
    return FitResult(params, state, opt_state, history)
