"""Training: a jitted step built only from handwritten VJPs, an eval step, and `fit` over epochs.

A batch is a dict {"x": inputs (N, ...), "y": targets}: integer labels (N,) for classification, or an
array the loss compares with the model's output. Metrics are mean-reduced scalars per batch: always
"loss", plus "accuracy" by default when "y" holds integer labels and the output has one more axis
(logits (N, K)). Custom metrics: a dict {name: fn(outputs, targets) -> scalar}.

Non-finite values: `fit` checks the training loss every 10 steps (and at each epoch's end, with the
parameters) and stops with `NonFiniteError` naming the epoch, the step and the last good checkpoint,
which it never overwrites with non-finite parameters. `fit(..., debug_nonfinite=True)` checks every step
and replays the failing one eagerly to name the first layer whose output or gradient is non-finite
(`locate_nonfinite`, `purenet.debug`).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from purenet import debug
from purenet._checks import check_bool, check_positive, describe, fail
from purenet.combinators import checked_vjp
from purenet.core import Layer, Loss, PyTree
from purenet.data.batching import batches
from purenet.debug import NonFiniteError, NonFiniteLayerError
from purenet.optim.transforms import apply_updates
from purenet.training.checkpoint import save_checkpoint
from purenet.training import parallel
from purenet.training.metrics import accuracy

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]
LOG_EVERY = 10  # steps between the progress bar's updates and the loss guard's checks


_PARTS = {"model": (("apply", "vjp"), "a Layer"),
          "loss": (("apply", "vjp"), "a Loss such as losses.softmax_cross_entropy()"),
          "optimizer": (("init", "update"), "an Optimizer such as optim.adam(1e-3)")}


def _check_parts(owner: str, **parts) -> None:
    """Fail unless each of model, loss, optimizer has the methods training calls (a factory passed
    uncalled, `optim.adam` for `optim.adam(1e-3)`, is the usual slip)."""
    for what, value in parts.items():
        methods, example = _PARTS[what]
        if not all(callable(getattr(value, m, None)) for m in methods):
            hint = ": call it first" if callable(value) else ""
            fail(owner, f"{what} must be {example}, with {' and '.join(methods)}, got {describe(value)}{hint}",
                 TypeError)


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


def gradients_and_metrics(model: Layer, loss: Loss, *, metrics: Metrics | None = None,
                          train: bool = True) -> Callable:
    """`fn(params, state, batch, key) -> (dparams, new_state, metrics)`: `grad_step` and the batch's
    metrics ("loss" among them), the per-device work of a training step. Pure; jit the caller."""

    def fn(params, state, batch, key):
        value, dparams, new_state, outputs = grad_step(model, loss, params, state, batch, key, train=train)
        return dparams, new_state, _metrics(value, outputs, batch["y"], metrics)

    return fn


def make_train_step(model: Layer, loss: Loss, optimizer, *, metrics: Metrics | None = None,
                    mesh: Mesh | None = None, axis_name: str = "data") -> Callable:
    """A jitted, pure `step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)`.

    `optimizer` has optax's `init`/`update(grads, opt_state, params)` interface; `key` feeds the model's
    randomness (Dropout). Uses no JAX autodiff: only model.vjp, loss.vjp and the optimizer. With `mesh`,
    the batch is split over its axis `axis_name` and the gradients averaged in one all-reduce
    (`purenet.training.parallel`); the optimizer then runs replicated."""
    _check_parts("make_train_step", model=model, loss=loss, optimizer=optimizer)
    gradients = gradients_and_metrics(model, loss, metrics=metrics)
    if mesh is not None:
        gradients = parallel.data_parallel("make_train_step", gradients, mesh, axis_name)

    def step(params, state, opt_state, batch, key):
        dparams, state, step_metrics = gradients(params, state, batch, key)
        updates, opt_state = optimizer.update(dparams, opt_state, params)
        params = apply_updates(params, updates)
        return params, state, opt_state, step_metrics

    return jax.jit(step)


def make_eval_step(model: Layer, loss: Loss, *, metrics: Metrics | None = None, mesh: Mesh | None = None,
                   axis_name: str = "data") -> Callable:
    """A jitted `eval_step(params, state, batch) -> metrics` in eval mode (train=False, no key); with
    `mesh`, over the batch split along `axis_name` (metrics averaged over the shards)."""
    _check_parts("make_eval_step", model=model, loss=loss)

    def local(params, state, batch, key):
        del key
        outputs, _ = model.apply(params, state, batch["x"], key=None, train=False)
        return _metrics(loss.apply(outputs, batch["y"]), outputs, batch["y"], metrics)

    if mesh is not None:
        local = parallel.data_parallel("make_eval_step", local, mesh, axis_name)
    return jax.jit(lambda params, state, batch: local(params, state, batch, None))


def locate_nonfinite(model: Layer, loss: Loss, params: PyTree, state: PyTree, batch: Batch, *, key=None,
                     train: bool = True) -> NonFiniteLayerError | None:
    """Replay one training step's forward and backward pass eagerly in debug mode (`purenet.debug`):
    -> the error naming the first non-finite value, in this order: the input `batch["x"]`, each layer's
    output (forward order, down through the combinators), the loss, each layer's dparams and dx
    (backward order); None if every one is finite. Eager (op by op, no jit): for the one step that failed."""
    with debug.debug_nonfinite():
        try:
            debug.watch("batch['x']", "input", batch["x"])
            y, _, pullback = checked_vjp("locate_nonfinite", model.name, model, params, state, batch["x"],
                                         key=key, train=train)
            value, loss_pullback = loss.vjp(y, batch["y"])
            debug.watch(loss.name, "value", value)
            dpred = loss_pullback(jnp.ones_like(value))
            debug.watch(loss.name, "gradient", dpred)
            pullback(dpred)
        except NonFiniteLayerError as error:
            return error
    return None


@jax.jit
def _all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of `tree` is finite, as one () bool."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


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


def _sizes(data: dict, batch_size: int, drop_remainder: bool = False) -> list[int]:
    n = len(data["x"])
    n = n - n % batch_size if drop_remainder else n
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _drop_remainder(num_samples: int, batch_size: int, drop_last: bool | None) -> bool:
    """fit's `drop_last`: None drops a last batch of a single example (unless it is the only batch)."""
    if drop_last is None:
        return num_samples % batch_size == 1 and num_samples > batch_size
    if check_bool("fit", "drop_last", drop_last) and num_samples < batch_size:
        fail("fit", f"drop_last=True leaves no batch: {num_samples} examples < batch_size={batch_size}")
    return drop_last


