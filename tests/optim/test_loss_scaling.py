"""purenet.optim's loss scaling: the dynamic rule step by step, the wrapper (a finite step is the inner
optimizer's on the unscaled gradients, a non-finite one is skipped), its composition with make_train_step
and fit, and float16 training on a small problem: its gradients underflow to zero without loss scaling,
a too large static scale overflows every step, and the dynamic scale trains as float32 does."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import initializers, optim
from purenet.combinators import serial
from purenet.core import init_model
from purenet.layers import Dense, Tanh
from purenet.losses import mean_squared_error
from purenet.optim import LossScaleState, adjust_scale, dynamic_loss_scale, loss_scale, static_loss_scale, unscale
from purenet.precision import Policy, with_policy
from purenet.training import fit, make_train_step

RULE = dict(growth_interval=3, growth_factor=2.0, backoff_factor=0.5, min_scale=1.0)


def _tree():
    return {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3) - 2, "b": [jnp.array([0.5, -1.5], jnp.float32)]}


def test_adjust_scale_follows_the_dynamic_rule():
    scale, good = jnp.float32(8.0), jnp.int32(0)
    seen = []
    for finite in [True, True, True, True, False, False, False, False, True]:
        scale, good = adjust_scale(scale, good, jnp.bool_(finite), **RULE)
        seen.append((float(scale), int(good)))
    # grows at the 3rd finite step in a row; halves on each overflow, down to min_scale 1
    assert seen == [(8, 1), (8, 2), (16, 0), (16, 1), (8, 0), (4, 0), (2, 0), (1, 0), (1, 1)]
    top = jnp.float32(2.0**127)  # growing past float32's range keeps the scale
    assert float(adjust_scale(top, jnp.int32(2), jnp.bool_(True), **RULE)[0]) == 2.0**127


def test_unscale_divides_and_says_whether_finite():
    grads, finite = unscale(jax.tree.map(lambda g: g * 1024, _tree()), jnp.float32(1024))
    jax.tree.map(np.testing.assert_array_equal, grads, _tree())  # a power of two: exact
    assert bool(finite)
    assert not bool(unscale({"w": jnp.array([1.0, jnp.inf])}, jnp.float32(2))[1])
    assert not bool(unscale({"w": jnp.array([jnp.nan])}, jnp.float32(2))[1])


def test_a_finite_step_is_the_inner_optimizers_on_the_unscaled_gradients():
    params, scaled = _tree(), dynamic_loss_scale(optim.adam(1e-2), initial_scale=2.0**10, growth_interval=2)
    state, inner = scaled.init(params), optim.adam(1e-2)
    inner_state = inner.init(params)
    for step in range(3):
        grads = jax.tree.map(lambda p: jnp.sin(p + step), params)
        updates, state = scaled.update(jax.tree.map(lambda g: g * state.scale, grads), state, params)
        expected, inner_state = inner.update(grads, inner_state, params)
        jax.tree.map(np.testing.assert_array_equal, updates, expected)  # scaling by 2^k is exact
        jax.tree.map(np.testing.assert_array_equal, state.inner_state, inner_state)
    assert float(state.scale) == 2.0**11 and int(state.good_steps) == 1  # grown after 2 finite steps


@pytest.mark.parametrize("bad", [jnp.inf, -jnp.inf, jnp.nan])
def test_a_nonfinite_step_is_skipped_and_the_scale_shrinks(bad):
    params = _tree()
    for scaled, after in [(dynamic_loss_scale(optim.adam(1e-2), initial_scale=64.0), 32.0),
                          (static_loss_scale(optim.adam(1e-2), 64.0), 64.0)]:
        state = scaled.init(params)
        _, state = scaled.update(params, state, params)  # one finite step: the inner state moves
        grads = {"w": params["w"].at[1, 2].set(bad), "b": params["b"]}
        updates, new_state = scaled.update(grads, state, params)
        assert all(not np.any(u) for u in jax.tree.leaves(updates))
        jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
        assert float(new_state.scale) == after and int(new_state.good_steps) == 0


def test_loss_scale_reads_the_outermost_state():
    params = _tree()
    assert float(loss_scale(static_loss_scale(optim.sgd(0.1), 8.0).init(params))) == 8.0
    assert loss_scale(optim.sgd(0.1).init(params)) is None
    assert isinstance(dynamic_loss_scale(optim.sgd(0.1)).init(params), LossScaleState)


@pytest.mark.parametrize("make, message", [
    (lambda: static_loss_scale(optim.sgd(0.1), 0.0), "static_loss_scale: scale must be a number > 0 that float32 "
                                                     "holds, got scale=0.0"),
    (lambda: static_loss_scale(optim.sgd(0.1), 1e39), "static_loss_scale: scale must be a number > 0 that float32 "
                                                      "holds, got scale=1e+39"),
    (lambda: dynamic_loss_scale(optim.sgd(0.1), backoff_factor=1.0),
     "dynamic_loss_scale: backoff_factor must be in (0, 1), got backoff_factor=1.0"),
    (lambda: dynamic_loss_scale(optim.sgd(0.1), growth_interval=0),
     "dynamic_loss_scale: growth_interval must be an integer >= 1, got growth_interval=0"),
    (lambda: dynamic_loss_scale(optim.sgd(0.1), initial_scale=4.0, min_scale=8.0),
     "dynamic_loss_scale: min_scale (=8.0) must be at most initial_scale (=4.0)"),
    (lambda: dynamic_loss_scale(optim.sgd), "dynamic_loss_scale: expects optimizers with init and update"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value).startswith(message)


# ------------------------------------------------------------------------ with make_train_step and fit


@jax.jit  # one program: eagerly, each draw would be a program of its own to compile
def _draw(key, target_scale):
    kx, ka = jax.random.split(key)
    x = jax.random.normal(kx, (256, 16), jnp.float32)
    return x, target_scale * jnp.tanh(x @ jax.random.normal(ka, (16, 64), jnp.float32) / 4)


@functools.cache
def _problem(target_scale: float):
    """A regression whose targets are `target_scale` small, the loss a mean over 256 x 64 outputs; the
    last layer starts at zero. -> (model, params, state, batch)."""
    x, y = _draw(jax.random.PRNGKey(0), np.float32(target_scale))
    model = serial(Dense(32), Tanh(), Dense(64, w_init=initializers.zeros))
    params, state = jax.jit(lambda key: init_model(model, key, (-1, 16))[1:])(jax.random.PRNGKey(1))
    return model, params, state, {"x": x, "y": y}


def _train(model, optimizer, params, state, batch, steps, mesh=None):
    """-> (the losses, the steps whose update left every parameter as it was, the last step's metrics)."""
    step = make_train_step(model, mean_squared_error(), optimizer, mesh=mesh)
    opt_state, losses, unchanged = optimizer.init(params), [], 0
    for _ in range(steps):
        new, state, opt_state, metrics = step(params, state, opt_state, batch, None)
        unchanged += all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
        params = new
        losses.append(float(metrics["loss"]))
    return losses, unchanged, metrics


def test_train_step_seeds_the_pullback_with_the_scale():
    # A power-of-two scale multiplies every cotangent exactly, and the unscaled gradient is the same bits.
    model, params, state, batch = _problem(1.0)
    plain = _train(model, optim.sgd(0.1), params, state, batch, 3)
    scaled = _train(model, static_loss_scale(optim.sgd(0.1), 2.0**10), params, state, batch, 3)
    assert scaled[0] == plain[0] and float(scaled[2]["loss_scale"]) == 2.0**10 and "loss_scale" not in plain[2]
    mesh = jax.make_mesh((1,), ("data",))  # the data-parallel step carries the scale to every shard
    on_mesh = _train(model, static_loss_scale(optim.sgd(0.1), 2.0**10), params, state, batch, 3, mesh=mesh)
    assert on_mesh[0] == plain[0] and float(on_mesh[2]["loss_scale"]) == 2.0**10


def test_float16_underflows_without_loss_scaling_and_trains_with_it():
    # Targets of 1e-4 averaged over 16384 outputs: the loss's cotangent per output, 2 (p - t) / 16384, is
    # about 1e-8, below float16's smallest subnormal (6e-8): without scaling every gradient is zero.
    model, params, state, batch = _problem(1e-4)
    f16 = with_policy(model, Policy(compute_dtype=jnp.float16))
    sgd = optim.sgd(0.5)
    f32_losses, _, _ = _train(model, sgd, params, state, batch, 40)
    losses, unchanged, _ = _train(f16, sgd, params, state, batch, 40)
    assert unchanged == 40 and losses[-1] == losses[0]  # underflow: no parameter ever moves
    losses, unchanged, metrics = _train(f16, dynamic_loss_scale(sgd), params, state, batch, 40)
    assert unchanged == 0 and float(metrics["loss_scale"]) == 2.0**15
    assert losses[-1] < losses[0] / 2 and f32_losses[-1] < f32_losses[0] / 2  # both learn (convergence)
    # A static scale of 2^50 overflows float16 at every step: all skipped. The dynamic scale from 2^50
    # halves at each overflow until the cotangents fit, then trains.
    losses, unchanged, _ = _train(f16, static_loss_scale(sgd, 2.0**50), params, state, batch, 40)
    assert unchanged == 40 and losses[-1] == losses[0]
    losses, unchanged, metrics = _train(f16, dynamic_loss_scale(sgd, initial_scale=2.0**50), params, state, batch,
                                        60)
    assert 0 < unchanged < 20 and float(metrics["loss_scale"]) < 2.0**50 and losses[-1] < losses[0] / 2


def test_fit_trains_with_a_loss_scaled_optimizer():
    model, params, state, batch = _problem(1e-4)
    result = fit(with_policy(model, Policy(compute_dtype=jnp.float16)), mean_squared_error(),
                 dynamic_loss_scale(optim.sgd(0.5), growth_interval=4), params, state, batch, epochs=3,
                 batch_size=64, seed=0, progress=False)
    assert isinstance(result.opt_state, LossScaleState) and float(result.opt_state.scale) > 2.0**15
    assert len(result.history["loss_scale"]) == 3 and result.history["loss"][-1] < result.history["loss"][0]
