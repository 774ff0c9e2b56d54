"""`fit`: epochs of mini-batches over a dataset, with validation, early stopping, checkpoints and data
parallelism, on the step-based loop (`purenet.training.loop.run_steps`), and its guards.

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

from purenet._checks import check_bool, check_positive, fail
from purenet.core import Layer, Loss, PyTree
from purenet.data.batching import batches, brief, leading_lengths
from purenet.debug import NonFiniteError
from purenet.training import parallel
from purenet.training.loop import LOG_EVERY, Run, StopTraining, run_steps
from purenet.training.step import Batch, Metrics, check_parts, locate_nonfinite, make_eval_step, make_train_step


class FitResult(NamedTuple):
    """`fit`'s result; history maps "loss", "accuracy", "val_loss", ... to one float per epoch run."""

    params: PyTree
    state: PyTree
    opt_state: PyTree
    history: dict[str, list[float]]


@jax.jit
def _all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of `tree` is finite, as one () bool."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _check_data(data, name: str) -> dict:
    """-> {"x", "y"} of `data`, failing unless both are present and every leaf of both (x and y may be
    pytrees) has the same nonzero leading length, the number of examples."""
    if not isinstance(data, Mapping) or not {"x", "y"} <= set(data):
        fail("fit", f"{name} must be a dict with keys 'x' and 'y', got {type(data).__name__}")
    data = {"x": data["x"], "y": data["y"]}
    lengths = leading_lengths(data)
    if not lengths or None in lengths.values() or len(set(lengths.values())) != 1 or 0 in lengths.values():
        fail("fit", f"every array of {name}['x'] and {name}['y'] (x and y may be pytrees: (ids, mask), a dict) "
                    f"needs the same nonzero leading length, the number of examples; got leading lengths "
                    f"{brief(lengths)}")
    return data


def _length(data: dict) -> int:
    """The number of examples in a checked `data` (every leaf's leading length)."""
    return int(np.shape(jax.tree_util.tree_leaves(data["x"])[0])[0])


def _sizes(data: dict, batch_size: int, drop_remainder: bool = False) -> list[int]:
    n = _length(data)
    n = n - n % batch_size if drop_remainder else n
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _drop_remainder(num_samples: int, batch_size: int, drop_last: bool | None) -> bool:
    """fit's `drop_last`: None drops a last batch of a single example (unless it is the only batch)."""
    if drop_last is None:
        return num_samples % batch_size == 1 and num_samples > batch_size
    if check_bool("fit", "drop_last", drop_last) and num_samples < batch_size:
        fail("fit", f"drop_last=True leaves no batch: {num_samples} examples < batch_size={batch_size}")
    return drop_last