class _Guard(NamedTuple):
    """What fit's non-finite guard reports: where the run is, and the last checkpoint it wrote."""

    checkpoint: str | None  # the path fit writes, or None without checkpoint_dir
    written: tuple[int, int] | None  # (epoch, step) of the last checkpoint written by this run

    def stop(self, problem: str, epoch: int, step: int, located: str | None) -> NoReturn:
        if self.checkpoint is None:
            saved = "No checkpoint is written (checkpoint_dir=None)."
        elif self.written is None:
            saved = f"No checkpoint was written before it: {self.checkpoint} is untouched."
        else:
            saved = (f"The last good checkpoint, {self.checkpoint}, holds epoch {self.written[0]} (step "
                     f"{self.written[1]}); it is not overwritten.")
        where = (f"First non-finite value, replaying that step eagerly: {located}" if located else
                 "To name the first layer whose output or gradient is non-finite, pass debug_nonfinite=True "
                 "(or call purenet.training.locate_nonfinite on that batch); a NaN in the data, an "
                 "out-of-range label or a too large learning rate are the usual causes.")
        error = NonFiniteError(f"fit: {problem} at epoch {epoch}, step {step}; training stopped. {saved} {where}")
        error.epoch, error.step, error.checkpoint = epoch, step, self.checkpoint
        error.last_good = self.written
        raise error


