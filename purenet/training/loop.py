"""The one training loop: `run_steps` drives a pure step for a number of steps, with an evaluation every
k steps, checkpoints and resume, a time budget and a progress bar. `fit` (epochs over a dataset),
`fit_matched` and the step-based experiments all run on it.

A step is `step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)`, what
`make_train_step` builds. Step t takes the batch `batch_at(t)` and the key `fold_in(key, t)`: when
`batch_at` depends on t alone, a run resumed from its checkpoint repeats the steps it would have taken.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax

from purenet._checks import check_int, check_range, fail
from purenet.core import PyTree
from purenet.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

LOG_EVERY = 10  # steps between the progress bar's updates


class Run(NamedTuple):
    """What `run_steps` hands `on_eval` and returns: params, state and opt_state after `step` steps
    (counted from 0, a resumed run's earlier steps included); the metrics and the wall seconds of every
    step this call ran, in order (the metrics fetched to the host at each evaluation)."""

    params: PyTree
    state: PyTree
    opt_state: PyTree
    step: int
    metrics: list[dict]
    seconds: list[float]

    @property
    def trained(self) -> float:
        """Seconds inside this call's training steps, its first step (which compiles) excluded."""
        return sum(self.seconds[1:])


class StopTraining(Exception):
    """Raised by `on_eval` to end `run_steps` after this evaluation (its checkpoint is still written)."""


def run_steps(step: Callable, params: PyTree, state: PyTree, opt_state: PyTree, batch_at: Callable[[int], Any], *,
              key, steps: int, eval_every: int | None = None, on_eval: Callable[[Run], dict | None] | None = None,
              checkpoint: str | os.PathLike | None = None, resume: bool = False, time_budget: float | None = None,
              progress: str | None = None) -> Run:
    """Run `step` for steps first .. steps - 1: first is 0, or the step of the checkpoint resumed.

    Step t takes `batch_at(t)` and `fold_in(key, t)`; it is waited for, so `Run.seconds` are its wall time
    (its batch included). An evaluation comes after every `eval_every` steps, after the last step, and as
    soon as `time_budget` seconds of training (`Run.trained`) are spent: `on_eval(run)` (a dict it returns
    is shown on the progress bar; raising `StopTraining` ends the run), then `save_checkpoint` to
    `checkpoint` (params, state, opt_state, step, key), then the run stops if it is out of time.
    `resume=True` continues from `checkpoint` (one at or past `steps` runs nothing). `progress="epoch"`
    shows a tqdm bar per evaluation period, "epoch 2/10", where stderr is a terminal or a notebook;
    elsewhere (a log file, CI) one line per period instead, "epoch 2/10: 50 steps, 3.1 s, loss 0.4321".
    -> the Run after the last step."""
    check_int("run_steps", "steps", steps, 1)
    every = steps if eval_every is None else check_int("run_steps", "eval_every", eval_every, 1)
    if time_budget is not None:
        check_range("run_steps", "time_budget", time_budget, lambda v: 0 < v < math.inf, "> 0 seconds")
    first = 0
    if resume:
        params, state, opt_state, first = _resume(checkpoint, Checkpoint(params, state, opt_state, 0, key))
    run, trained, bar, evaluated = Run(params, state, opt_state, first, [], []), 0.0, None, 0
    try:
        for t in range(first, steps):
            if progress and bar is None:
                bar = _bar(progress, t, every, steps)
            tick = time.perf_counter()
            params, state, opt_state, metrics = step(params, state, opt_state, batch_at(t), jax.random.fold_in(key, t))
            jax.block_until_ready(params)
            run.seconds.append(time.perf_counter() - tick)
            run.metrics.append(metrics)
            trained += run.seconds[-1] if len(run.seconds) > 1 else 0.0
            out_of_time = time_budget is not None and trained >= time_budget
            if bar is not None:
                bar.update()
                if (t + 1) % every % LOG_EVERY == 0:
                    bar.set_postfix({k: f"{float(v):.4f}" for k, v in metrics.items()})
            if (t + 1) % every and t + 1 < steps and not out_of_time:
                continue
            run.metrics[evaluated:] = jax.device_get(run.metrics[evaluated:])
            evaluated, run = len(run.metrics), run._replace(params=params, state=state, opt_state=opt_state,
                                                            step=t + 1)
            try:
                figures, stop = (on_eval(run) if on_eval else None), out_of_time
            except StopTraining:
                figures, stop = None, True
            if checkpoint is not None:
                save_checkpoint(checkpoint, params=params, state=state, opt_state=opt_state, step=t + 1, key=key)
            if bar is not None:
                if figures:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in figures.items()})
                bar.close()
                bar = None
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return run


def _resume(path, like: Checkpoint) -> tuple:
    """-> (params, state, opt_state, step) of the checkpoint at `path`, checked against `like`."""
    if path is None:
        fail("run_steps", "resume=True needs the checkpoint path to resume from, got checkpoint=None")
    if not os.path.exists(path):
        fail("run_steps", f"resume=True found no checkpoint at {path}", FileNotFoundError)
    saved = load_checkpoint(path, like=like)
    return saved.params, saved.state, saved.opt_state, int(saved.step)


def _bar(label: str, t: int, every: int, steps: int):
    """The tqdm bar of the evaluation period holding step t, "label i/n"; a `_Line` where stderr is
    neither a terminal nor a notebook (tqdm would write a line per refresh into a log)."""
    start = t - t % every
    desc = f"{label} {t // every + 1}/{math.ceil(steps / every)}"
    if not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        return _Line(desc)
    from tqdm.auto import tqdm  # only where a bar is shown

    return tqdm(total=min(every, steps - start), initial=t - start, unit="step", desc=desc)


class _Line:
    """The bar's stand-in off a terminal: counts steps, prints one line to stderr when closed."""

    def __init__(self, desc: str):
        self.desc, self.steps, self.figures, self.start = desc, 0, {}, time.perf_counter()

    def update(self) -> None:
        self.steps += 1

    def set_postfix(self, figures: dict) -> None:
        self.figures = figures

    def close(self) -> None:
        shown = "".join(f", {k} {v}" for k, v in self.figures.items())
        print(f"{self.desc}: {self.steps} steps, {time.perf_counter() - self.start:.1f} s{shown}", file=sys.stderr,
              flush=True)
