"""GPT of the zoo: named params, the whole model's gradient against jax.grad, decode == apply, and
cached greedy decoding equal to full recomputation, token for token, for 200 tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from purenet.check import check_decode, check_model
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.models import GPTConfig, generate, gpt
from purenet.precision import Policy

TINY = GPTConfig(vocab_size=11, context=8, layers=2, d_model=8, heads=2, hidden=16)


@pytest.mark.parametrize("config, dtype", [(TINY, (jnp.float64, jnp.float32)),
                                           (TINY._replace(tie_weights=False, pre_ln=False, residuals="logsumexp"),
                                            jnp.float64), (TINY._replace(head_bias=False), jnp.float64)],
                         ids=["tied-f64-f32", "untied-post-ln-lse-f64", "tied-no-head-bias-f64"])
def test_whole_model_gradient_equals_jax(config, dtype, key):
    model = gpt(config)
    out_shape, params, state = init_model(model, key, (-1, 8))  # float32: check_model casts up
    assert out_shape == (-1, 8, 11) and params["body"]["blocks"][1]["attn"]["w_qkv"].shape == (8, 24)
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 11)
    report = check_model(model, softmax_cross_entropy(), params, state, ids, jnp.roll(ids, -1, axis=1), dtype=dtype)
    assert all(e.max_rel <= e.rtol for e in report.values())


@pytest.mark.parametrize("config, compute", [(TINY, jnp.bfloat16), (TINY, jnp.float16),
                                             (TINY._replace(tie_weights=False, residuals="logsumexp"), jnp.bfloat16)],
                         ids=["tied-bf16", "tied-f16", "untied-lse-bf16"])
def test_whole_model_gradient_under_a_policy_equals_jax(config, compute, key):
    """float32 params, forward and pullback in `compute`: our gradient and JAX's through the same policy,
    against the bare model in float64 at the same point (tests/README.md's rule)."""
    model = gpt(config)
    _, params, state = init_model(model, key, (-1, 8))
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 11)
    report = check_model(model, softmax_cross_entropy(), params, state, ids, jnp.roll(ids, -1, axis=1),
                         policy=Policy(compute_dtype=compute))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_decode_steps_equal_apply(key):
    model = gpt(TINY)
    _, params, state = init_model(model, key, (-1, 8), dtype=jnp.float64)
    check_decode(model, params, state, jax.random.randint(key, (2, 8), 0, 11))


def test_cached_greedy_decoding_equals_full_recomputation_for_200_tokens(key):
    config = GPTConfig(vocab_size=13, context=208, layers=2, d_model=16, heads=4, hidden=32)
    model = gpt(config)
    _, params, state = init_model(model, key, (-1, 208))
    prompt = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    cached = generate(model, params, prompt, key, length=200, temperature=0.0)  # the KV cache

    @jax.jit
    def recompute(prompt):  # each token: apply on the whole sequence so far (padded), argmax at its end
        ids = jnp.zeros((1, 208), jnp.int32).at[:, :8].set(prompt.astype(jnp.int32))

        def next_token(t, ids):
            logits, _ = model.apply(params, state, ids)
            return ids.at[0, t].set(jnp.argmax(logits[0, t - 1]).astype(jnp.int32))

        return lax.fori_loop(8, 208, next_token, ids)[:, 8:]

    np.testing.assert_array_equal(cached, recompute(prompt))
    assert len(set(np.asarray(cached[0]).tolist())) > 1  # not a constant stream


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"gpt: d_model \(=10\) must be divisible by heads \(=4\)"):
        gpt(GPTConfig(5, d_model=10, heads=4))
    with pytest.raises(ValueError, match=r"gpt: layers must be positive integers, got layers=0"):
        gpt(GPTConfig(5, layers=0))
