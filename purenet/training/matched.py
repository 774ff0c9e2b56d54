"""Training whose loss target is found on the host between two jitted programs: set prediction (MiniDETR,
MiniMaskFormer), where each batch's queries are matched to its ground truth (Hungarian matching in
numpy, `purenet.models.set_prediction.hungarian_targets`) before the gradient step. Also `make_predict`,
eval-mode prediction over an array in batches of one shape.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from purenet._checks import fail
from purenet.core import Layer
from purenet.optim.transforms import apply_updates
from purenet.training.loop import Run, run_steps
from purenet.training.step import grad_step


def make_matched_step(model: Layer, loss, optimizer, *, match: Callable, gradient: Callable | None = None) -> Callable:
    """A training step with its target found outside jit: a jitted prediction (the forward pass the gradient
    step will take, same key), then on the host `match(outputs, truth) -> the loss's target` (numpy), then
    the jitted gradient step: handwritten (`grad_step`), or `gradient(params, state, x, target, key) ->
    (value, dparams, state)` when given (a reference to compare with).
    -> step(params, state, opt_state, {"x": x, "y": truth}, key) -> (params, state, opt_state, {"loss"}),
    a step `run_steps` drives."""
    if gradient is None:
        def gradient(params, state, x, target, key):
            return grad_step(model, loss, params, state, {"x": x, "y": target}, key)[:3]

    @jax.jit
    def predict(params, state, x, key):
        return model.apply(params, state, x, key=key, train=True)[0]

    @jax.jit
    def update(params, state, opt_state, x, target, key):
        value, dparams, state = gradient(params, state, x, target, key)
        updates, opt_state = optimizer.update(dparams, opt_state, params)
        return apply_updates(params, updates), state, opt_state, {"loss": value}

    def step(params, state, opt_state, batch, key):
        target = match(jax.device_get(predict(params, state, batch["x"], key)), batch["y"])
        return update(params, state, opt_state, batch["x"], target, key)

    return step


def fit_matched(step: Callable, params, state, opt_state, x: np.ndarray, truth, *, epochs: int, batch_size: int,
                seed: int = 0, evaluate: Callable | None = None, log: Callable = print):
    """`epochs` passes of `step` (`make_matched_step`) over (x, truth) in shuffled batches (a last
    incomplete batch is dropped: one compilation), on `run_steps` (step t's key `fold_in(PRNGKey(seed),
    t)`). `truth` is a NamedTuple of arrays (N, ...). After each epoch, `evaluate(params, state) -> {name:
    value}` (if given) joins the mean training loss in the history, and `log` prints the epoch's line.
    -> (params, state, opt_state, history {"loss": [...], name: [...]})."""
    per_epoch = len(x) // batch_size
    if per_epoch == 0:
        fail("fit_matched", f"batch_size (={batch_size}) exceeds the {len(x)} examples")
    rng, order, history = np.random.default_rng(seed), None, {"loss": []}

    def batch_at(t: int) -> dict:
        nonlocal order
        if t % per_epoch == 0:
            order = rng.permutation(len(x))
        index = np.sort(order[t % per_epoch * batch_size:(t % per_epoch + 1) * batch_size])
        return {"x": x[index], "y": type(truth)(*(np.asarray(a)[index] for a in truth))}

    def on_epoch(run: Run) -> None:
        history["loss"].append(float(np.mean([m["loss"] for m in run.metrics[-per_epoch:]])))
        for name, value in (evaluate(run.params, run.state) if evaluate else {}).items():
            history.setdefault(name, []).append(value)
        log(f"epoch {run.step // per_epoch}/{epochs}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items()))

    run = run_steps(step, params, state, opt_state, batch_at, key=jax.random.PRNGKey(seed), steps=epochs * per_epoch,
                    eval_every=per_epoch, on_eval=on_epoch)
    return run.params, run.state, run.opt_state, history


def make_predict(model: Layer, post: Callable = lambda y: y) -> Callable:
    """-> predict(params, state, x, batch_size): `post(model.apply(params, state, batch))` over x in
    batches of `batch_size` (eval mode; jitted once per batch size: a short batch is padded),
    concatenated on the host: the tree `post` gives, each leaf (len(x), ...)."""
    run = jax.jit(lambda params, state, batch: post(model.apply(params, state, batch)[0]))

    def predict(params, state, x: np.ndarray, batch_size: int):
        outs = []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            pad = np.repeat(batch[-1:], batch_size - len(batch), axis=0)
            out = jax.device_get(run(params, state, np.concatenate([batch, pad])))
            outs.append(jax.tree_util.tree_map(lambda a, n=len(batch): a[:n], out))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)

    return predict
