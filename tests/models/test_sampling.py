"""Sampling on the decode contract: shapes, determinism by key, greedy = argmax of the full model's
logits, top-k, and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.layers import Conv1D
from purenet.models import CharLMConfig, char_lm, generate, sample_logits
from tests.helpers import random_init


@pytest.fixture(scope="module")
def lm():
    model = char_lm(CharLMConfig(10, "lstm", hidden=8, layers=1, embedding=4))
    _, params, state = random_init(model, (1, 5))
    return model, params, state


def test_generate_shapes_and_determinism(lm):
    model, params, _ = lm
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    tokens = generate(model, params, prompt, jax.random.PRNGKey(3), length=17)
    assert tokens.shape == (2, 17) and tokens.dtype == jnp.int32
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 10
    np.testing.assert_array_equal(tokens, generate(model, params, prompt, jax.random.PRNGKey(3), length=17))
    others = [generate(model, params, prompt, jax.random.PRNGKey(s), length=17) for s in range(4, 7)]
    assert any(not np.array_equal(tokens, o) for o in others)  # the key matters


def test_greedy_is_the_argmax_of_the_full_model(lm):
    model, params, state = lm
    prompt = jnp.array([[1, 2, 3]])
    greedy = generate(model, params, prompt, jax.random.PRNGKey(0), length=12, temperature=0.0)
    logits, _ = jax.jit(model.apply)(params, state, jnp.concatenate([prompt, greedy], axis=1))
    np.testing.assert_array_equal(np.argmax(logits[0, 2:-1], axis=-1), greedy[0])


def test_top_k_restricts_the_draw():
    logits = np.log(np.array([[0.1, 0.5, 0.15, 0.25]] * 400))
    draws, greedy = jax.jit(lambda logits, key: (sample_logits(logits, key, 1.0, top_k=2),  # one program
                                                 sample_logits(logits, key, 0.0)))(logits, jax.random.PRNGKey(0))
    assert set(np.asarray(draws).tolist()) == {1, 3}
    np.testing.assert_array_equal(greedy, 1)


def test_generate_errors(lm, key):
    model, params, _ = lm
    with pytest.raises(ValueError, match=r"generate: expected prompt ids of shape \(N, P\) with P >= 1"):
        generate(model, params, jnp.array([1, 2]), key, length=3)
    with pytest.raises(ValueError, match=r"generate: length must be an integer >= 1, got length=0"):
        generate(model, params, jnp.array([[1]]), key, length=0)
    with pytest.raises(ValueError, match=r"generate: Conv1D has no decode step"):
        generate(Conv1D(2, 3), {}, jnp.array([[1]]), key, length=2)
