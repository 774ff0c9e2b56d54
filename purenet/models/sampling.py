"""Autoregressive sampling on the decode contract: feed a prompt, then draw one token at a time.

Dimension letters: N batch, P prompt length, L tokens to draw, V vocabulary size.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from purenet import compiler
from purenet._checks import check_int, fail, raised_by_fail
from purenet.core import Layer, can_decode


def sample_logits(logits: jax.Array, key: jax.Array, temperature, *, top_k: int | None = None) -> jax.Array:
    """One token per row of logits (N, V) -> (N,) int32: a draw from softmax(logits / temperature),
    restricted to the `top_k` largest logits when given; temperature 0 takes the argmax (greedy)."""
    if top_k is not None:
        kth = lax.top_k(logits, top_k)[0][..., -1:]  # (N, 1)
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    token = jnp.where(temperature > 0, jax.random.categorical(key, scaled, axis=-1), jnp.argmax(logits, -1))
    return token.astype(jnp.int32)


def _generate(model, params, prompt, key, temperature, *, length, top_k):
    batch, prompt_length = prompt.shape
    step = partial(model.decode.step, params)
    cache = model.decode.init_cache(params, batch, prompt_length + length)

    def feed(cache, inputs):  # the prompt, one position at a time
        ids_t, pos = inputs
        logits, cache = step(cache, ids_t, pos=pos)
        return cache, logits

    cache, logits = lax.scan(feed, cache, (prompt.T, jnp.arange(prompt_length)))  # logits (P, N, V)

    def draw(carry, inputs):
        cache, logits = carry
        key, pos = inputs
        token = sample_logits(logits, key, temperature, top_k=top_k)  # (N,)
        logits, cache = step(cache, token, pos=pos)
        return (cache, logits), token

    positions = prompt_length + jnp.arange(length)
    _, tokens = lax.scan(draw, (cache, logits[-1]), (jax.random.split(key, length), positions))
    return tokens.T  # (N, L)


def generate(model: Layer, params, prompt, key: jax.Array, *, length: int, temperature: float = 1.0,
             top_k: int | None = None, compiler_options="auto") -> jax.Array:
    """Continue `prompt` (N, P) int ids, P >= 1, by `length` tokens drawn one at a time with
    `model.decode` (ids (N,) -> logits (N, V)) -> (N, length) int32. One jitted program: a `lax.scan`
    feeds the prompt, another samples (see `sample_logits`); the cache holds prompt + length positions.
    `compiler_options`: "auto", None or a dict of XLA options (`purenet.compiler`)."""
    if not can_decode(model):
        fail("generate", f"{model.name} has no decode step"
                         + (f" ({model.decode.reason})" if model.decode is not None else ""))
    check_int("generate", "length", length, 1)
    if top_k is not None:
        check_int("generate", "top_k", top_k, 1)
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        fail("generate", f"expected prompt ids of shape (N, P) with P >= 1, got {prompt.dtype} {prompt.shape}")
    positions = prompt.shape[1] + length
    try:  # traced, nothing computed: the cache's own checks (a positions table's length)
        jax.eval_shape(lambda p: model.decode.init_cache(p, prompt.shape[0], positions), params)
    except ValueError as error:
        if not raised_by_fail(error):
            raise
        fail("generate", f"the prompt ({prompt.shape[1]} positions) plus length={length} new tokens need "
                         f"{positions} positions, more than {model.name} can decode: {error}. Shorten the prompt "
                         f"or the length, or build the model with a longer context")
    run = compiler.jit_per_model(_generate, model, owner="generate", compiler_options=compiler_options,
                                 static_argnames=("model", "length", "top_k"))
    return run(model, params, prompt, key, jnp.asarray(temperature, jnp.float32), length=length, top_k=top_k)