class _Guard:
    """fit's non-finite guard around its training step: the loss is checked every LOG_EVERY steps of an
    epoch and at its end (every step in debug mode, with the parameters, replaying a failing step to
    name the layer); `stop` raises NonFiniteError naming the last checkpoint this run wrote."""

    def __init__(self, train_step: Callable, per_epoch: int, checkpoint: str | None, replay: Callable | None):
        self.train_step, self.per_epoch, self.checkpoint, self.replay = train_step, per_epoch, checkpoint, replay
        self.written: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint written by this run
        self.unchecked: list = []  # the losses of the steps since the last check
        self.steps = 0

    def __call__(self, params, state, opt_state, batch, key):
        new = self.train_step(params, state, opt_state, batch, key)
        self.steps += 1
        self.unchecked.append(new[3]["loss"])
        in_epoch, epoch = (self.steps - 1) % self.per_epoch + 1, (self.steps - 1) // self.per_epoch + 1
        if self.replay or in_epoch % LOG_EVERY == 0 or in_epoch == self.per_epoch:
            losses = np.asarray(jax.device_get(self.unchecked), np.float64)
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:  # in debug mode every step is checked: the failing batch is this one
                self.stop(f"the training loss is {losses[bad[0]]}", epoch, self.steps - len(losses) + 1 + int(bad[0]),
                          self.replay and self.replay(params, state, batch, key, "none"))
            if self.replay and not _all_finite(new[:2]):
                self.stop("this step's update made the parameters non-finite", epoch, self.steps,
                          self.replay(params, state, batch, key, "none, so the optimizer's update is (a learning "
                                                                 "rate or schedule too large?)"))
            self.unchecked = []
        return new

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
        elif _length(batch) % placement.devices:
            if jax.process_count() > 1:
                fail("fit", f"a validation batch of {_length(batch)} examples does not split over this "
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
    """Train for `epochs` over mini-batches of `train_data` ({"x": (N, ...), "y": (N, ...)}; x and y may be
    pytrees, `{"x": (ids, mask), "y": labels}`, batched along the leading axis of every leaf).

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
    check_parts("fit", model=model, loss=loss, optimizer=optimizer)
    check_bool("fit", "debug_nonfinite", debug_nonfinite)
    check_positive("fit", "epochs", epochs)
    check_positive("fit", "batch_size", batch_size)
    if early_stopping is not None:
        check_positive("fit", "early_stopping", early_stopping)
    train_data = _check_data(train_data, "train_data")
    val_data = None if val_data is None else _check_data(val_data, "val_data")
    train_step = make_train_step(model, loss, optimizer, metrics=metrics, mesh=mesh, axis_name=axis_name,
                                 skip_nonfinite=False)  # the guard stops the run instead
    eval_step = None if val_data is None else make_eval_step(model, loss, metrics=metrics, mesh=mesh,
                                                              axis_name=axis_name)
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    placement = None
    if mesh is not None:
        placement = _Placement.of(mesh, axis_name, batch_size, make_eval_step(model, loss, metrics=metrics))
        params, state, opt_state = parallel.replicate((params, state, opt_state), mesh)
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)

    def replay(params, state, batch, key, otherwise: str) -> str:
        found = locate_nonfinite(model, loss, params, state, batch, key=key)
        return otherwise if found is None else str(found)

    drop = _drop_remainder(_length(train_data), batch_size, drop_last)
    if placement is not None and _length(train_data) % batch_size % placement.devices:
        if drop_last is False:
            fail("fit", f"drop_last=False keeps a last batch of {_length(train_data) % batch_size} examples, "
                        f"which does not split over {placement.devices} devices")
        drop = True
    sizes = _sizes(train_data, batch_size, drop)
    per_epoch, path = len(sizes), None if checkpoint_dir is None else os.path.join(checkpoint_dir, "checkpoint.npz")
    guarded = _Guard(train_step, per_epoch, path, replay if debug_nonfinite else None)
    epoch_batches = iter(())

    def batch_at(t: int):
        nonlocal epoch_batches
        if t % per_epoch == 0:  # a new epoch, a new permutation
            epoch_batches = batches(train_data, batch_size, seed=seed, epoch=t // per_epoch, drop_remainder=drop)
        batch = next(epoch_batches)
        return batch if placement is None else placement.shard(batch)

    history: dict[str, list[float]] = {}
    best, best_value, best_epoch = (params, state, opt_state), np.inf, 0

    def on_epoch(run: Run) -> dict[str, float]:
        nonlocal best, best_value, best_epoch
        epoch = run.step // per_epoch - 1
        if not _all_finite((run.params, run.state)):
            guarded.stop("the parameters or state became non-finite (every loss was finite)", epoch + 1, run.step,
                         None)
        figures = _weighted_mean(run.metrics[-per_epoch:], sizes)
        if eval_step is not None:
            val = _evaluate(eval_step, run.params, run.state, val_data, batch_size, placement)
            figures |= {f"val_{k}": v for k, v in val.items()}
        for name, value in figures.items():
            history.setdefault(name, []).append(value)
        if path is not None:
            guarded.written = (epoch + 1, run.step)  # run_steps saves the checkpoint right after this
        if early_stopping is not None:
            monitored = figures["val_loss" if eval_step is not None else "loss"]
            if monitored < best_value:
                best, best_value, best_epoch = (run.params, run.state, run.opt_state), monitored, epoch
            elif epoch - best_epoch >= early_stopping:
                raise StopTraining
        return figures

    run = run_steps(guarded, params, state, opt_state, batch_at, key=jax.random.PRNGKey(seed),
                    steps=epochs * per_epoch, eval_every=per_epoch, on_eval=on_epoch, checkpoint=path,
                    progress="epoch" if progress else None)
    params, state, opt_state = best if early_stopping is not None else run[:3]
    return FitResult(params, state, opt_state, history)
