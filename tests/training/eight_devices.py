"""Data parallelism on 8 simulated CPU devices. Run by tests/training/test_parallel.py in a subprocess with
JAX_NUM_CPU_DEVICES=8 (the device count is fixed when JAX's CPU backend starts, so these tests cannot
run in the suite's own processes; collecting this file directly in a 1-device process skips it).

Data-parallel gradients and 20 training steps equal the single-device full-batch ones (a small LeNet with
synced BatchNorm, an LSTM language model, a GPT; an MLP's step with gradient accumulation), float32, by the
suite's rule (tests/README.md: the single-device computation run in float64 is the truth); the compiled
step holds one all-reduce;
Explicit and Auto meshes; per-shard Dropout keys; gradient accumulation; fit(mesh=...); checkpoints of
sharded arrays."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from purenet import models, optim
from purenet.check import check_function, compare, upcast
from purenet.combinators import serial
from purenet.core import init_model
from purenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, MultiHeadAttention
from purenet.layers.tensor_parallel import (ColumnParallelDense, ParallelAttention, ParallelFeedForward,
                                            attention_rules, feedforward_rules, partition_specs)
from purenet.losses import TokenTargets, masked_softmax_cross_entropy, softmax_cross_entropy
from purenet.optim import apply_updates
from purenet.training import Checkpoint, fit, grad_step, load_checkpoint, make_train_step, save_checkpoint
from purenet.training.parallel import data_parallel, replicate, shard_batch
from purenet.training.step import data_parallel_grad

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs JAX_NUM_CPU_DEVICES=8 (test_parallel.py)")

DEVICES = 8


def mesh(kind=AxisType.Explicit):
    return jax.make_mesh((DEVICES,), ("data",), axis_types=(kind,))


def lenet_bn(axis_name="data"):
    # LeNet's pieces, once each, small (a compile costs what its program holds, not its sizes): a
    # one-channel convolution (the CPU's "taps" algorithm), BatchNorm synced over the mesh, pooling, a
    # many-channel convolution (lax.conv), Flatten and Dense.
    return serial(conv1=Conv2D(4, 3), bn1=BatchNorm(axis_name=axis_name), act1=Activation("relu"),
                  pool1=MaxPool2D(2), conv2=Conv2D(4, 3), flatten=Flatten(), head=Dense(10))


# Data are drawn with NumPy: each jax.random draw is a program of its own to compile (0.1 to 0.3 s).
def _labels(rng, n, classes):
    return rng.integers(0, classes, n, dtype=np.int32)


def _images(rng, n, *shape):
    return rng.normal(size=(n, *shape)).astype(np.float32)


def _tokens(rng, n, t, vocab):
    ids = rng.integers(0, vocab, (n, t + 1), dtype=np.int32)
    return {"x": ids[:, :-1], "y": TokenTargets(ids[:, 1:], np.ones((n, t), bool))}


# name -> (model, loss, in_shape, batch(rng, n))
MODELS = {
    "mlp": (lambda: models.mlp((32, 32), 10), softmax_cross_entropy, (-1, 20),
            lambda rng, n: {"x": _images(rng, n, 20), "y": _labels(rng, n, 10)}),
    "lenet-bn": (lenet_bn, softmax_cross_entropy, (-1, 10, 10, 1),
                 lambda rng, n: {"x": _images(rng, n, 10, 10, 1), "y": _labels(rng, n, 10)}),
    "lstm": (lambda: models.char_lm(models.CharLMConfig(vocab_size=11, hidden=16, embedding=8)),
             masked_softmax_cross_entropy, (-1, 6), lambda rng, n: _tokens(rng, n, 6, 11)),
    "gpt": (lambda: models.gpt(models.GPTConfig(vocab_size=11, context=8, layers=1, d_model=16, heads=2)),
            masked_softmax_cross_entropy, (-1, 6), lambda rng, n: _tokens(rng, n, 6, 11)),
}


def _data(name, seed=0):
    """-> (model, loss, a batch of 16, two more batches of 16 stacked)."""
    build, loss, _, make_batch = MODELS[name]
    rng = np.random.default_rng(seed)
    batch, *two = (make_batch(rng, 16) for _ in range(3))
    return build(), loss(), batch, jax.tree_util.tree_map(lambda *a: np.stack(a), *two)


@functools.cache
def _setup(name, seed=0):
    """-> (model, loss, params, state, a batch of 16, two more batches of 16 stacked); the model's
    initialization in one jitted program (eagerly, every initializer's draw is a program to compile)."""
    model, loss, batch, batches = _data(name, seed)
    params, state = jax.jit(lambda key: init_model(model, key, MODELS[name][2])[1:])(jax.random.PRNGKey(seed))
    params, state = jax.tree_util.tree_map(np.asarray, (params, state))  # upcast then casts in NumPy
    return model, loss, params, state, batch, batches


# SGD's learning rate per model: each loss falls over the 20 steps. (At 0.1 the GPT is at the edge of
# stability: from step 10 on, a perturbation doubles at every step, and a float32 run parts from the
# float64 one by more than its rounding.)
LEARNING_RATE = {"lenet-bn": 0.1, "lstm": 0.3, "gpt": 0.03}


def _twenty_steps(gradients, learning_rate, params, state, batches):
    """20 SGD steps in a scan, alternating the two `batches` (stacked): -> (losses (20,), the first step's
    dparams)."""
    optimizer = optim.sgd(learning_rate)

    def body(carry, t):
        params, state, opt_state = carry
        batch = jax.tree_util.tree_map(lambda a: a[t % 2], batches)
        value, dparams, state, _ = gradients(params, state, batch, jax.random.PRNGKey(3))
        updates, opt_state = optimizer.update(dparams, opt_state, params)
        return (apply_updates(params, updates), state, opt_state), (value, dparams)

    losses, dparams = jax.lax.scan(body, (params, state, optimizer.init(params)), jnp.arange(20))[1]
    return losses, jax.tree_util.tree_map(lambda a: a[0], dparams)


# The MLP's data-parallel gradients are checked by test_gradient_accumulation_composes_with_data_parallelism
# (its Dense, activation and softmax cross-entropy are in "lenet-bn" here too).
@pytest.mark.parametrize("name", list(LEARNING_RATE))
def test_gradients_and_twenty_steps_equal_the_single_device_full_batch(name):
    model, loss, _, batches = _data(name)
    single = model if name != "lenet-bn" else lenet_bn(axis_name=None)
    lr = LEARNING_RATE[name]

    def single_device(params, state, batches):
        return _twenty_steps(lambda p, s, b, k: grad_step(single, loss, p, s, b, k), lr, params, state, batches)

    @jax.jit  # one program: the initialization; 8 devices and one device in float32; one device in float64
    def run(key, batches):
        _, params, state = init_model(model, key, MODELS[name][2])
        return (_twenty_steps(data_parallel_grad(model, loss, mesh()), lr, params, state, batches),
                single_device(params, state, batches), single_device(*upcast((params, state, batches))))

    ours, reference, truth = run(jax.random.PRNGKey(0), batches)
    compare(ours, reference, truth=truth, what=f"{name} (losses, dparams)")
    losses = np.asarray(reference[0])
    assert losses[-1] < losses[0], losses


def _all_reduces(hlo: str) -> list[str]:
    return [line for line in hlo.splitlines() if " all-reduce(" in line or "all-reduce-start(" in line]


def test_the_compiled_step_holds_one_all_reduce_for_all_gradients():
    model, loss, params, state, batch, _ = _setup("mlp")
    optimizer = optim.adam(1e-3)
    step = make_train_step(model, loss, optimizer, mesh=mesh())
    hlo = step.lower(params, state, optimizer.init(params), batch, jax.random.PRNGKey(0)).compile().as_text()
    reduces = _all_reduces(hlo)
    assert len(reduces) == 1, reduces
    # ... over every gradient, the loss and the accuracy at once: 20*32+32 + 32*32+32 + 32*10+10 + 2 values
    assert "f32[2060]" in reduces[0]


def test_auto_and_explicit_meshes_agree():
    model, loss, params, state, batch, _ = _setup("mlp")
    key = jax.random.PRNGKey(0)
    explicit = jax.jit(data_parallel_grad(model, loss, mesh(AxisType.Explicit)))(params, state, batch, key)
    auto = jax.jit(data_parallel_grad(model, loss, mesh(AxisType.Auto)))(params, state, batch, key)
    compare(auto, explicit, rtol=0, what="auto vs explicit")  # the same program: the same bits


def test_each_shard_draws_with_its_own_key():
    # Each shard's key is fold_in(key, shard index): Dropout masks differ between shards.
    draw = data_parallel("draw", lambda params, state, batch, key: jax.random.uniform(key, (3,)), mesh(), "data")
    mean, shards = jax.jit(lambda key: (draw({}, {}, {"x": jnp.zeros((DEVICES, 1))}, key),  # one program
                                        [jax.random.uniform(jax.random.fold_in(key, i), (3,)) for i in range(DEVICES)])
                           )(jax.random.PRNGKey(1))
    expected = np.mean(shards, axis=0)
    # mean of 8 float32 uniforms: the two sums may round differently, by at most 8 ulp of the largest term
    np.testing.assert_allclose(mean, expected, rtol=0, atol=8 * np.finfo(np.float32).eps)


def test_gradient_accumulation_composes_with_data_parallelism():
    model, loss, params, state, _, batches = _setup("mlp")
    micro = [jax.tree_util.tree_map(lambda a: np.asarray(a)[i], batches) for i in range(2)]
    accumulated = optim.accumulate_gradients(optim.sgd(0.1), 2)
    step = make_train_step(model, loss, accumulated, mesh=mesh())
    reference = make_train_step(model, loss, optim.sgd(0.1))

    def two_micro_batches(params, state, micro):
        p, s, o = params, state, accumulated.init(params)
        for batch in micro:
            p, s, o, _ = step(p, s, o, batch, jax.random.PRNGKey(0))
        return p

    def one_batch(params, state, micro):
        whole = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *micro)
        return reference(params, state, optim.sgd(0.1).init(params), whole, jax.random.PRNGKey(0))[0]

    check_function(two_micro_batches, one_batch, params, state, micro, what="accumulated", jit=False)