class _Placement(NamedTuple):
    """fit's data parallelism: how a batch goes onto the mesh, this process's device count along its
    axis, and the one-device eval step for a last validation batch that does not split evenly."""

    shard: Callable
    devices: int
    ragged_step: Callable

    @staticmethod
    def of(mesh: Mesh, axis_name: str, batch_size: int, ragged_step: Callable) -> "_Placement":
        parallel.check_mesh("fit", mesh, axis_name)
        devices = mesh.local_mesh.shape[axis_name]  # this process's share of the axis
        if batch_size % devices:
            fail("fit", f"batch_size (={batch_size}) must be a multiple of the mesh axis '{axis_name}' "
                        f"(={devices} devices{' of this process' if jax.process_count() > 1 else ''})")
        return _Placement(lambda batch: parallel.shard_batch(batch, mesh, axis_name=axis_name), devices,
                          ragged_step)


def _evaluate(eval_step, params, state, data: dict, batch_size: int,
              placement: _Placement | None = None) -> dict[str, float]:
    """Mean metrics over `data` in order, batch by batch, weighted by batch size; with a mesh, a last
    batch that does not split evenly over this process's devices runs on one device."""
    results = []
    for batch in batches(data, batch_size, shuffle=False):
        if placement is None:
            results.append(eval_step(params, state, batch))
        elif len(batch["x"]) % placement.devices:
            if jax.process_count() > 1:
                fail("fit", f"a validation batch of {len(batch['x'])} examples does not split over this "
                            f"process's {placement.devices} devices: with several processes, give each a "
                            f"val_data whose size is a multiple of batch_size, or of the device count")
            results.append(placement.ragged_step(params, state, batch))
        else:
            results.append(eval_step(params, state, placement.shard(batch)))
    return _weighted_mean(results, _sizes(data, batch_size))


def _weighted_mean(results: list[dict], sizes: list[int]) -> dict[str, float]:
    results, weights = jax.device_get(results), np.asarray(sizes, np.float64) / sum(sizes)
    return {name: float(np.dot(weights, [r[name] for r in results])) for name in results[0]}


