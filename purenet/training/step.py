"""The pure step builders: a jitted training step made only of handwritten VJPs, and an eval step.

A batch is a dict {"x": inputs (N, ...), "y": targets}: integer labels (N,) for classification, or an
array the loss compares with the model's output. Metrics are mean-reduced scalars per batch: always
"loss", plus "accuracy" by default when "y" holds integer labels and the output has one more axis
(logits (N, K)). Custom metrics: a dict {name: fn(outputs, targets) -> scalar}.

`locate_nonfinite` replays one step eagerly in debug mode to name the first non-finite value.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from purenet import debug
from purenet._checks import describe, fail
from purenet.combinators import checked_vjp
from purenet.core import Layer, Loss, PyTree
from purenet.debug import NonFiniteLayerError
from purenet.optim.loss_scaling import loss_scale
from purenet.optim.transforms import apply_updates
from purenet.training import parallel
from purenet.training.metrics import accuracy

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]]

_PARTS = {"model": (("apply", "vjp"), "a Layer"),
          "loss": (("apply", "vjp"), "a Loss such as losses.softmax_cross_entropy()"),
          "optimizer": (("init", "update"), "an Optimizer such as optim.adam(1e-3)")}


def check_parts(owner: str, **parts) -> None:
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
              train: bool = True, *, seed: jax.Array | None = None):
    """The handwritten gradient of `loss(model(x), y)` w.r.t. params: model.vjp, loss.vjp, pullbacks.
    `seed`: the loss's cotangent (default 1); a loss scale S gives S times the gradient
    (`purenet.optim.dynamic_loss_scale`), with every cotangent S times larger on the way.

    -> (loss_value (), dparams (tree of params), new_state, outputs (N, ...)). Pure; jit the caller."""
    outputs, new_state, pullback = model.vjp(params, state, batch["x"], key=key, train=train)
    value, loss_pullback = loss.vjp(outputs, batch["y"])
    dvalue = jnp.ones_like(value) if seed is None else jnp.full_like(value, seed)
    dparams, _ = pullback(loss_pullback(dvalue))
    return value, dparams, new_state, outputs


def gradients_and_metrics(model: Layer, loss: Loss, *, metrics: Metrics | None = None,
                          train: bool = True) -> Callable:
    """`fn(params, state, batch, key) -> (dparams, new_state, metrics)`: `grad_step` and the batch's
    metrics ("loss" among them), the per-device work of a training step. Pure; jit the caller."""

    def fn(params, state, batch, key):
        value, dparams, new_state, outputs = grad_step(model, loss, params, state, batch, key, train=train)
        return dparams, new_state, _metrics(value, outputs, batch["y"], metrics)

    return fn


def data_parallel_grad(model: Layer, loss: Loss, mesh: Mesh, *, axis_name: str = "data",
                       metrics: Metrics | None = None, train: bool = True) -> Callable:
    """`fn(params, state, batch, key) -> (loss_value, dparams, new_state, metrics)` over the full batch,
    computed shard by shard over `axis_name` and averaged in one all-reduce (`parallel.data_parallel`):
    the building block for hand-made loops. Call it inside `jax.jit`."""
    local = gradients_and_metrics(model, loss, metrics=metrics, train=train)
    averaged = parallel.data_parallel("data_parallel_grad", local, mesh, axis_name)

    def fn(params, state, batch, key):
        dparams, new_state, step_metrics = averaged(params, state, batch, key)
        return step_metrics["loss"], dparams, new_state, step_metrics

    return fn


def make_train_step(model: Layer, loss: Loss, optimizer, *, metrics: Metrics | None = None,
                    mesh: Mesh | None = None, axis_name: str = "data") -> Callable:
    """A jitted, pure `step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)`.

    `optimizer` has optax's `init`/`update(grads, opt_state, params)` interface; `key` feeds the model's
    randomness (Dropout). Uses no JAX autodiff: only model.vjp, loss.vjp and the optimizer. With `mesh`,
    the batch is split over its axis `axis_name` and the gradients averaged in one all-reduce
    (`purenet.training.parallel`); the optimizer then runs replicated. A loss-scaled optimizer
    (`optim.dynamic_loss_scale(...)`, `optim.static_loss_scale(...)`) seeds the pullbacks with the scale
    its state holds, and the metrics gain "loss_scale", the scale of that step."""
    check_parts("make_train_step", model=model, loss=loss, optimizer=optimizer)
    gradients = gradients_and_metrics(model, loss, metrics=metrics)

    def scaled_gradients(params, state_and_seed, batch, key):  # the seed rides with the replicated state
        state, seed = state_and_seed
        value, dparams, new_state, outputs = grad_step(model, loss, params, state, batch, key, seed=seed)
        return dparams, new_state, _metrics(value, outputs, batch["y"], metrics)

    if mesh is not None:
        gradients = parallel.data_parallel("make_train_step", gradients, mesh, axis_name)
        scaled_gradients = parallel.data_parallel("make_train_step", scaled_gradients, mesh, axis_name)

    def step(params, state, opt_state, batch, key):
        seed = loss_scale(opt_state)
        if seed is None:
            dparams, state, step_metrics = gradients(params, state, batch, key)
        else:
            dparams, state, step_metrics = scaled_gradients(params, (state, seed), batch, key)
            step_metrics = {**step_metrics, "loss_scale": seed}
        updates, opt_state = optimizer.update(dparams, opt_state, params)
        params = apply_updates(params, updates)
        return params, state, opt_state, step_metrics

    return jax.jit(step)


def make_eval_step(model: Layer, loss: Loss, *, metrics: Metrics | None = None, mesh: Mesh | None = None,
                   axis_name: str = "data") -> Callable:
    """A jitted `eval_step(params, state, batch) -> metrics` in eval mode (train=False, no key); with
    `mesh`, over the batch split along `axis_name` (metrics averaged over the shards)."""
    check_parts("make_eval_step", model=model, loss=loss)

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