def mlp_bn(axis_name="data"):
    # no bias before BatchNorm: its gradient is 0 up to rounding, which Adam would amplify differently
    return serial(fc=Dense(16, use_bias=False), bn=BatchNorm(axis_name=axis_name), act=Activation("tanh"),
                  head=Dense(4))


def test_fit_with_a_mesh_equals_fit_on_one_device():
    params, state = jax.tree_util.tree_map(
        np.asarray, jax.jit(lambda key: init_model(mlp_bn(), key, (-1, 6))[1:])(jax.random.PRNGKey(0)))
    x = np.random.default_rng(0).normal(size=(72, 6)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)}
    # 52 training examples: batches of 16, 16, 16 and 4, which does not split over 8 devices (dropped);
    # 20 validation examples: 16 on the mesh, the last 4 on one device.
    train, val = {k: v[:52] for k, v in data.items()}, {k: v[52:] for k, v in data.items()}
    loss = softmax_cross_entropy()

    def history(params, state, train, val, mesh=None):
        kwargs = dict(epochs=2, batch_size=16, seed=0, val_data=val, progress=False)
        model, extra = (mlp_bn(), dict(mesh=mesh)) if mesh else (mlp_bn(axis_name=None), dict(drop_last=True))
        result = fit(model, loss, optim.adam(1e-2), params, state, train, **kwargs, **extra)
        assert mesh is None or result.params["fc"]["w"].sharding.is_fully_replicated
        dtype = result.params["fc"]["w"].dtype  # the history holds Python floats of the run's precision
        return {name: np.asarray(result.history[name], dtype) for name in ("loss", "accuracy", "val_loss",
                                                                           "val_accuracy")}

    many = history(params, state, train, val, mesh=mesh())
    compare(many, history(params, state, train, val), truth=history(*upcast((params, state, train, val))),
            what="fit history")
    assert many["loss"][1] < many["loss"][0]