def fit(model: Layer, loss: Loss, optimizer, params: PyTree, state: PyTree, train_data: Batch, *,
        epochs: int, batch_size: int, seed: int, val_data: Batch | None = None,
        early_stopping: int | None = None, progress: bool = True, opt_state: PyTree | None = None,
        checkpoint_dir: str | os.PathLike | None = None, metrics: Metrics | None = None,
        drop_last: bool | None = None, debug_nonfinite: bool = False, mesh: Mesh | None = None,
        axis_name: str = "data") -> FitResult:
    """Train for `epochs` over mini-batches of `train_data` ({"x": (N, ...), "y": (N, ...)}).

    Batches come from `purenet.data.batching.batches` (a permutation seeded by (seed, epoch)); the
    model's key at step t is `fold_in(PRNGKey(seed), t)`: a seed fixes the run. A last smaller batch
    is kept (it compiles once more, then its shape repeats every epoch), except that `drop_last=None`
    drops one of a single example (BatchNorm cannot take statistics over one value; a different example
    is left out each epoch); `drop_last=True` drops any smaller last batch, False keeps it. After each
    epoch: evaluate `val_data` (if given), save `checkpoint_dir/checkpoint.npz` (if given), append to
    history. `early_stopping=patience` stops after `patience` epochs without a lower val loss (train
    loss without val_data) and returns the best epoch's params, state and opt_state.
    `opt_state=None` starts from `optimizer.init(params)`. A non-finite loss (checked every 10 steps) or
    non-finite parameters (checked before each checkpoint) raise `NonFiniteError` (module docstring);
    `debug_nonfinite=True` checks every step and names the layer. `mesh`: data-parallel over its axis
    `axis_name` (`purenet.training.parallel`): `batch_size` a multiple of that axis' size, a last batch
    that does not split evenly dropped; with several processes each passes its own part of the data
    (`batch_size` is then per process, and `val_data` must split evenly too).
    -> FitResult."""
    _check_parts("fit", model=model, loss=loss, optimizer=optimizer)
    check_bool("fit", "debug_nonfinite", debug_nonfinite)
    check_positive("fit", "epochs", epochs)
    check_positive("fit", "batch_size", batch_size)
    if early_stopping is not None:
        check_positive("fit", "early_stopping", early_stopping)
    train_data = _check_data(train_data, "train_data")
    val_data = None if val_data is None else _check_data(val_data, "val_data")
    train_step = make_train_step(model, loss, optimizer, metrics=metrics, mesh=mesh, axis_name=axis_name)
    eval_step = None if val_data is None else make_eval_step(model, loss, metrics=metrics, mesh=mesh,
                                                              axis_name=axis_name)
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    placement = None
    if mesh is not None:
        placement = _Placement.of(mesh, axis_name, batch_size, make_eval_step(model, loss, metrics=metrics))
        params, state, opt_state = parallel.replicate((params, state, opt_state), mesh)
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)

    def replay(before, batch, key, otherwise: str) -> str:
        found = locate_nonfinite(model, loss, *before, batch, key=key)
        return otherwise if found is None else str(found)

    drop = _drop_remainder(len(train_data["x"]), batch_size, drop_last)
    if placement is not None and len(train_data["x"]) % batch_size % placement.devices:
        if drop_last is False:
            fail("fit", f"drop_last=False keeps a last batch of {len(train_data['x']) % batch_size} examples, "
                        f"which does not split over {placement.devices} devices")
        drop = True
    base_key, sizes = jax.random.PRNGKey(seed), _sizes(train_data, batch_size, drop)
    path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, "checkpoint.npz")
    guard = _Guard(path, None)
    history: dict[str, list[float]] = {}
    best, best_value, best_epoch, step = (params, state, opt_state), np.inf, 0, 0
    for epoch in range(epochs):
        results, checked = [], 0
        shuffled = batches(train_data, batch_size, seed=seed, epoch=epoch, drop_remainder=drop)
        with tqdm(shuffled, total=len(sizes), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                  unit="batch") as bar:
            for batch in bar:
                key = jax.random.fold_in(base_key, step)
                before = (params, state)
                batch = batch if placement is None else placement.shard(batch)
                params, state, opt_state, batch_metrics = train_step(params, state, opt_state, batch, key)
                results.append(batch_metrics)
                step += 1
                if debug_nonfinite or len(results) % LOG_EVERY == 0 or len(results) == len(sizes):
                    losses = np.asarray(jax.device_get([r["loss"] for r in results[checked:]]), np.float64)
                    bad = np.flatnonzero(~np.isfinite(losses))
                    if bad.size:  # in debug mode every step is checked: the failing batch is this one
                        guard.stop(f"the training loss is {losses[bad[0]]}", epoch + 1,
                                   step - len(losses) + 1 + int(bad[0]),
                                   replay(before, batch, key, "none") if debug_nonfinite else None)
                    if debug_nonfinite and not _all_finite((params, state)):
                        guard.stop("this step's update made the parameters non-finite", epoch + 1, step,
                                   replay(before, batch, key, "none, so the optimizer's update is (a learning "
                                                              "rate or schedule too large?)"))
                    checked = len(results)
                if progress and len(results) % LOG_EVERY == 0:
                    bar.set_postfix({k: f"{float(v):.4f}" for k, v in batch_metrics.items()})
            if not _all_finite((params, state)):
                guard.stop("the parameters or state became non-finite (every loss was finite)", epoch + 1, step,
                           None)
            epoch_metrics = _weighted_mean(results, sizes)
            if eval_step is not None:
                val = _evaluate(eval_step, params, state, val_data, batch_size, placement)
                epoch_metrics |= {f"val_{k}": v for k, v in val.items()}
            bar.set_postfix({k: f"{v:.4f}" for k, v in epoch_metrics.items()})
        for name, value in epoch_metrics.items():
            history.setdefault(name, []).append(value)
        if path is not None:
            save_checkpoint(path, params=params, state=state, opt_state=opt_state, step=step, key=base_key)
            guard = guard._replace(written=(epoch + 1, step))
        if early_stopping is not None:
            monitored = epoch_metrics["val_loss" if eval_step is not None else "loss"]
            if monitored < best_value:
                best, best_value, best_epoch = (params, state, opt_state), monitored, epoch
            elif epoch - best_epoch >= early_stopping:
                break
    if early_stopping is not None:
        params, state, opt_state = best
    return FitResult(params, state, opt_state, history)
