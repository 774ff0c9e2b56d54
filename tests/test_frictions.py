"""Issue 24 replayed: what a Flax, Equinox or PyTorch user tripped on, one test per friction, each showing
the new behaviour (the message quoted where there is one: the old one is in the test's comment).

1 weights-only files; 2 fit on structured inputs, key padding masks, masked mean pooling; 3 the checker's
contract checks (tests/test_check.py); 4 BatchNorm(axis_name) without a mesh; 5 a custom layer as the
whole model; 6 habits from other libraries; 7 the JAX bridge; 8 float64 without x64; 9 generate past the
context; 10 installing, py.typed, help, tqdm, optax, the stateful custom layer, exact GELU; 11 NaN batches,
unknown sizes, float16 into an LSTM; and the model summary.
"""

import ast
import os
import pathlib
import pydoc
import sys
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet as pn
from purenet.check import GradientMismatch, check_layer
from purenet.core import Layer
from purenet.data.toy import four_clusters
from tests.helpers import EXPERIMENTS, random_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = jax.random.PRNGKey(0)


def mlp():
    return pn.serial(dense=pn.Dense(8), act=pn.Tanh(), head=pn.Dense(4))


# --------------------------------------------------------------------------- 1. weights-only files


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_weights_round_trip_as_a_tree_or_against_a_template(tmp_path, suffix):
    model = pn.serial(conv=pn.Conv2D(3, 2), bn=pn.BatchNorm(), flat=pn.Flatten(), head=pn.Dense(2))
    _, params, state = pn.init_model(model, KEY, (-1, 4, 4, 1))
    path = tmp_path / f"w.{suffix}"
    pn.save_weights(path, params, state)
    for loaded in (pn.load_weights(path), pn.load_weights(path, like=(params, state))):
        assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure((params, state))
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves((params, state))))
    shapes = jax.eval_shape(lambda: (params, state))  # a template of ShapeDtypeStructs is enough
    assert jax.tree.leaves(pn.load_weights(path, like=shapes))[0].shape == jax.tree.leaves(params)[0].shape
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)  # a dtype numpy cannot name
    pn.save_weights(path, bf16, state)
    assert pn.load_weights(path)[0]["head"]["w"].dtype == jnp.bfloat16
    if suffix == "safetensors":  # the ecosystem's reader sees named tensors
        from safetensors.numpy import load_file

        assert {"params/conv/w", "params/head/b", "state/bn/mean"} <= set(load_file(path))


def test_weights_of_another_model_name_the_first_leaf_briefly(tmp_path):
    small, big = pn.models.mlp((8,), 3), pn.models.mlp((16, 16, 16, 16), 3)
    path = tmp_path / "w.safetensors"
    pn.save_weights(path, *pn.init_model(small, KEY, (-1, 5))[1:])
    template = lambda model: jax.eval_shape(lambda: pn.init_model(model, KEY, (-1, 5))[1:])  # shapes, no draws
    with pytest.raises(ValueError) as error:
        pn.load_weights(path, like=template(big))
    message = str(error.value)
    assert message.startswith("load_weights: ") and "and 1 more)" in message
    assert "6 missing from the file (params/dense1/b, params/dense1/w, " in message
    assert len(message) < 600
    with pytest.raises(ValueError, match=r"load_weights: leaf params/dense0/b: the file has shape \(8,\) float32, "
                                         r"like= has \(16,\) float32"):
        pn.load_weights(path, like=template(pn.models.mlp((16,), 3)))


def test_weights_come_out_of_a_checkpoint_trained_with_another_optimizer(tmp_path):
    # Old: load_checkpoint with a constant rate where training used a schedule:
    #   `unexpected leaves ["['opt_state'][1][2].count"]`; opt_state=None listed every mu/nu leaf.
    model = mlp()
    params, state = random_params(model, (-1, 2), np.float32)
    scheduled = pn.optim.adam(pn.schedules.cosine_decay_schedule(1e-2, 100))
    pn.fit(model, pn.softmax_cross_entropy(), scheduled, params, state, four_clusters(32), epochs=1, batch_size=16,
           seed=0, progress=False, checkpoint_dir=tmp_path)
    checkpoint = tmp_path / "checkpoint.npz"
    with pytest.raises(ValueError) as error:
        pn.load_checkpoint(checkpoint, like=pn.Checkpoint(params, state, None, 0, KEY))
    assert len(str(error.value)) < 700 and "... and" in str(error.value)
    assert "call purenet.load_weights(path, like=(params, state))" in str(error.value)
    weights = pn.load_weights(checkpoint, like=(params, state))
    saved = pn.load_checkpoint(checkpoint, like=pn.Checkpoint(params, state, scheduled.init(params), 0, KEY))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(weights), jax.tree.leaves(saved.params)))


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    params = {"w": jnp.ones(3)}
    pn.save_weights(path, params)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        pn.save_weights(path, {"w": jnp.zeros(3)})
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["w.npz"]
    with pytest.raises(ValueError, match=r"save_weights: path must end in \.safetensors or \.npz"):
        pn.save_weights(tmp_path / "w.pkl", params)