def test_a_batch_that_does_not_split_evenly_is_refused():
    model, loss, params, state, batch, _ = _setup("mlp")
    batch = jax.tree_util.tree_map(lambda a: np.asarray(a)[:12], batch)
    with pytest.raises(ValueError, match=r"data_parallel_grad: the batch size \(=12\) must be a multiple of the "
                                         r"mesh axis 'data' \(=8 devices\)"):
        jax.jit(data_parallel_grad(model, loss, mesh()))(params, state, batch, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"fit: batch_size \(=12\) must be a multiple"):
        fit(model, loss, optim.sgd(0.1), params, state, batch, epochs=1, batch_size=12, seed=0, mesh=mesh())


def test_sharded_checkpoints_save_and_restore_onto_the_mesh(tmp_path):
    model, _, params, state, *_ = _setup("mlp")
    m = mesh()
    specs = {"dense0": {"w": PartitionSpec(None, "data"), "b": PartitionSpec("data")},
             "dense1": {"w": PartitionSpec("data", None), "b": PartitionSpec()},
             "head": {"w": PartitionSpec(), "b": PartitionSpec()}}
    sharded = jax.tree_util.tree_map(lambda a, spec: jax.device_put(a, NamedSharding(m, spec)),
                                     {k: params[k] for k in specs}, specs)
    sharded = {**params, **sharded}
    path = tmp_path / "sharded.npz"
    save_checkpoint(path, params=sharded, state=replicate(state, m), opt_state=(), step=3, key=None)
    restored = load_checkpoint(path, like=Checkpoint(sharded, state, (), 0, None))
    compare(restored.params, params, rtol=0, what="restored")
    assert restored.params["dense0"]["w"].sharding == sharded["dense0"]["w"].sharding
    assert restored.params["dense1"]["w"].sharding.spec == PartitionSpec("data", None)


