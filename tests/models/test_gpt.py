"""GPT of the zoo: named params, the whole model's gradient against jax.grad, decode == apply, and
cached greedy decoding equal to full recomputation, token for token, for 200 tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from purenet.check import check_decode, check_model
from purenet.losses import softmax_cross_entropy
from purenet.models import GPTConfig, generate, gpt
from purenet.precision import Policy
from tests.helpers import random_init

TINY = GPTConfig(vocab_size=11, context=8, layers=2, d_model=8, heads=2, hidden=16)
# One block for the gradient checks: a block's pullback is as wrong in one block as in two (the stacked
# blocks' caches: test_decode_steps_equal_apply, two blocks).
ONE = TINY._replace(layers=1)


def test_whole_model_gradient_equals_jax():
    """Untied, post-LN, logsumexp residuals, float64. The default form (tied, pre-LN, probs residuals) in
    float64 and float32: the loaded GPT-2 of tests/interop, this `gpt` without the head's bias, whose
    outputs, loss and every gradient match PyTorch's (float64 within 1e-10, float32 by the suite's rule);
    the tied head's pullback with and without its bias against JAX's, float64 and float32:
    tests/models/test_tied.py and tests/interop."""
    config = ONE._replace(tie_weights=False, pre_ln=False, residuals="logsumexp")
    model = gpt(config)
    out_shape, params, state = random_init(model, (3, 8), np.float64)
    assert out_shape == (3, 8, 11) and params["body"]["blocks"][0]["attn"]["w_qkv"].shape == (8, 24)
    assert params["head"]["w"].shape == (8, 11) and "norm" not in params["body"]  # post-LN: no final norm
    ids = np.random.default_rng(1).integers(0, 11, (3, 8))
    report = check_model(model, softmax_cross_entropy(), params, state, ids, np.roll(ids, -1, axis=1))
    assert all(e.max_rel <= e.rtol for e in report.values())


# float16 on the tied head, bfloat16 on the untied one with logsumexp residuals: the two low-precision
# dtypes take the same code paths (both compute in float32 where a layer accumulates).
@pytest.mark.parametrize("config, compute", [(ONE, jnp.float16),
                                             (ONE._replace(tie_weights=False, residuals="logsumexp"), jnp.bfloat16)],
                         ids=["tied-f16", "untied-lse-bf16"])
def test_whole_model_gradient_under_a_policy_equals_jax(config, compute):
    """float32 params, forward and pullback in `compute`: our gradient and JAX's through the same policy,
    against the bare model in float64 at the same point (tests/README.md's rule)."""
    model = gpt(config)
    _, params, state = random_init(model, (3, 8))
    ids = np.random.default_rng(1).integers(0, 11, (3, 8))
    report = check_model(model, softmax_cross_entropy(), params, state, ids, np.roll(ids, -1, axis=1),
                         policy=Policy(compute_dtype=compute))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_decode_steps_equal_apply():
    model = gpt(TINY)
    _, params, state = random_init(model, (2, 8), jnp.float64)
    check_decode(model, params, state, np.random.default_rng(0).integers(0, 11, (2, 8)))


def test_cached_greedy_decoding_equals_full_recomputation_for_200_tokens(key):
    config = GPTConfig(vocab_size=13, context=208, layers=2, d_model=16, heads=4, hidden=32)
    model = gpt(config)
    _, params, state = random_init(model, (1, 208))
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
