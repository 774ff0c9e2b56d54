"""The pure step builders: a jitted training step made only of handwritten VJPs, and an eval step.

A batch is a dict {"x": inputs (N, ...), "y": targets}: integer labels (N,) for classification, or an
array the loss compares with the model's output. Metrics are mean-reduced scalars per batch: always
"loss", plus "accuracy" by default when "y" holds integer labels and the output has one more axis
(logits (N, K)). Custom metrics: a dict {name: fn(outputs, targets) -> scalar}. "x" may be any pytree
(`(ids, mask)`, a dict), batched along the leading axis of every leaf.

The model and the loss run through the checked calls (`purenet.combinators.checked_vjp`): a custom layer
used as the whole model that returns `y` alone is named, not unpacked along the batch.

`locate_nonfinite` replays one step eagerly in debug mode to name the first non-finite value.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from purenet import compiler, debug
from purenet._checks import describe, fail
from purenet.combinators import checked_apply, checked_vjp
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


def check_batch(owner: str, batch) -> None:
    """Fail unless `batch` is a dict holding "x" (the model's input, any pytree) and "y" (the target)."""
    if isinstance(batch, Mapping) and {"x", "y"} <= set(batch):
        return
    if isinstance(batch, Mapping):
        got = f"a dict with keys {sorted(map(str, batch))}"
        hint = "name the model's input 'x' and the loss's target 'y'"
    elif isinstance(batch, (tuple, list)):
        got = f"a {type(batch).__name__} of {len(batch)}"
        hint = "write {'x': x, 'y': y} for an (x, y) pair (as PyTorch's DataLoader and tf.data yield it)"
    else:
        got, hint = describe(batch), "write {'x': x, 'y': y}"
    fail(owner, f"batch must be a dict {{'x': inputs, 'y': targets}}, got {got}: {hint}", TypeError)


def check_opt_state(owner: str, optimizer, params: PyTree, opt_state: PyTree) -> None:
    """Fail unless `opt_state` has the tree and shapes `optimizer.init(params)` makes (traced, nothing
    computed), naming the first leaf that differs: another model's or another optimizer's state."""
    expected = jax.eval_shape(optimizer.init, params)
    want, want_def = jax.tree_util.tree_flatten_with_path(expected)
    got, got_def = jax.tree_util.tree_flatten_with_path(opt_state)
    todo = "pass optimizer.init(params) for this model's params and this optimizer"
    if want_def != got_def:
        want_paths = [jax.tree_util.keystr(p) for p, _ in want]
        got_paths = [jax.tree_util.keystr(p) for p, _ in got]
        missing = [p for p in want_paths if p not in set(got_paths)]
        unknown = [p for p in got_paths if p not in set(want_paths)]
        fail(owner, f"opt_state does not have the tree optimizer.init(params) makes ({len(got)} leaves, expected "
                    f"{len(want)}; missing {_brief(missing)}, unexpected {_brief(unknown)}): {todo} (another "
                    f"model's or another optimizer's state?)")
    for (path, e), (_, g) in zip(want, got):
        if tuple(e.shape) != tuple(jnp.shape(g)):
            fail(owner, f"opt_state{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(g))}, where "
                        f"optimizer.init(params) makes {tuple(e.shape)}: {todo} (another model's state?)")


def _brief(names: list[str], shown: int = 3) -> str:
    """The first few names of a list, and how many more: messages stay a line long."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (str(names[:shown]) + more) if names else "none"


def _finite(tree) -> jax.Array:
    """Whether every floating-point leaf of `tree` is finite, as one () bool."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _checked_loss(owner: str, loss: Loss, outputs, targets):
    """`loss.vjp(outputs, targets)`, failing as `owner` unless it returns (value, pullback)."""
    out = loss.vjp(outputs, targets)
    if not (isinstance(out, tuple) and len(out) == 2 and callable(out[1])):
        fail(owner, f"{loss.name}.vjp must return (value, pullback), got {describe(out)}")
    return out


def _metrics(value, outputs, targets, metrics: Metrics | None) -> dict[str, jax.Array]:
    if metrics is None:
        is_labels = (hasattr(targets, "dtype") and jnp.issubdtype(targets.dtype, jnp.integer)
                     and outputs.ndim == targets.ndim + 1)
        metrics = {"accuracy": accuracy} if is_labels else {}
    return {"loss": value} | {name: fn(outputs, targets) for name, fn in metrics.items()}


def grad_step(model: Layer, loss: Loss, params: PyTree, state: PyTree, batch: Batch, key,
              train: bool = True, *, seed: jax.Array | None = None, owner: str = "grad_step"):
    """The handwritten gradient of `loss(model(x), y)` w.r.t. params: model.vjp, loss.vjp, pullbacks,
    through the checked calls (errors name `owner`, the function the user called). `seed`: the loss's
    cotangent (default 1); a loss scale S gives S times the gradient (`purenet.optim.dynamic_loss_scale`),
    with every cotangent S times larger on the way.

    -> (loss_value (), dparams (tree of params), new_state, outputs (N, ...)). Pure; jit the caller."""
    check_batch(owner, batch)
    outputs, new_state, pullback = checked_vjp(owner, model.name, model, params, state, batch["x"], key=key,
                                               train=train)
    value, loss_pullback = _checked_loss(owner, loss, outputs, batch["y"])
    dvalue = jnp.ones_like(value) if seed is None else jnp.full_like(value, seed)
    dparams, _ = pullback(loss_pullback(dvalue))
    return value, dparams, new_state, outputs


def gradients_and_metrics(model: Layer, loss: Loss, *, metrics: Metrics | None = None,
                          train: bool = True, owner: str = "grad_step") -> Callable:
    """`fn(params, state, batch, key) -> (dparams, new_state, metrics)`: `grad_step` and the batch's
    metrics ("loss" among them), the per-device work of a training step. Pure; jit the caller."""

    def fn(params, state, batch, key):
        value, dparams, new_state, outputs = grad_step(model, loss, params, state, batch, key, train=train,
                                                       owner=owner)
        return dparams, new_state, _metrics(value, outputs, batch["y"], metrics)

    return fn


def data_parallel_grad(model: Layer, loss: Loss, mesh: Mesh, *, axis_name: str = "data",
                       metrics: Metrics | None = None, train: bool = True) -> Callable:
    """`fn(params, state, batch, key) -> (loss_value, dparams, new_state, metrics)` over the full batch,
    computed shard by shard over `axis_name` and averaged in one all-reduce (`parallel.data_parallel`):
    the building block for hand-made loops. Call it inside `jax.jit`."""
    local = gradients_and_metrics(model, loss, metrics=metrics, train=train, owner="data_parallel_grad")
    averaged = parallel.data_parallel("data_parallel_grad", local, mesh, axis_name)

    def fn(params, state, batch, key):
        dparams, new_state, step_metrics = averaged(params, state, batch, key)
        return step_metrics["loss"], dparams, new_state, step_metrics

    return fn


def make_train_step(model: Layer, loss: Loss, optimizer, *, metrics: Metrics | None = None,
                    mesh: Mesh | None = None, axis_name: str = "data", skip_nonfinite: bool = True,
                    compiler_options="auto") -> Callable:
    """A jitted, pure `step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)`.

    `optimizer` has optax's `init`/`update(grads, opt_state, params)` interface; `key` feeds the model's
    randomness (Dropout). Uses no JAX autodiff: only model.vjp, loss.vjp and the optimizer. With `mesh`,
    the batch is split over its axis `axis_name` and the gradients averaged in one all-reduce
    (`purenet.training.parallel`); the optimizer then runs replicated. `batch` must be {"x", "y"} and
    `opt_state` what `optimizer.init(params)` makes (checked while tracing, naming what differs). A
    loss-scaled optimizer (`optim.dynamic_loss_scale(...)`, `optim.static_loss_scale(...)`) seeds the
    pullbacks with the scale its state holds, and the metrics gain "loss_scale", the scale of that step.
    `skip_nonfinite` (default): a step whose loss or gradients hold a NaN or an infinity (one bad example
    in the batch) returns params and state unchanged, as optax's `apply_if_finite`, and opt_state too
    (but a loss-scaled optimizer's, which skips on its own and shrinks its scale), and its metrics hold
    "skipped" (1.0 for a skipped step, else 0.0); False applies every update as computed (`fit` does,
    and stops on its own guard). `compiler_options`: "auto" (the measured XLA options for this backend,
    if any), None, or a dict of XLA options (`purenet.compiler`)."""
    check_parts("make_train_step", model=model, loss=loss, optimizer=optimizer)
    if not isinstance(skip_nonfinite, bool):
        fail("make_train_step", f"skip_nonfinite must be a bool, got skip_nonfinite={skip_nonfinite!r}")
    gradients = gradients_and_metrics(model, loss, metrics=metrics, owner="make_train_step")

    def scaled_gradients(params, state_and_seed, batch, key):  # the seed rides with the replicated state
        state, seed = state_and_seed
        value, dparams, new_state, outputs = grad_step(model, loss, params, state, batch, key, seed=seed,
                                                       owner="make_train_step")
        return dparams, new_state, _metrics(value, outputs, batch["y"], metrics)

    if mesh is not None:
        gradients = parallel.data_parallel("make_train_step", gradients, mesh, axis_name)
        scaled_gradients = parallel.data_parallel("make_train_step", scaled_gradients, mesh, axis_name)

    def step(params, state, opt_state, batch, key):
        check_batch("make_train_step", batch)
        check_opt_state("make_train_step", optimizer, params, opt_state)
        seed = loss_scale(opt_state)
        if seed is None:
            dparams, new_state, step_metrics = gradients(params, state, batch, key)
        else:
            dparams, new_state, step_metrics = scaled_gradients(params, (state, seed), batch, key)
            step_metrics = {**step_metrics, "loss_scale": seed}
        updates, new_opt_state = optimizer.update(dparams, opt_state, params)
        new_params = apply_updates(params, updates)
        if not skip_nonfinite:
            return new_params, new_state, new_opt_state, step_metrics
        finite = _finite((step_metrics["loss"], dparams))  # after the all-reduce: the same on every device
        kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old).astype(new.dtype),
                                      (new_params, new_state, new_opt_state), (params, state, opt_state))
        if seed is not None:  # the loss scaler skipped this update itself and must keep its new scale
            kept = (*kept[:2], new_opt_state)
        return *kept, {**step_metrics, "skipped": jnp.where(finite, 0.0, 1.0).astype(step_metrics["loss"].dtype)}

    return compiler.jit(step, owner="make_train_step", compiler_options=compiler_options)


def make_eval_step(model: Layer, loss: Loss, *, metrics: Metrics | None = None, mesh: Mesh | None = None,
                   axis_name: str = "data", compiler_options="auto") -> Callable:
    """A jitted `eval_step(params, state, batch) -> metrics` in eval mode (train=False, no key); with
    `mesh`, over the batch split along `axis_name` (metrics averaged over the shards). `compiler_options`
    as for `make_train_step`."""
    check_parts("make_eval_step", model=model, loss=loss)

    def local(params, state, batch, key):
        del key
        check_batch("make_eval_step", batch)
        outputs, _ = checked_apply("make_eval_step", model.name, model, params, state, batch["x"], key=None,
                                   train=False)
        return _metrics(loss.apply(outputs, batch["y"]), outputs, batch["y"], metrics)

    if mesh is not None:
        local = parallel.data_parallel("make_eval_step", local, mesh, axis_name)
    return compiler.jit(lambda params, state, batch: local(params, state, batch, None), owner="make_eval_step",
                        compiler_options=compiler_options)


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
