"""Tied embeddings: a language model whose output head is its embedding table, transposed.

Dimension letters: N batch, T tokens, V vocabulary size, F features. The one table w (V, F) is used
twice, as the lookup e = w[ids] and as the head logits = h @ w.T + b, so its gradient is the sum of both
uses' cotangents; that sum is written out in the pullback below, the documented pattern for any
parameter a model uses twice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_bool, check_positive, fail
from purenet.combinators import taped
from purenet.core import Decode, Layer, can_decode, no_decode
from purenet.ops import bias_add, bias_grad, linear, linear_dw, lookup, lookup_dw, matmul_t


def tied_lm(vocab_size: int, features: int, body: Layer, *, use_bias: bool = True,
            w_init=initializers.normal(0.02)) -> Layer:
    """ids (N, T) -> logits (N, T, V) = body(w[ids]) @ w.T + b, with one table w.

    `body` maps (N, T, F) to (N, T, F) (its last axis must stay F). Params {"embed": {"w": (V, F)},
    "body": ..., "head": {"b": (V,)}} (no "head" entry without `use_bias`); state {"body": ...}.
    Decodes step by step when `body` does (ids (N,) -> logits (N, V))."""
    (vocab_size,) = check_positive("TiedLM", "vocab_size", vocab_size)
    (features,) = check_positive("TiedLM", "features", features)
    check_bool("TiedLM", "use_bias", use_bias)
    if not isinstance(body, Layer):
        fail("TiedLM", f"body must be a Layer, got {body!r}")

    def init(key, in_shape):
        if len(in_shape) not in (1, 2):
            fail("TiedLM", f"expected ids of rank 1 (N,) or 2 (N, T), got shape {tuple(in_shape)}")
        k_embed, k_body = jax.random.split(key)
        body_shape, body_params, body_state = body.init(k_body, (*in_shape, features))
        if body_shape[-1] != features:
            fail("TiedLM", f"body must keep the feature size {features} for the tied head, "
                           f"got output shape {tuple(body_shape)}")
        params = {"embed": {"w": w_init(k_embed, (vocab_size, features), jnp.float32)}, "body": body_params}
        if use_bias:
            params["head"] = {"b": jnp.zeros((vocab_size,), jnp.float32)}
        return (*body_shape[:-1], vocab_size), params, {"body": body_state}

    def head(params, h):  # logits = h @ w.T + b: (N, T, F) -> (N, T, V)
        logits = matmul_t(h, params["embed"]["w"])
        return bias_add(logits, params["head"]["b"]) if use_bias else logits

    def forward(tape, ids):
        h = tape("body", body, lookup(tape.params["embed"]["w"], ids))
        return head(tape.params, h), (ids, h)

    # dh = dlogits @ w;  dw = dw_lookup + dw_head, where dw_head = dlogits.T @ h (summed over N, T) and
    # dw_lookup scatters the body's input cotangent back to the rows of ids;  db = sum(dlogits).
    # Residuals: ids, h and the body's own.
    def backward(back, saved, dlogits):
        (ids, h), w = saved, back.params["embed"]["w"]
        de = back("body", linear(dlogits, w))  # (N, T, F)
        own = {"embed": {"w": lookup_dw(ids, de, vocab_size) + linear_dw(dlogits, h)}}  # (V, F): both uses of w
        if use_bias:
            own["head"] = {"b": bias_grad(dlogits)}  # (V,)
        return None, own

    def init_cache(params, batch, max_len):
        return body.decode.init_cache(params["body"], batch, max_len)

    def step(params, cache, ids_t, *, pos):
        h_t, cache = body.decode.step(params["body"], cache, lookup(params["embed"]["w"], ids_t), pos=pos)
        return head(params, h_t), cache

    decode = (Decode(init_cache, step) if can_decode(body)
              else no_decode("TiedLM", f"its body {body.name} has no decode step"))
    return taped("TiedLM", init, forward, backward, decode=decode)
