"""fit (purenet.training.fit): it learns, records history and checkpoints, is seeded, stops early and
restores the best epoch, rejects bad arguments, and its non-finite guard stops a run, names the layer
in debug mode and never overwrites the last good checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import compare, upcast
from purenet.combinators import serial
from purenet.core import Layer, init_model
from purenet.data.toy import four_clusters
from purenet.layers.activations import Tanh
from purenet.layers.dense import Dense
from purenet.layers.dropout import Dropout
from purenet.losses import softmax_cross_entropy
from purenet.optim import adam, sgd
from purenet.training import NonFiniteError
from purenet.training.checkpoint import Checkpoint, load_checkpoint
from purenet.training.fit import fit
from purenet.training.step import make_eval_step


def mlp(dropout=0.0):
    layers = [Dense(16), Tanh(), Dense(4)]
    return serial(*layers[:2], Dropout(dropout), layers[2]) if dropout else serial(*layers)


def _toy(num_samples, seed):
    return four_clusters(num_samples, seed=seed, noise=0.4)


def test_fit_learns_and_records_history(key, tmp_path):
    model, loss = mlp(), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    result = fit(model, loss, adam(0.05), params, state, _toy(200, 0), epochs=4, batch_size=32, seed=0,
                 val_data=_toy(64, 1), progress=False, checkpoint_dir=tmp_path / "ckpt")
    history = result.history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 4 for values in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.9

    like = Checkpoint(params, state, adam(0.05).init(params), 0, key)
    saved = load_checkpoint(tmp_path / "ckpt" / "checkpoint.npz", like=like)
    assert saved.step == 4 * 7  # 200 samples in batches of 32: 6 full + a remainder of 8, per epoch
    compare(saved.params, result.params, rtol=0.0, what="params")
    compare(saved.opt_state, result.opt_state, rtol=0.0, what="opt_state")


def test_fit_is_deterministic_by_seed(key):
    model, loss = mlp(dropout=0.2), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    data = _toy(32, 0)  # two full batches: one compilation per fit

    def run(seed):
        return fit(model, loss, adam(0.01), params, state, data, epochs=2, batch_size=16, seed=seed,
                   progress=False)

    first, again, other = run(3), run(3), run(4)
    assert first.history == again.history
    for a, b in zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(again.params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert first.history["loss"] != other.history["loss"]


def test_early_stopping_stops_and_restores_best(key):
    model, loss = mlp(), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    train = _toy(128, 0)
    # Validation labels are shifted by one class: the better the model fits train, the worse val gets.
    val = {"x": train["x"][:64], "y": (train["y"][:64] + 1) % 4}
    patience, epochs = 2, 12
    result = fit(model, loss, adam(0.05), params, state, train, epochs=epochs, batch_size=32, seed=0,
                 val_data=val, early_stopping=patience, progress=False)
    val_loss = result.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert len(val_loss) == best + patience + 1 < epochs
    assert all(len(values) == len(val_loss) for values in result.history.values())
    evaluate = make_eval_step(model, loss)
    compare(evaluate(result.params, result.state, val)["loss"], np.float32(val_loss[best]),  # fit's batches
            truth=evaluate(*upcast((result.params, result.state, val)))["loss"], what="restored val_loss")


def test_fit_rejects_bad_arguments(key):
    model, loss = mlp(), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    data = _toy(8, 0)
    with pytest.raises(ValueError, match=r"fit: train_data must be a dict with keys 'x' and 'y'"):
        fit(model, loss, sgd(0.1), params, state, (data["x"], data["y"]), epochs=1, batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"fit: batch_size must be positive integers, got batch_size=0"):
        fit(model, loss, sgd(0.1), params, state, data, epochs=1, batch_size=0, seed=0)
    with pytest.raises(ValueError, match=r"fit: every array of train_data\['x'\] and train_data\['y'\] .* needs the "
                                         r"same nonzero leading length, the number of examples; got leading lengths "
                                         r"\{x: 8, y: 3\}"):
        fit(model, loss, sgd(0.1), params, state, {"x": data["x"], "y": data["y"][:3]}, epochs=1,
            batch_size=4, seed=0)


# ------------------------------------------------------------------------------ non-finite values


def _poison_after(steps: int):
    """A layer that adds NaN to its input from its `steps`-th training call on (a step counter in its
    state): a fault injected into a run that was healthy so far. dx = dy."""

    def init(key, in_shape):
        return in_shape, {}, {"calls": jnp.zeros((), jnp.int32)}

    def apply(params, state, x, *, key=None, train=False):
        y = x + jnp.where(state["calls"] >= steps, jnp.nan, 0.0).astype(x.dtype)
        return y, ({"calls": state["calls"] + 1} if train else state)

    def vjp(params, state, x, *, key=None, train=False):
        y, new_state = apply(params, state, x, train=train)
        return y, new_state, lambda dy: ({}, dy)

    return Layer(init, apply, vjp, "Poison")


def test_nonfinite_guard_stops_and_leaves_the_last_good_checkpoint_intact(key, tmp_path):
    model, loss = serial(Dense(8), _poison_after(4), Tanh(), Dense(4)), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    data = _toy(40, 0)  # 4 steps of 10 per epoch: epoch 1 is healthy, step 5 (epoch 2) is not
    healthy = fit(model, loss, sgd(0.1), params, state, data, epochs=1, batch_size=10, seed=0, progress=False)
    with pytest.raises(NonFiniteError) as error:
        fit(model, loss, sgd(0.1), params, state, data, epochs=3, batch_size=10, seed=0, progress=False,
            checkpoint_dir=tmp_path)
    path = str(tmp_path / "checkpoint.npz")
    assert str(error.value) == (
        f"fit: the training loss is nan at epoch 2, step 5; training stopped. The last good checkpoint, {path}, "
        "holds epoch 1 (step 4); it is not overwritten. To name the first layer whose output or gradient is "
        "non-finite, pass debug_nonfinite=True (or call purenet.training.locate_nonfinite on that batch); a NaN "
        "in the data, an out-of-range label or a too large learning rate are the usual causes.")
    assert (error.value.epoch, error.value.step, error.value.checkpoint) == (2, 5, path)
    saved = load_checkpoint(path, like=Checkpoint(params, state, sgd(0.1).init(params), 0, key))
    assert saved.step == 4 and all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(saved.params))
    compare(saved.params, healthy.params, rtol=0.0, what="params")  # epoch 1's, not the poisoned ones


def test_debug_mode_names_the_first_layer_and_a_nan_in_the_data(key, tmp_path):
    model, loss = serial(Dense(8), _poison_after(2), Tanh(), Dense(4)), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    with pytest.raises(NonFiniteError, match=r"fit: the training loss is nan at epoch 1, step 3; training stopped\. "
                                             r"No checkpoint is written \(checkpoint_dir=None\)\. First non-finite "
                                             r"value, replaying that step eagerly: Serial > child 1 \(Poison\): "
                                             r"non-finite output \(value: 80 nan, 0 inf of 80 values\)"):
        fit(model, loss, sgd(0.1), params, state, _toy(40, 0), epochs=1, batch_size=10, seed=0, progress=False,
            debug_nonfinite=True)
    # The case: one NaN pixel. Without a checkpoint of this run, an older file stays untouched.
    clean = serial(Dense(8), Tanh(), Dense(4))
    _, params, state = init_model(clean, key, (-1, 2))
    data = _toy(40, 0)
    data["x"] = data["x"].copy()
    data["x"][7, 1] = np.nan
    (tmp_path / "checkpoint.npz").write_bytes(b"an older run's file")
    with pytest.raises(NonFiniteError, match=r"at epoch 1, step \d; training stopped\. No checkpoint was written "
                                             r"before it: .* is untouched\. First non-finite value, replaying that "
                                             r"step eagerly: batch\['x'\]: non-finite input \(value: 1 nan"):
        fit(clean, loss, sgd(0.1), params, state, data, epochs=2, batch_size=10, seed=0, progress=False,
            checkpoint_dir=tmp_path, debug_nonfinite=True)
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"an older run's file"


def test_fit_names_an_uncalled_factory(key):
    with pytest.raises(TypeError, match=r"fit: loss must be a Loss such as losses\.softmax_cross_entropy\(\), with "
                                        r"apply and vjp, got the function softmax_cross_entropy: call it first"):
        fit(mlp(), softmax_cross_entropy, adam(0.1), {}, {}, _toy(8, 0), epochs=1, batch_size=4, seed=0)


def test_fit_drops_a_last_batch_of_one_that_batchnorm_cannot_normalize(key):
    from purenet.layers import BatchNorm

    model, loss = serial(Dense(8), BatchNorm(), Tanh(), Dense(4)), softmax_cross_entropy()
    _, params, state = init_model(model, key, (-1, 2))
    data = _toy(9, 0)  # batches of 4, 4 and 1
    result = fit(model, loss, sgd(0.1), params, state, data, epochs=1, batch_size=4, seed=0, progress=False)
    assert np.isfinite(result.history["loss"][0])
    with pytest.raises(ValueError, match=r"BatchNorm: train=True needs at least 2 values per channel to take batch "
                                         r"statistics over, got input of shape \(1, 8\) \(1 per channel\)"):
        fit(model, loss, sgd(0.1), params, state, data, epochs=1, batch_size=4, seed=0, progress=False,
            drop_last=False)