# ------------------------------------------------------------- 2. structured inputs and padding


def padded_text(n, t=6, vocab=12, seed=0):
    """Token ids with padding (id 0) after a random length >= 1, the valid mask, and a label: whether
    token 1 occurs among the real tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, t)).astype(np.int32)
    lengths = rng.integers(1, t + 1, n)
    valid = np.arange(t)[None, :] < lengths[:, None]
    ids = np.where(valid, ids, 0)
    return ids, valid, np.any((ids == 1) & valid, axis=1).astype(np.int32)


def classifier():
    """(ids, mask) -> logits: embedding, one encoder block with a key padding mask, masked mean pool."""
    embed = pn.at(0, pn.serial(embed=pn.Embedding(12, 8), pos=pn.LearnedPositions(6)))
    return pn.serial(embed=embed, block=pn.EncoderBlock(2, 16, activation="gelu_exact"),
                     pool=pn.MaskedMeanPool(), head=pn.Dense(2))


def test_fit_trains_on_a_tuple_input_with_a_key_padding_mask():
    # Old: `fit: train_data['x'] and train_data['y'] need the same nonzero length, got 2 and 2048`.
    # fit runs its steps with run_steps (purenet.training.loop) on batches {"x": (ids, mask), "y": y}: this is
    # also run_steps on a dict batch holding a tuple input.
    ids, valid, y = padded_text(64)
    model = classifier()
    params, state = random_params(model, ((-1, 6), (-1, 6)), np.float32)  # numpy draws, no eager init
    result = pn.fit(model, pn.softmax_cross_entropy(), pn.optim.adam(1e-2), params, state,
                    {"x": (ids, valid), "y": y}, epochs=2, batch_size=16, seed=0, progress=False,
                    val_data={"x": (ids[:20], valid[:20]), "y": y[:20]})
    assert all(np.isfinite(v).all() for v in result.history.values())
    with pytest.raises(ValueError) as error:
        pn.fit(model, pn.softmax_cross_entropy(), pn.optim.adam(1e-2), params, state,
               {"x": (ids, valid[:10]), "y": y}, epochs=1, batch_size=16, seed=0)
    assert "got leading lengths {x[0]: 64, x[1]: 10, y: 64}" in str(error.value)


def test_the_key_padding_mask_equals_the_broadcast_one():
    _, valid, _ = padded_text(8)
    attn = pn.MultiHeadAttention(2)
    x = np.random.default_rng(0).normal(size=(8, 6, 4))  # float64
    p, s = random_params(attn, ((-1, 6, 4), (-1, 6)), np.float32)
    broadcast = jnp.broadcast_to(jnp.asarray(valid)[:, None, None, :], (8, 1, 6, 6))
    both = jax.jit(lambda p, x: (attn.apply(p, s, (x, jnp.asarray(valid)))[0], attn.apply(p, s, (x, broadcast))[0]))
    np.testing.assert_allclose(*both(p, x), rtol=1e-12)


def test_masked_mean_pool_averages_the_real_positions():
    x = jnp.arange(12.0).reshape(2, 3, 2)
    mask = jnp.array([[True, True, False], [False, False, False]])
    y, _ = pn.MaskedMeanPool().apply({}, {}, (x, mask))
    np.testing.assert_array_equal(y, [[1.0, 2.0], [0.0, 0.0]])  # a row without positions gives 0


# --------------------------------------------------------------- 3. the checker's contract checks


def test_the_checker_names_a_broken_contract_and_every_failing_leaf(key):
    # Old: `ValueError: too many values to unpack (expected 2)` at check.py:224; JAX's `unexpected JAX
    # type ... argument to VJP function`; GradientMismatch named only dx while dparams['w2'] was wrong too.
    inner = pn.Dense(3)

    def dx_only(params, state, x, *, key=None, train=False):
        y, state, pullback = inner.vjp(params, state, x)
        return y, state, lambda dy: pullback(dy)[1]

    with pytest.raises(ValueError, match=r"check_layer: DxOnly's pullback must return \(dparams, dx\)"):
        check_layer(Layer(inner.init, inner.apply, dx_only, "DxOnly"), (2, 4), key=key)

    def skewed(params, state, x, *, key=None, train=False):
        y, state, pullback = inner.vjp(params, state, x)
        return y, state, lambda dy: jax.tree.map(lambda a: 2 * a, pullback(dy))

    with pytest.raises(GradientMismatch) as error:
        check_layer(Layer(inner.init, inner.apply, skewed, "Skewed"), (2, 4), key=key)
    assert all(leaf in str(error.value) for leaf in ("Skewed.dx", "Skewed.dparams['w']", "Skewed.dparams['b']"))


# ------------------------------------------------------------------ 4. BatchNorm without a mesh


def test_batchnorm_with_an_axis_name_runs_on_one_device_as_a_plain_batchnorm():
    # Old: `NameError: unbound axis name: data`, naming no layer.
    synced, plain = pn.BatchNorm(axis_name="data"), pn.BatchNorm()
    _, params, state = synced.init(KEY, (8, 3))
    x = jax.random.normal(KEY, (8, 3))
    for a, b in zip(jax.tree.leaves(synced.apply(params, state, x, train=True)),
                    jax.tree.leaves(plain.apply(params, state, x, train=True))):
        np.testing.assert_array_equal(a, b)
    model = pn.serial(dense=pn.Dense(4), bn=pn.BatchNorm(axis_name="data"), head=pn.Dense(4))
    _, params, state = pn.init_model(model, KEY, (-1, 2))
    optimizer = pn.optim.sgd(0.1)
    step = pn.make_train_step(model, pn.softmax_cross_entropy(), optimizer)
    params, state, _, metrics = step(params, state, optimizer.init(params), four_clusters(8), KEY)
    assert np.isfinite(metrics["loss"]) and float(jnp.abs(state["bn"]["mean"]).sum()) > 0


# --------------------------------------------------------------- 5. a custom layer as the model


def y_alone():
    inner = pn.Dense(4)

    def apply(params, state, x, *, key=None, train=False):
        return inner.apply(params, state, x)[0]  # forgets the state

    def vjp(params, state, x, *, key=None, train=False):
        y, _, pullback = inner.vjp(params, state, x)
        return y, pullback  # forgets the state

    return Layer(inner.init, apply, vjp, "Gated")


def test_a_custom_layer_used_as_the_whole_model_is_checked():
    # Old: the (N, 4) output unpacked along the batch, and the error blamed the labels.
    model, loss = y_alone(), pn.softmax_cross_entropy()
    _, params, state = model.init(KEY, (-1, 2))
    data = four_clusters(8)
    optimizer = pn.optim.sgd(0.1)
    with pytest.raises(ValueError, match=r"^make_train_step: Gated\.vjp must return \(y, new_state, pullback\), "
                                         r"got a tuple of 2 \(array, function\)"):
        pn.make_train_step(model, loss, optimizer)(params, state, optimizer.init(params), data, KEY)
    with pytest.raises(ValueError, match=r"^make_eval_step: Gated\.apply must return \(y, new_state\), got an "
                                         r"array of shape \(8, 4\)"):
        pn.make_eval_step(model, loss)(params, state, data)
    with pytest.raises(ValueError, match=r"^make_train_step: Gated\.vjp must return"):
        pn.fit(model, loss, optimizer, params, state, data, epochs=1, batch_size=8, seed=0, progress=False)


# ---------------------------------------------------------- 6. habits from other libraries

_, MLP_PARAMS, MLP_STATE = mlp().init(KEY, (-1, 2))


def train_step_call(batch=None, opt_state=None):
    model, optimizer = mlp(), pn.optim.adam(1e-3)
    step = pn.make_train_step(model, pn.softmax_cross_entropy(), optimizer)
    opt_state = optimizer.init(MLP_PARAMS) if opt_state is None else opt_state
    return step(MLP_PARAMS, MLP_STATE, opt_state, four_clusters(4) if batch is None else batch, KEY)


HABITS = {  # habit -> (call, the error's type, the message's start); the old message in the comment
    # `tuple indices must be integers or slices, not str` (loop.py:70)
    "tuple batch": (lambda: train_step_call(batch=(np.zeros((4, 2), np.float32), np.zeros(4, np.int32))),
                    TypeError, "make_train_step: batch must be a dict {'x': inputs, 'y': targets}, got a tuple of 2: "
                               "write {'x': x, 'y': y} for an (x, y) pair"),
    # `KeyError: 'x'`
    "wrong batch keys": (lambda: train_step_call(batch={"image": np.zeros((4, 2)), "label": np.zeros(4, int)}),
                         TypeError, "make_train_step: batch must be a dict {'x': inputs, 'y': targets}, got a dict "
                                    "with keys ['image', 'label']: name the model's input 'x'"),
    # `add got incompatible shapes for broadcasting: (16,), (4,)` / JAX's "pytree structure error"
    "another model's opt_state": (
        lambda: train_step_call(opt_state=pn.optim.adam(1e-3).init(random_params(pn.models.mlp((5,), 4), (-1, 2),
                                                                                  np.float32)[0])),
        ValueError, "make_train_step: opt_state"),
    "another optimizer's opt_state": (lambda: train_step_call(opt_state=pn.optim.sgd(0.1).init(MLP_PARAMS)),
                                      ValueError, "make_train_step: opt_state does not have the tree"),
    # `Shapes must be 1D sequences of concrete values of integer type, got (Array(...), 3)`
    "init(key, data)": (lambda: pn.Dense(3).init(KEY, jnp.ones((2, 4), jnp.float32)), ValueError,
                        "Dense: init(key, in_shape) takes the input's shape, not data: got an array of shape (2, 4) "
                        "float32; call init(key, x.shape)"),
    # `missing 1 required positional argument: 'x'`
    "apply(params, x)": (lambda: mlp().apply(MLP_PARAMS, jnp.ones((2, 2))), TypeError,
                         "Serial: apply(params, state, x, *, key=None, train=False) got 2 of its 3 arguments: pass "
                         "the state init returned"),
    # `takes 3 positional arguments but 4 were given`
    "key positionally": (lambda: mlp().apply(MLP_PARAMS, MLP_STATE, jnp.ones((2, 2)), KEY), TypeError,
                         "Serial: apply takes key and train as keywords: apply(params, state, x, key=key, "
                         "train=True), got 1 more positional argument(s): an array of shape (2,) uint32"),
    # `'Layer' object is not callable`
    "layer(x)": (lambda: mlp()(jnp.ones((2, 2))), TypeError, "Serial: a Layer is not called like a function"),
    # `'Loss' object is not callable`
    "loss(pred, y)": (lambda: pn.softmax_cross_entropy()(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32)), TypeError,
                      "SoftmaxCrossEntropy: a Loss is not called like a function"),
    # `TypeError: 'int' object is not iterable` inside JAX's tree code
    "None batch": (lambda: pn.Dense(3).init(KEY, (None, 4)), ValueError,
                   "Dense: in_shape (None, 4) holds None: write -1 for an unknown batch size (Keras and TensorFlow "
                   "write None), e.g. init(key, (-1, 4))"),
    # `Only non-negative indices are allowed when broadcasting static shapes, but got shape (-1, 3).`
    "unknown feature size": (lambda: pn.Dense(3).init(KEY, (-1, -1)), ValueError,
                             "Dense: in_shape (-1, -1) has an unknown size (-1) past the batch axis: only the batch "
                             "size (axis 0) may be -1"),
}


@pytest.mark.parametrize("habit", HABITS)
def test_habits_from_other_libraries_are_named_with_what_to_write(habit):
    call, kind, start = HABITS[habit]
    with pytest.raises(kind) as error:
        call()
    assert str(error.value).startswith(start), str(error.value)


# -------------------------------------------------------------------------------- 7. the bridge


def test_the_bridge_is_at_the_top_keeps_state_and_refuses_forward_mode():
    # Old: only purenet.check.as_jax_function, a one-line docstring; BatchNorm's new state dropped silently;
    # jacfwd failed with JAX's custom_vjp message.
    assert pn.as_jax_function is pn.check.as_jax_function
    assert (ROOT / "docs" / "guides" / "jax-bridge.md").is_file()
    bn = pn.BatchNorm()
    _, params, state = bn.init(KEY, (4, 3))
    with pytest.raises(ValueError, match=r"as_jax_function: BatchNorm has state .* pass with_state=True"):
        pn.as_jax_function(bn, state, train=True)
    f = pn.as_jax_function(bn, state, train=True, with_state=True)
    x = jax.random.normal(KEY, (4, 3))
    y, new_state = f(params, x)
    expected, expected_state = bn.apply(params, state, x, train=True)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(new_state["mean"], expected_state["mean"])
    with pytest.raises(TypeError, match=r"as_jax_function: BatchNorm has a handwritten pullback \(reverse mode\) "
                                        r"and no forward-mode rule"):
        jax.jacfwd(lambda x: f(params, x)[0])(x)


# -------------------------------------------------------------------- 8, 9. float64 and generate


def test_float64_without_x64_fails_instead_of_giving_float32():
    # Old: float32 params, and JAX's UserWarning only.
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match=r"init_model: dtype=float64 needs 64-bit mode, which is off: call "
                                             r"jax\.config\.update\('jax_enable_x64', True\)"):
            pn.init_model(pn.Dense(2), KEY, (-1, 3), dtype=jnp.float64)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_generate_past_the_context_counts_the_prompt_and_the_new_tokens():
    # Old: `cannot decode max_len=74 positions, the table has max_len=64`.
    model = pn.models.gpt(pn.models.GPTConfig(vocab_size=11, context=8, layers=1, d_model=8, heads=2))
    params, _ = random_params(model, (-1, 8), np.float32)
    with pytest.raises(ValueError, match=r"^generate: the prompt \(4 positions\) plus length=6 new tokens need 10 "
                                         r"positions, more than TiedLM can decode: LearnedPositions: cannot decode "
                                         r"max_len=10 positions, the table has max_len=8"):
        pn.models.generate(model, params, jnp.zeros((2, 4), jnp.int32), KEY, length=6)


# ----------------------------------------------------------------------------------- 10. smaller


def test_install_paragraph_py_typed_and_the_optax_extra():
    readme = (ROOT / "README.md").read_text()
    assert "## Use purenet in your project" in readme and "make install" in readme and "pip install" in readme
    assert (ROOT / "purenet" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["purenet"]
    assert project["project"]["optional-dependencies"]["optax"] == ["optax>=0.2.2"]


def test_help_shows_no_forward_refs():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(pn.__path__, "purenet."):
        importlib.import_module(info.name)
    pn._readable_signatures()  # modules imported after purenet's own import (purenet.data.text)
    for name, module in list(sys.modules.items()):
        if name.startswith("purenet"):
            for obj in list(vars(module).values()):
                if isinstance(obj, type) and issubclass(obj, tuple) and obj.__module__ == name:
                    assert "ForwardRef" not in pydoc.render_doc(obj), f"{name}.{obj.__name__}"


def test_progress_is_a_line_per_epoch_off_a_terminal(capsys):
    def step(params, state, opt_state, batch, key):
        return params + 1, state, opt_state, {"loss": params}

    pn.training.run_steps(step, jnp.zeros(()), {}, {}, lambda t: None, key=KEY, steps=4, eval_every=2,
                          progress="epoch")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: 2 steps, ") and lines[1].startswith("epoch 2/2")


def test_the_custom_layer_guide_shows_a_stateful_layer():
    assert "## A layer with state" in (ROOT / "docs" / "guides" / "custom-layer.md").read_text()


def test_exact_gelu_is_the_activation_pytorch_calls_gelu():
    ff = pn.FeedForward(8, activation="gelu_exact")
    params, state = random_params(ff, (-1, 4), np.float32)
    x = jax.random.normal(KEY, (3, 4))

    @jax.jit  # ours and the formula in one program
    def both(params, x):  # float64 x
        h = x @ params["w_in"] + params["b_in"][None]
        return ff.apply(params, state, x)[0], jax.nn.gelu(h, approximate=False) @ params["w_out"] + params["b_out"][None]

    np.testing.assert_allclose(*both(params, x), rtol=1e-12)
    jax.eval_shape(lambda: pn.EncoderBlock(2, 8, activation="gelu_exact").init(KEY, (-1, 3, 4))[1:])  # blocks too


# ---------------------------------------------------------------------------- 11. still raw before


def test_a_nan_batch_is_skipped_by_the_train_step():
    # Old: every weight NaN after one step, no guard.
    model, optimizer = mlp(), pn.optim.adam(1e-2)
    params, state = random_params(model, (-1, 2), np.float32)
    data = four_clusters(8)
    data["x"] = data["x"].copy()
    data["x"][3, 0] = np.nan
    step = pn.make_train_step(model, pn.softmax_cross_entropy(), optimizer)
    new, _, opt_state, metrics = step(params, state, optimizer.init(params), data, KEY)
    assert float(metrics["skipped"]) == 1.0 and not np.isfinite(float(metrics["loss"]))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(opt_state),
                                                    jax.tree.leaves(optimizer.init(params))))
    applying = pn.make_train_step(model, pn.softmax_cross_entropy(), optimizer, skip_nonfinite=False)
    assert not np.isfinite(applying(params, state, optimizer.init(params), data, KEY)[0]["head"]["w"]).any()


def test_float16_input_into_a_float32_lstm():
    # Old: `lax.scan`'s "carry input and carry output must have equal types".
    lstm = pn.LSTM(4)
    params, state = random_params(lstm, (2, 3, 5), np.float32)
    x = jax.random.normal(KEY, (2, 3, 5)).astype(jnp.float16)

    @jax.jit  # one program: ours with the float16 input, the float32 reference and the float64 truth
    def run(params, x):
        y, _, pullback = lstm.vjp(params, state, x)
        return (y, pullback(jnp.ones_like(y))[1], lstm.apply(params, state, x.astype(jnp.float32))[0],
                lstm.apply(pn.check.upcast(params), state, x.astype(jnp.float64))[0])

    y, dx, reference, truth = run(params, x)
    assert y.dtype == jnp.float32 and dx.dtype == jnp.float16
    pn.check.compare(y, reference, truth=truth, what="LSTM")  # the suite's rule, tests/README.md


# ----------------------------------------------------------------------------------- the summary


def test_summary_tabulates_paths_shapes_and_counts():
    table = pn.summary(pn.models.lenet5(), (-1, 28, 28, 1))
    assert table.params == 60_170 and table.bytes == 4 * 60_170 and table.out_shape == (-1, 10)
    rows = {row.path: row for row in table.rows}
    assert rows["conv1"].out_shape == (-1, 24, 24, 6) and rows["conv1"].params == 156
    assert rows["conv1"].own == (("b", (6,), "float32"), ("w", (5, 5, 1, 6), "float32"))
    text = str(table).splitlines()
    assert text[0] == "Serial: input (-1, 28, 28, 1) -> output (-1, 10)" and text[-1].startswith("total: 60,170")
    gpt = pn.summary(pn.models.gpt(pn.models.GPTConfig(vocab_size=11, context=8, layers=2, d_model=8, heads=2)),
                     (-1, 8), depth=2)
    assert [r.path for r in gpt.rows] == ["body/pos", "body/drop", "body/blocks", "body/norm", "embed", "head"]
    assert gpt.rows[2].below == 24 and gpt.params == sum(r.params for r in gpt.rows)
    bn = pn.summary(pn.serial(pn.Dense(3), pn.BatchNorm()), (-1, 2))
    assert bn.state == 6 and bn.state_bytes == 24


def test_summary_with_a_depth_counts_parameters_a_model_holds_itself():
    """Two parameters of the model's own (as MiniDETR's queries and MiniCLIP's temperature) beside a
    child: at every depth each parameter is counted once, in the model's own row."""
    dense = pn.Dense(3)

    def init(key, in_shape):
        out_shape, child, _ = dense.init(key, in_shape)
        return out_shape, {"scale": jnp.ones(()), "bias": jnp.zeros((3,)), "dense": child}, {}

    def apply(params, state, x, *, key=None, train=False):
        return dense.apply(params["dense"], {}, x)[0] * params["scale"] + params["bias"], state

    for depth in (None, 1, 2):
        table = pn.summary(pn.Layer(init, apply, None, "Scaled"), (-1, 2), depth=depth)
        assert table.params == 13 == sum(row.params for row in table.rows)
        assert sorted(name for row in table.rows for name, _, _ in row.own) == ["bias", "dense/b", "dense/w", "scale"]


def test_every_experiment_prints_the_summary_at_start_up():
    """Through the shared helper `print_summary` (common.py), directly or in `train_and_report` and
    `train_set_model`, which call it."""
    shared = ("print_summary", "train_and_report", "train_set_model")
    for path in sorted(EXPERIMENTS.glob("*.py")):
        if path.stem in ("common", "benchmark", "attention_memory", "make_mnist_sample"):
            continue
        called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                  for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)}
        assert called & set(shared), f"{path.name} prints no model summary"