def test_shard_batch_lays_the_batch_out_over_the_axis():
    batch = {"x": np.arange(32.0).reshape(16, 2), "y": np.arange(16)}
    placed = shard_batch(batch, mesh())
    assert placed["x"].sharding.spec == PartitionSpec("data")
    assert len(placed["x"].addressable_shards) == DEVICES and placed["x"].addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(placed["x"], batch["x"])


# ------------------------------------------------------------------------ tensor parallelism


def _shapes(layer, in_shape):
    """The params and state `init_model` gives `layer`, as shapes (traced, not run)."""
    return jax.eval_shape(lambda: init_model(layer, jax.random.PRNGKey(0), in_shape)[1:])


def _tensor_parallel_check(layer, reference, x, rules):
    """The sharded layer's y and pullback on 8 devices (params split by `rules`) against jax.vjp of
    `reference(params, x) -> y`, the unsharded function of the same global parameters: in float64 (within
    1e-10) and in float32 (by the suite's rule). Params (normal, matrices scaled by 1/sqrt(fan-in), biases
    nonzero), x and the cotangent are drawn in float32 and cast up, so the float64 reference is, exactly,
    the float32 check's truth; each side is one jitted program per dtype."""
    m = jax.make_mesh((DEVICES,), ("model",), axis_types=(AxisType.Explicit,))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[0] if s.ndim > 1 else 1))
                                    .astype(np.float32), _shapes(layer, x.shape)[0])
    point = (params, x, rng.normal(size=x.shape).astype(np.float32))  # (params, x, dy)
    specs = partition_specs(params, rules)

    def sharded(params, x, dy):
        y, _, pullback = layer.vjp(params, {}, x, key=None, train=False)
        return y, pullback(dy)

    run = jax.jit(jax.shard_map(sharded, mesh=m, in_specs=(specs, PartitionSpec(), PartitionSpec()),
                                out_specs=(PartitionSpec(), (specs, PartitionSpec()))))

    def ours(params, x, dy):
        placed = jax.tree_util.tree_map(lambda a, spec: jax.device_put(a, NamedSharding(m, spec)), params, specs)
        y, (dparams, dx) = run(placed, x, dy)
        return y, dx, dparams

    @jax.jit
    def unsharded(params, x, dy):
        y, vjp = jax.vjp(reference, params, x)
        dparams, dx = vjp(dy)
        return y, dx, dparams

    truth = unsharded(*upcast(point))
    compare(ours(*upcast(point)), truth, what=f"{layer.name} vs unsharded, float64")
    compare(ours(*point), unsharded(*point), truth=truth, what=f"{layer.name} vs unsharded, float32")


