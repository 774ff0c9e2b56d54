"""Checkpoints: bitwise round trip, bitwise resume, validation against the template, corruption,
atomic writes."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purenet.training import checkpoint
from purenet.training.checkpoint import Checkpoint, CorruptCheckpointError, load_checkpoint, save_checkpoint
from purenet import optim
from purenet.combinators import serial
from purenet.core import init_model
from purenet.layers import Dense, Tanh
from purenet.losses import mean_squared_error
from purenet.training.step import make_train_step


def _mlp():
    return serial(Dense(8), Dense(2))


def _setup(key, make_optimizer=optim.adam):
    model = _mlp()
    _, params, state = init_model(model, key, (-1, 3))
    optimizer = make_optimizer(1e-2)
    return model, params, state, optimizer, optimizer.init(params)


def _like(params, state, opt_state, key):
    return Checkpoint(params, state, opt_state, 0, key)


def assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("make_optimizer", [optim.adam, optax.adam], ids=["purenet_adam", "optax_adam"])
@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key], ids=["raw", "typed"])
def test_round_trip_is_bitwise(tmp_path, key, make_key, make_optimizer):
    _, params, _, _, opt_state = _setup(key, make_optimizer)
    state = {"mean": jnp.arange(3.0, dtype=jnp.float64), "count": jnp.int32(7),
             "half": jnp.ones(2, jnp.bfloat16)}
    rng_key = make_key(42)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, step=123, key=rng_key)
    loaded = load_checkpoint(path, like=_like(params, state, opt_state, make_key(0)))
    assert loaded.step == 123
    assert type(loaded.opt_state[0]) is type(opt_state[0])  # a ScaleByAdamState NamedTuple
    assert type(loaded.opt_state[0]).__name__ == "ScaleByAdamState"
    assert_bitwise_equal(loaded.params, params)
    assert_bitwise_equal(loaded.state, state)
    assert_bitwise_equal(loaded.opt_state, opt_state)
    assert_bitwise_equal(loaded.key, rng_key)
    np.testing.assert_array_equal(jax.random.normal(loaded.key, (3,)), jax.random.normal(rng_key, (3,)))


def test_template_may_be_abstract(tmp_path, key):
    _, params, state, _, opt_state = _setup(key)
    save_checkpoint(tmp_path / "c.npz", params=params, state=state, opt_state=opt_state, step=1, key=key)
    like = jax.eval_shape(lambda: _like(params, state, opt_state, key))
    assert_bitwise_equal(load_checkpoint(tmp_path / "c.npz", like=like).params, params)


def test_file_is_plain_npz_without_pickle(tmp_path, key):
    _, params, state, _, opt_state = _setup(key)
    save_checkpoint(tmp_path / "c.npz", params=params, state=state, opt_state=opt_state, step=5, key=key)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:
        names = set(npz.files)
        meta = np.asarray(npz["__meta__"])
    assert {"__meta__", "__sha256__", "['params'][0]['w']", "['opt_state'][0].mu[1]['b']"} <= names
    assert meta.dtype == np.uint8 and b'"step": 5' in meta.tobytes()


def test_resume_is_bitwise_identical(tmp_path, key):
    model, params, state, optimizer, opt_state = _setup(key)
    step = make_train_step(model, mean_squared_error(), optimizer)
    kd = jax.random.fold_in(key, 2)
    rng = np.random.default_rng(0)  # NumPy's draws: eagerly, each jax.random draw is a program to compile
    batches = [{"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=(4, 2)).astype(np.float32)}
               for _ in range(6)]

    def run(params, state, opt_state, first, last):
        for i in range(first, last):
            key_i = jax.random.fold_in(kd, i)
            params, state, opt_state, _ = step(params, state, opt_state, batches[i], key_i)
        return params, state, opt_state

    straight = run(params, state, opt_state, 0, 6)
    half = run(params, state, opt_state, 0, 3)
    path = tmp_path / "half.npz"
    save_checkpoint(path, params=half[0], state=half[1], opt_state=half[2], step=3, key=kd)
    loaded = load_checkpoint(path, like=_like(params, state, opt_state, kd))
    resumed = run(loaded.params, loaded.state, loaded.opt_state, loaded.step, 6)
    assert_bitwise_equal(resumed, straight)
    assert not np.array_equal(straight[0][0]["w"], params[0]["w"])  # training did move the params


def _saved(tmp_path, key):
    _, params, state, _, opt_state = _setup(key)
    path = tmp_path / "c.npz"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, step=1, key=key)
    return path, params, state, opt_state


def test_wrong_structure_names_the_leaf(tmp_path, key):
    path, params, state, opt_state = _saved(tmp_path, key)
    params_extra = (params[0], params[1] | {"scale": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"missing leaves \[.*\['params'\]\[1\]\['scale'\]"):
        load_checkpoint(path, like=_like(params_extra, state, opt_state, key))
    with pytest.raises(ValueError, match=r"unexpected leaves \[.*\['opt_state'\]\[0\]\.mu"):
        load_checkpoint(path, like=_like(params, state, optim.sgd(0.1).init(params), key))


def test_wrong_shape_or_dtype_names_the_leaf(tmp_path, key):
    path, params, state, opt_state = _saved(tmp_path, key)
    wider = (params[0] | {"w": jnp.zeros((3, 9), jnp.float32)}, params[1])
    with pytest.raises(ValueError, match=r"\['params'\]\[0\]\['w'\]: expected shape \(3, 9\) float32, "
                                         r"found shape \(3, 8\) float32"):
        load_checkpoint(path, like=_like(wider, state, opt_state, key))
    doubles = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    with pytest.raises(ValueError, match=r"\['params'\]\[0\]\['b'\]: expected shape \(8,\) float64, "
                                         r"found shape \(8,\) float32"):
        load_checkpoint(path, like=_like(doubles, state, opt_state, key))
    typed = r"\['key'\]: expected shape \(\) key<fry>, found shape \(2,\) uint32"
    with pytest.raises(ValueError, match=typed):
        load_checkpoint(path, like=_like(params, state, opt_state, jax.random.key(0)))


def test_truncated_file_raises(tmp_path, key):
    path, params, state, opt_state = _saved(tmp_path, key)
    data = path.read_bytes()
    like = _like(params, state, opt_state, key)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
            load_checkpoint(path, like=like)


def test_flipped_byte_raises(tmp_path, key):
    path, params, state, opt_state = _saved(tmp_path, key)
    data = bytearray(path.read_bytes())
    offset = data.find(np.asarray(params[0]["w"]).tobytes()[:16])  # inside the first weight matrix
    assert offset > 0
    data[offset + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="corrupt"):
        load_checkpoint(path, like=_like(params, state, opt_state, key))


def test_digest_catches_a_consistent_rewrite(tmp_path, key):
    """A leaf replaced through numpy (valid zip, right CRCs) still fails the SHA-256."""
    path, params, state, opt_state = _saved(tmp_path, key)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["['params'][0]['w']"] = entries["['params'][0]['w']"] + 1
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        load_checkpoint(path, like=_like(params, state, opt_state, key))


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, key, monkeypatch):
    path, params, state, opt_state = _saved(tmp_path, key)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    later = jax.tree_util.tree_map(lambda a: a + 1, params)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, params=later, state=state, opt_state=opt_state, step=2, key=key)
    monkeypatch.undo()

    def broken_savez(file, **entries):
        file.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, params=later, state=state, opt_state=opt_state, step=2, key=key)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in pathlib.Path(tmp_path).iterdir()) == ["c.npz"]
    assert load_checkpoint(path, like=_like(params, state, opt_state, key)).step == 1


def test_missing_file_is_file_not_found(tmp_path, key):
    _, params, state, _, opt_state = _setup(key)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(os.path.join(tmp_path, "absent.npz"), like=_like(params, state, opt_state, key))


# ------------------------------------------------------------------------------- across versions


def _v1_mlp():
    return serial(Dense(4), Tanh(), Dense(2))


def test_a_checkpoint_written_by_purenet_0_1_loads(key):
    # tests/training/data/v1_mlp_adam.npz: written by purenet 0.1.0 (commit 6897362) for
    # serial(Dense(4), Tanh(), Dense(2)) on (-1, 3) at PRNGKey(0), Adam state, step 7.
    _, params, state = init_model(_v1_mlp(), jax.random.PRNGKey(0), (-1, 3))
    optimizer = optim.adam(1e-3)
    like = Checkpoint(params, state, optimizer.init(params), 0, jax.random.PRNGKey(0))
    loaded = load_checkpoint(pathlib.Path(__file__).parent / "data" / "v1_mlp_adam.npz", like=like)
    assert loaded.step == 7
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_a_positional_checkpoint_into_a_named_model_fails_saying_why(tmp_path, key):
    _, params, state = init_model(_v1_mlp(), key, (-1, 3))
    save_checkpoint(tmp_path / "old.npz", params=params, state=state, opt_state=(), step=1, key=None)
    named = serial(hidden=Dense(4), act=Tanh(), head=Dense(2))
    _, params, state = init_model(named, key, (-1, 3))
    with pytest.raises(ValueError, match=r"names layers by position.*missing leaves \[\"\['params'\]\['head'\]"):
        load_checkpoint(tmp_path / "old.npz", like=Checkpoint(params, state, (), 0, None))


def test_a_directory_is_not_a_checkpoint(tmp_path, key):
    _, params, state, _, opt_state = _setup(key)
    like = _like(params, state, opt_state, key)
    with pytest.raises(IsADirectoryError, match=rf"Checkpoint: {tmp_path} is a directory, expected a checkpoint file "
                                                rf"\(fit writes {tmp_path / 'checkpoint.npz'}\)"):
        load_checkpoint(tmp_path, like=like)
    with pytest.raises(IsADirectoryError, match=r"Checkpoint: .* is a directory"):
        save_checkpoint(tmp_path, params=params, state=state, opt_state=opt_state, step=0, key=key)
    assert list(tmp_path.iterdir()) == []
