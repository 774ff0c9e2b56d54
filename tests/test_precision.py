"""purenet.precision: a Policy applied to a model without rewriting it. The dtypes at every boundary (params
and dparams in param_dtype, x and dx in the input's, y in output_dtype, running statistics in their own),
the float32 policy equal to no policy, decode under a policy, the errors. The gradients under a policy are
checked against a float64 truth in tests/models (GPT, LeNet-5) and each layer in bfloat16 in
tests/test_registry.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import optim
from purenet.combinators import serial
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.layers import BatchNorm, Conv2D, Dense, Embedding, Flatten, LayerNorm, Relu
from purenet.models import GPTConfig, gpt
from purenet.precision import Policy, cast_like, with_policy
from purenet.training import make_train_step

BF16 = Policy(compute_dtype=jnp.bfloat16)


def _convnet():
    return serial(conv=Conv2D(4, 3), norm=BatchNorm(), act=Relu(), flat=Flatten(), head=Dense(3))


def test_dtypes_at_every_boundary(key):
    model = with_policy(_convnet(), BF16)
    _, params, state = init_model(model, key, (-1, 6, 6, 2))
    assert {a.dtype for a in jax.tree.leaves((params, state))} == {jnp.dtype(jnp.float32)}
    x = jax.random.normal(key, (4, 6, 6, 2), jnp.float32)

    @jax.jit  # one program, not the bfloat16 ops one by one
    def forward_and_backward(params, state, x):
        y, new_state, pullback = model.vjp(params, state, x, train=True)
        return y, new_state, pullback(jnp.ones_like(y))

    y, new_state, (dparams, dx) = forward_and_backward(params, state, x)
    assert y.dtype == jnp.float32  # output_dtype
    assert {a.dtype for a in jax.tree.leaves(new_state)} == {jnp.dtype(jnp.float32)}  # running statistics
    assert not np.array_equal(new_state["norm"]["mean"], state["norm"]["mean"])
    assert jax.tree.structure(dparams) == jax.tree.structure(params)
    assert {a.dtype for a in jax.tree.leaves(dparams)} == {jnp.dtype(jnp.float32)} and dx.dtype == jnp.float32
    y16 = jax.eval_shape(lambda x: model.apply(params, state, x)[0], x.astype(jnp.float16))  # dtypes: a trace
    assert y16.dtype == jnp.float32  # any float input


def test_a_training_step_keeps_params_and_optimizer_state_in_float32(key):
    model = with_policy(_convnet(), BF16)
    _, params, state = init_model(model, key, (-1, 6, 6, 2))
    optimizer = optim.adamw(1e-3)
    step = make_train_step(model, softmax_cross_entropy(), optimizer)
    batch = {"x": jax.random.normal(key, (4, 6, 6, 2), jnp.float32), "y": jnp.array([0, 1, 2, 0])}
    new_params, state, opt_state, metrics = step(params, state, optimizer.init(params), batch, None)
    floats = [a.dtype for a in jax.tree.leaves((new_params, state, opt_state)) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert set(floats) == {jnp.dtype(jnp.float32)} and metrics["loss"].dtype == jnp.float32
    assert not np.array_equal(new_params["head"]["w"], params["head"]["w"])


def test_the_model_computes_in_the_compute_dtype(key):
    seen = []

    def spy(params, state, x, **kwargs):  # a layer that records the dtypes it is called with
        seen.append((params["w"].dtype, x.dtype))
        return layer.vjp(params, state, x, **kwargs)

    layer = Dense(3)
    model = with_policy(layer._replace(vjp=spy), BF16)
    _, params, state = init_model(model, key, (-1, 5))
    model.vjp(params, state, jnp.ones((2, 5)))
    assert seen == [(jnp.bfloat16, jnp.bfloat16)]


def test_float32_policy_is_no_policy(key):
    model = _convnet()
    _, params, state = init_model(model, key, (-1, 6, 6, 2))
    x = jax.random.normal(key, (4, 6, 6, 2), jnp.float32)
    y, new_state, pullback = model.vjp(params, state, x, train=True)
    y32, state32, pullback32 = with_policy(model, Policy()).vjp(params, state, x, train=True)
    jax.tree.map(np.testing.assert_array_equal, (y, new_state, pullback(y)), (y32, state32, pullback32(y)))


def test_integer_inputs_pass_and_have_no_cotangent(key):
    model = with_policy(serial(embed=Embedding(7, 4), norm=LayerNorm()), BF16)
    _, params, state = init_model(model, key, (-1, 3))
    ids = jnp.array([[1, 2, 3]])

    def run(params, ids):  # traced only (jax.eval_shape): the claim is about dtypes and the None rule
        y, _, pullback = model.vjp(params, state, ids)
        return y, pullback(jnp.ones_like(y))

    y, (dparams, dx) = jax.eval_shape(run, params, ids)
    assert y.dtype == jnp.float32 and dx is None and dparams["embed"]["w"].dtype == jnp.float32


def test_decode_under_a_policy(key):
    # Traced only (jax.eval_shape): the claim is the cache's and the logits' dtypes and shapes, which the
    # trace of init, init_cache and a step fixes as a run would (the eager run compiled ~110 programs).
    model = with_policy(gpt(GPTConfig(vocab_size=11, context=8, layers=1, d_model=8, heads=2, hidden=16)), BF16)

    def decode_one(key):
        _, params, _ = init_model(model, key, (-1, 8))
        cache = model.decode.init_cache(params, 2, 8)
        return cache, model.decode.step(params, cache, jnp.array([1, 2]), pos=0)[0]

    cache, logits = jax.eval_shape(decode_one, key)
    assert {a.dtype for a in jax.tree.leaves(cache) if jnp.issubdtype(a.dtype, jnp.floating)} == {
        jnp.dtype(jnp.bfloat16)}
    assert logits.shape == (2, 11) and logits.dtype == jnp.float32


def test_cast_like_keeps_none_and_integer_leaves():
    tree = {"x": jnp.ones(2, jnp.bfloat16), "ids": None, "n": jnp.ones(2, jnp.int32)}
    like = {"x": jnp.ones(2, jnp.float32), "ids": jnp.ones(2, jnp.int32), "n": jnp.ones(2, jnp.int32)}
    out = cast_like(tree, like)
    assert out["x"].dtype == jnp.float32 and out["ids"] is None and out["n"].dtype == jnp.int32


@pytest.mark.parametrize("policy, message", [
    (Policy(compute_dtype=jnp.int32), "with_policy: policy.compute_dtype must be a floating-point dtype, got "
                                      "compute_dtype=<class 'jax.numpy.int32'>"),
    (Policy(output_dtype="bf16"), "with_policy: policy.output_dtype must be a floating-point dtype, got "
                                  "output_dtype='bf16'"),
    ("bfloat16", "with_policy: policy must be a purenet.precision.Policy, got str 'bfloat16'"),
])
def test_bad_policies_are_refused(policy, message):
    with pytest.raises(ValueError) as error:
        with_policy(Dense(2), policy)
    assert str(error.value) == message


def test_a_model_must_be_a_layer():
    with pytest.raises(ValueError, match="with_policy: model must be a Layer, got function"):
        with_policy(Dense, BF16)