def test_parallel_feedforward_equals_the_unsharded_block():
    x = np.random.default_rng(1).normal(size=(3, 5, 12)).astype(np.float32)
    layer = ParallelFeedForward(16, axis_name="model")
    block = serial(up=Dense(16), act=Activation("gelu"), down=Dense(12))
    state = {"up": {}, "act": {}, "down": {}}
    _tensor_parallel_check(layer, lambda p, x: block.apply(p, state, x, key=None, train=False)[0], x,
                           feedforward_rules("model"))


@pytest.mark.parametrize("heads,kv_heads,causal", [(16, 8, True)], ids=["causal-gqa"])
def test_parallel_attention_equals_unsharded_multi_head_attention(heads, kv_heads, causal):
    x = np.random.default_rng(1).normal(size=(2, 5, 32)).astype(np.float32)
    layer = ParallelAttention(heads, axis_name="model", num_kv_heads=kv_heads, is_causal=causal)
    attention = MultiHeadAttention(heads, num_kv_heads=kv_heads, is_causal=causal, use_bias=False)

    def reference(p, x):
        weights = {k: v for k, v in p.items() if k != "b_o"}
        return attention.apply(weights, {}, x, key=None, train=False)[0] + p["b_o"][None, None]

    _tensor_parallel_check(layer, reference, x, attention_rules("model"))


def test_tensor_parallel_layers_outside_shard_map_say_so():
    layer = ColumnParallelDense(8, axis_name="model")
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), _shapes(layer, (2, 4))[0])
    with pytest.raises(ValueError, match="ColumnParallelDense: runs inside jax.shard_map over the mesh axis 'model'"):
        layer.apply(params, {}, np.ones((2, 4), np.float32), key=None, train=False)


def test_partition_specs_follow_the_rules():
    layer = serial(attn=ParallelAttention(8, axis_name="model"), ff=ParallelFeedForward(16, axis_name="model"))
    params, _ = _shapes(layer, (2, 5, 16))
    specs = partition_specs(params, attention_rules("model") + feedforward_rules("model"))
    assert specs["attn"]["w_q"] == PartitionSpec(None, "model") and specs["attn"]["w_o"] == PartitionSpec("model", None)
    assert specs["attn"]["b_o"] == PartitionSpec() and specs["ff"]["up"]["b"] == PartitionSpec("model")
    assert specs["ff"]["down"]["w"] == PartitionSpec("model", None) and specs["ff"]["down"]["b"] == PartitionSpec()


def test_tensor_parallel_pullbacks_trace_without_autodiff(autodiff_forbidden):
    m = jax.make_mesh((DEVICES,), ("model",), axis_types=(AxisType.Auto,))  # Auto: jit lays params out
    layer = serial(attn=ParallelAttention(8, axis_name="model", is_causal=True),
                   ff=ParallelFeedForward(16, axis_name="model"))
    x = jax.ShapeDtypeStruct((2, 3, 16), jnp.float32)
    params, state = _shapes(layer, x.shape)  # lowered, not run: shapes are all it needs
    specs = partition_specs(params, attention_rules("model") + feedforward_rules("model"))

    def sharded(params, x):
        y, _, pullback = layer.vjp(params, state, x, key=None, train=True)
        return pullback(y)

    mapped = jax.shard_map(sharded, mesh=m, in_specs=(specs, PartitionSpec()), out_specs=(specs, PartitionSpec()))
    jax.jit(mapped).lower(params, x)  # traces every pullback with JAX's autodiff patched to raise
    with pytest.raises(AssertionError, match="JAX autodiff was called"):
        jax.grad(lambda x: x)(1.0)
