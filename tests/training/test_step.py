"""The step builders (purenet.training.step): handwritten gradients equal jax.grad end to end (MLP), one
training step follows the true gradient, metrics by default and custom, and an uncalled factory is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_function, check_model, compare, tolerance
from purenet.combinators import serial
from purenet.core import init_model
from purenet.layers.activations import Tanh
from purenet.layers.dense import Dense
from purenet.losses import mean_squared_error, softmax_cross_entropy
from purenet.optim import adam, sgd
from purenet.data.toy import regression_1d
from purenet.training.step import grad_step, make_eval_step, make_train_step


def mlp():
    return serial(Dense(16), Tanh(), Dense(4))


def _batch(seed, in_shape, classes, dtype):
    # NumPy's draws: eagerly, each jax.random draw is a program of its own to compile
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=in_shape).astype(dtype), "y": rng.integers(0, classes, in_shape[:1], dtype=np.int32)}


def _init(model, key, in_shape, dtype=jnp.float32):
    """init_model's params and state, in one jitted program (eagerly, every initializer's draw compiles)."""
    return jax.jit(lambda key: init_model(model, key, in_shape, dtype=dtype)[1:])(key)


def test_model_gradient_equals_jax_grad(key):
    # The zoo's models (tests/models) check LeNet-5 and the recurrent LMs the same way.
    model, loss = mlp(), softmax_cross_entropy()
    params, state = _init(model, key, (5, 3), dtype=jnp.float64)
    batch = _batch(1, (5, 3), 4, np.float64)
    report = check_model(model, loss, params, state, batch["x"], batch["y"])
    assert max(e.max_rel for e in report.values()) <= tolerance(jnp.float64)


def test_grad_step_and_train_step_follow_the_true_gradient(key):
    """grad_step equals jax.value_and_grad; one train step with sgd(lr) is params - lr * gradient."""
    model, loss = mlp(), softmax_cross_entropy()
    params, state = _init(model, key, (6, 3), dtype=jnp.float64)
    batch = _batch(1, (6, 3), 4, np.float64)

    @jax.jit
    def reference(params):
        def objective(p):
            logits = model.apply(p, state, batch["x"])[0]
            return loss.apply(logits, batch["y"]), logits
        return jax.value_and_grad(objective, has_aux=True)(params)

    (value_ref, logits), grads_ref = reference(params)
    value, grads, new_state, outputs = jax.jit(grad_step, static_argnums=(0, 1))(
        model, loss, params, state, batch, None)
    compare(grads, grads_ref, rtol=1e-10, what="dparams")
    np.testing.assert_allclose(value, value_ref, rtol=1e-12)
    np.testing.assert_allclose(outputs, logits, rtol=1e-12)
    assert new_state == state

    optimizer = sgd(0.1)
    step = make_train_step(model, loss, optimizer)
    new_params, _, _, metrics = step(params, state, optimizer.init(params), batch, key)
    expected = jax.tree_util.tree_map(lambda p, g: np.asarray(p) - 0.1 * np.asarray(g), params, grads_ref)
    compare(new_params, expected, rtol=1e-10, what="params")
    np.testing.assert_allclose(metrics["loss"], value_ref, rtol=1e-12)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(np.asarray(logits), -1) == batch["y"]),
                               rtol=1e-12)


def test_regression_step_reports_loss_only_and_custom_metrics(key):
    model, loss = serial(Dense(4), Tanh(), Dense(1)), mean_squared_error()
    params, state = _init(model, key, (8, 1))
    data = regression_1d(8)
    optimizer = adam(1e-2)
    step = make_train_step(model, loss, optimizer)
    *_, metrics = step(params, state, optimizer.init(params), data, key)
    assert set(metrics) == {"loss", "skipped"} and float(metrics["skipped"]) == 0.0  # skip_nonfinite's flag
    eval_step = make_eval_step(model, loss, metrics={"mae": lambda p, t: jnp.mean(jnp.abs(p - t))})
    check_function(lambda *a: eval_step(*a)["mae"],
                   lambda p, s, d: jnp.mean(jnp.abs(model.apply(p, s, d["x"])[0] - d["y"])), params, state, data,
                   what="mae")  # float32, the suite's rule (tests/README.md)


def test_training_names_an_uncalled_factory(key):
    model = mlp()
    with pytest.raises(TypeError, match=r"make_train_step: optimizer must be an Optimizer such as optim\.adam\(1e-3\), "
                                        r"with init and update, got the function adam: call it first"):
        make_train_step(model, softmax_cross_entropy(), adam)
