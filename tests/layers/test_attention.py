"""Scaled dot-product attention and MultiHeadAttention beyond the registry: the function against
jax.nn.dot_product_attention and against jax.vjp of a plain reference (float64, float32) over causal,
padded, T = 1, T != S, grouped heads and odd head sizes, causal query blocks (ragged, capped, T != S), in
both residual forms; the rule for a row with no key; dropout's shared mask; the products that causal
query blocks skip (XLA's cost analysis); XLA's memory growth of each form; the KV cache; cross-attention's
decode steps; errors. Inputs and params are drawn by numpy: a random draw compiled into a program costs more
than attention's forward and pullback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_function, compare
from purenet.layers.attention import MultiHeadAttention, dot_product_attention, dot_product_attention_vjp
from tests.helpers import load_experiment



def reference(q, k, v, bias, mask, causal, q_lengths, kv_lengths):
    """Attention written plainly (heads repeated, one softmax), with the same rule for rows with no key."""
    n, T, h, d = q.shape
    S, groups = k.shape[1], h // k.shape[2]
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    s = jnp.einsum("nthd,nshd->nhts", q, k) * jnp.asarray(1 / np.sqrt(d), q.dtype) + (0 if bias is None else bias)
    valid = jnp.ones((n, h, T, S), bool)
    if mask is not None:
        valid &= mask
    if causal:
        valid &= jnp.tril(jnp.ones((T, S), bool))[None, None]
    if kv_lengths is not None:
        valid &= (jnp.arange(S)[None] < kv_lengths[:, None])[:, None, None, :]
    if q_lengths is not None:
        valid &= (jnp.arange(T)[None] < q_lengths[:, None])[:, None, :, None]
    s = jnp.where(valid, s, -jnp.inf)
    # The shift by the row's peak cancels in e / total; without stop_gradient, XLA computes jax.vjp of
    # this function to inf under jit on "bias-multi-query" (float64), through the peak's gradient.
    peak = jax.lax.stop_gradient(jnp.max(s, -1, keepdims=True))
    e = jnp.where(valid, jnp.exp(s - jnp.where(jnp.isfinite(peak), peak, 0)), 0)
    total = jnp.sum(e, -1, keepdims=True)
    return jnp.einsum("nhts,nshd->nthd", e / jnp.where(total > 0, total, 1), v)


# Causal with grouped heads and neither mask nor bias, in both forms: the registry's rows
# mha-causal-gqa-rotary (probs) and mha-causal-fused-logsumexp-batch1 (logsumexp, ragged blocks); here
# with everything else in "everything".
CONFIGS = {  # (N, T, S, H, K, D) and options
    "plain": ((2, 5, 7, 4, 4, 3), {}),
    "bias-multi-query": ((2, 5, 7, 4, 1, 3), {"bias": True}),
    "mask-padded": ((2, 5, 7, 2, 2, 5), {"mask": True, "lengths": True}),
    "t1-cross": ((3, 1, 9, 2, 1, 3), {}),
    "everything": ((2, 6, 6, 4, 2, 3), {"causal": True, "bias": True, "mask": True, "lengths": True}),
    # causal query blocks: 3 + 3 + 3 + 2 rows; T < S; T > S with 20 blocks of 1 capped to 7 of 3
    "causal-query-blocks": ((2, 11, 11, 4, 2, 3), {"causal": True, "bias": True, "mask": True, "lengths": True,
                                                   "query_block_size": 3}),
    "causal-query-blocks-more-keys": ((2, 7, 10, 2, 1, 5), {"causal": True, "query_block_size": 2}),
    "causal-query-blocks-capped": ((2, 20, 6, 2, 2, 3), {"causal": True, "lengths": True, "query_block_size": 1}),
}


def _inputs(config, dtype, seed=0):
    """(q, k, v, bias, mask), the options, and a cotangent of the output, drawn by numpy."""
    (n, T, S, h, kv, d), options = CONFIGS[config]
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape).astype(dtype) for shape in [(n, T, h, d), (n, S, kv, d), (n, S, kv, d)])
    bias = rng.standard_normal((1, h, T, S)).astype(dtype) if options.get("bias") else None
    mask = None
    if options.get("mask"):
        mask = rng.uniform(size=(n, 1, T, S)) < 0.7
        mask[..., 0] = True
    lengths = (jnp.array([T, T - 2], jnp.int32), jnp.array([S - 1, S - 3], jnp.int32)) if options.get("lengths") \
        else (None, None)
    dout = rng.standard_normal((n, T, h, d)).astype(dtype)
    return (q, k, v, bias, mask), dict(is_causal=options.get("causal", False), query_seq_lengths=lengths[0],
                                       key_value_seq_lengths=lengths[1]), dout


@pytest.mark.parametrize("config", CONFIGS)
def test_equals_jax_and_a_plain_reference(config):
    # Both residual forms: output and pullback against jax.vjp of `reference`, float64 within 1e-10 and
    # float32 by the suite's rule (its truth: the float64 program of `theirs`, at the float32 point cast
    # up); in float32 the output also against jax.nn.dot_product_attention.
    (q, k, v, bias, mask), options, dout = _inputs(config, np.float64)
    ref = (options["is_causal"], options["query_seq_lengths"], options["key_value_seq_lengths"])
    query_block_size = CONFIGS[config][1].get("query_block_size")  # None: the backend's (one block here)

    def ours(q, k, v, bias, dout):
        results = {}
        for residuals in ("probs", "logsumexp"):
            out, pullback = dot_product_attention_vjp(q, k, v, bias, mask, **options, residuals=residuals,
                                                      block_size=4, query_block_size=query_block_size)
            grads = pullback(dout)
            assert (grads[3] is None) == (bias is None)
            results[residuals] = out, [g for g in grads if g is not None], out
        return results

    def theirs(q, k, v, bias, dout):
        out, jax_pullback = jax.vjp(lambda q, k, v, b: reference(q, k, v, b, mask, *ref), q, k, v, bias)
        # jax.nn takes the softmax in float32 whatever the dtype (off by 1e-7 in float64): its output in
        # float32 only, the plain reference's float64 output its truth.
        jax_nn = jax.nn.dot_product_attention(q, k, v, bias, mask, **options) if q.dtype == jnp.float32 else out
        expected = out, [g for g in jax_pullback(dout) if g is not None], jax_nn
        return {"probs": expected, "logsumexp": expected}

    for dtype in (np.float64, np.float32):
        args = [None if a is None else a.astype(dtype) for a in (q, k, v, bias, dout)]
        check_function(ours, theirs, *args, what=f"{config}-{np.dtype(dtype).name}")


def test_a_row_with_no_key_outputs_zero_and_passes_no_gradient():
    (q, k, v, _, _), _, _ = _inputs("plain", np.float32)
    mask = jnp.ones((2, 1, 5, 7), bool).at[0, :, 2].set(False)  # batch 0, query 2: no key at all

    @jax.jit
    def both_forms(q, k, v):
        results = []
        for residuals in ("probs", "logsumexp"):
            out, pullback = dot_product_attention_vjp(q, k, v, mask=mask, key_value_seq_lengths=jnp.array([7, 0]),
                                                      residuals=residuals, block_size=3)  # batch 1: no key either
            results.append((out, *pullback(jnp.ones_like(out))[:3]))
        return results

    for out, dq, dk, dv in both_forms(q, k, v):
        assert all(np.all(np.isfinite(t)) for t in (out, dq, dk, dv))
        np.testing.assert_array_equal(out[0, 2], 0.0)
        np.testing.assert_array_equal(out[1], 0.0)
        np.testing.assert_array_equal(dq[0, 2], 0.0)
        np.testing.assert_array_equal(dk[1], 0.0)
        assert np.any(np.asarray(out[0, 1]) != 0)


def test_dropout_draws_the_same_mask_in_both_forms(key):
    (q, k, v, _, _), _, dout = _inputs("plain", np.float64)

    @jax.jit
    def both_forms(q, k, v, dout):
        results = []
        for residuals in ("probs", "logsumexp"):
            out, pullback = dot_product_attention_vjp(q, k, v, residuals=residuals, block_size=3, dropout_rate=0.4,
                                                      dropout_key=key)
            results.append((out, pullback(dout)[:3]))
        return results, dot_product_attention(q, k, v)

    (probs, logsumexp), without_dropout = both_forms(q, k, v, dout)
    compare(logsumexp[0], probs[0], rtol=1e-12, what="out")
    compare(logsumexp[1], probs[1], rtol=1e-12, what="grads")
    assert not np.allclose(probs[0], without_dropout)


def test_causal_query_blocks_keep_the_dropout_mask(key):
    # Each query block draws its rows of the whole attention's masks, so blocks of 2 rows (ragged: 5 =
    # 2 + 2 + 1) and one block give the same output and gradients, in both forms.
    (q, k, v, _, _), _, dout = _inputs("plain", np.float64)
    k, v = k[:, :5], v[:, :5]

    @jax.jit
    def blocks_and_whole(q, k, v, dout):
        results = []
        for residuals in ("probs", "logsumexp"):
            for query_block_size in (2, 5):
                out, pullback = dot_product_attention_vjp(q, k, v, is_causal=True, residuals=residuals, block_size=3,
                                                          query_block_size=query_block_size, dropout_rate=0.4,
                                                          dropout_key=key)
                results.append((out, pullback(dout)[:3]))
        return results

    results = blocks_and_whole(q, k, v, dout)
    for blocks, whole in (results[:2], results[2:]):
        compare(blocks, whole, rtol=1e-12, what="query blocks with dropout")
    compare(results[2], results[0], rtol=1e-12, what="both forms")


@pytest.mark.parametrize("residuals", ["probs", "logsumexp"])
def test_causal_query_blocks_skip_the_keys_above_the_diagonal(residuals):
    # XLA's cost analysis of a causal attention's forward and pullback (T = S = 128, 4 heads of 32): blocks
    # of 32 queries compute 4 + 3 + 2 + 1 of the 16 (query, key) tiles, 10/16 of one block's products and
    # softmax; a block of 128 queries is the whole square. On the CPU the default is blocks of 32 where
    # N H T S D reaches MIN_QUERY_BLOCK_WORK (N 4 here), one block below it (N 2).
    def flops(query_block_size, n=4):
        q = jnp.zeros((n, 128, 4, 32), jnp.float32)

        def step(q, k, v):
            out, pullback = dot_product_attention_vjp(q, k, v, is_causal=True, residuals=residuals,
                                                      query_block_size=query_block_size)
            return out, pullback(out)
        cost = jax.jit(step).lower(q, q, q).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    whole, blocks = flops(128), flops(32)
    assert 0.55 < blocks / whole < 0.72, (blocks, whole)
    if jax.default_backend() == "cpu":
        assert flops(None) == blocks and flops(None, n=2) == flops(128, n=2) > flops(32, n=2)


def test_recomputing_the_probabilities_keeps_memory_linear_in_t():
    # XLA's temporaries of one attention training step (forward + pullback), head_dim 64, 4 heads, as
    # experiments/attention_memory.py prints them.
    temporary_bytes = load_experiment("attention_memory").temporary_bytes
    blocked = [temporary_bytes("logsumexp", T) for T in (512, 1024, 2048)]
    assert blocked[1] / blocked[0] <= 2.2 and blocked[2] / blocked[1] <= 2.2
    # The dense form keeps the probabilities: quadratic in T, though causal query blocks keep only
    # (8 + 1) / 16 of the square at these lengths (8 blocks)
    dense = [temporary_bytes("probs", T) for T in (1024, 2048)]
    assert dense[1] / dense[0] >= 3.3 and dense[1] > 3 * blocked[2]


# -------------------------------------------------------------------------------- the layer


def _params(layer, in_shape, seed=0):
    """Standard-normal float64 params of init's shapes, drawn by numpy (init is only traced)."""
    shapes = jax.eval_shape(lambda k: layer.init(k, in_shape)[1], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: 0.5 * rng.standard_normal(s.shape), shapes)


def test_causal_query_blocks_with_a_key_padding_mask_equal_one_block():
    # A key padding mask (N, S) reaches the attention as one row (N, 1, 1, 1, S), which every query block
    # keeps whole (cut to its keys): blocks of 2 give one block's output and gradients.
    x = np.random.default_rng(2).standard_normal((2, 7, 8))
    padding = np.ones((2, 7), bool)
    padding[1, 5:] = False
    results = []
    for query_block_size in (2, 7):
        layer = MultiHeadAttention(2, is_causal=True, query_block_size=query_block_size)
        params = _params(layer, ((2, 7, 8), (2, 7)))

        @jax.jit
        def forward_and_pullback(params, x):
            y, _, pullback = layer.vjp(params, {}, (x, padding))
            return y, pullback(jnp.ones_like(y))

        results.append(forward_and_pullback(params, x))
    compare(results[0], results[1], rtol=1e-12, what="query blocks with a key padding mask")


def test_kv_cache_is_fixed_size_and_masks_by_position():
    # (That stepping through the cache equals apply: the registry's decode test of mha-causal-gqa-rotary,
    # this layer.)
    layer = MultiHeadAttention(4, num_kv_heads=2, is_causal=True, rotary=True)
    params = _params(layer, (2, 6, 8))
    cache = layer.decode.init_cache(params, 2, 6)
    assert cache["k"].shape == cache["v"].shape == (2, 6, 2, 2) and int(cache["index"]) == 0
    y_t, cache = jax.jit(layer.decode.step)(params, cache, jnp.ones((2, 8)), pos=jnp.int32(0))
    assert y_t.shape == (2, 8) and int(cache["index"]) == 1 and np.all(np.asarray(cache["k"][:, 1:]) == 0)
    assert np.all(np.asarray(cache["k"][:, 0]) != 0)


def test_cross_attention_steps_equal_apply():
    layer = MultiHeadAttention(2, cross=True, rotary=True)
    rng = np.random.default_rng(1)
    x, context = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 6))
    mask = jnp.ones((2, 4, 5), bool).at[0, :, 3:].set(False)
    params = _params(layer, ((2, 4, 8), (2, 5, 6), (2, 4, 5)))

    @jax.jit
    def apply_and_steps(params, x, context):
        expected, _ = layer.apply(params, {}, (x, context, mask))
        cache = layer.decode.init_cache(params, 2, 4)
        steps = [layer.decode.step(params, cache, (x[:, t], context, mask[:, t]), pos=t)[0] for t in range(4)]
        return jnp.stack(steps, axis=1), expected

    steps, expected = apply_and_steps(params, x, context)
    compare(steps, expected, rtol=1e-12, what="cross decode")


def test_errors_name_the_layer_and_the_values(key):
    q = jnp.ones((2, 3, 4, 2))
    with pytest.raises(ValueError, match=r"dot_product_attention: k and v must be \(N=2, S, K, D=2\) with K dividing "
                                         r"H=4, got k \(2, 5, 3, 2\)"):
        dot_product_attention(q, jnp.ones((2, 5, 3, 2)), jnp.ones((2, 5, 3, 2)))
    with pytest.raises(ValueError, match=r"dot_product_attention: mask must be boolean \(True = attend\), got "
                                         r"dtype float"):
        dot_product_attention(q, q, q, mask=jnp.ones((2, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"dot_product_attention: residuals must be one of \('probs', 'logsumexp'\)"):
        dot_product_attention(q, q, q, residuals="none")
    with pytest.raises(ValueError, match=r"dot_product_attention: query_block_size must be a positive integer, got "
                                         r"query_block_size=0"):
        dot_product_attention(q, q, q, is_causal=True, query_block_size=0)
    with pytest.raises(ValueError, match=r"dot_product_attention: dropout_rate=0.5 needs a dropout_key, got None"):
        dot_product_attention(q, q, q, dropout_rate=0.5)
    with pytest.raises(ValueError, match=r"MultiHeadAttention: num_kv_heads \(=3\) must divide num_heads \(=4\)"):
        MultiHeadAttention(4, num_kv_heads=3)
    with pytest.raises(ValueError, match=r"MultiHeadAttention: fused_qkv=True .* needs cross=False"):
        MultiHeadAttention(4, fused_qkv=True, cross=True)
    with pytest.raises(ValueError, match=r"MultiHeadAttention: the features \(=6\) must be divisible by num_heads"):
        MultiHeadAttention(4).init(key, (2, 3, 6))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: rotary=True .* head_dim=3"):
        MultiHeadAttention(2, rotary=True).init(key, (2, 3, 6))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: cannot decode step by step: self-attention without "
                                         r"is_causal"):
        MultiHeadAttention(2).decode.init_cache({}, 1, 4)
    params, state = _params(MultiHeadAttention(2), (2, 3, 8)), {}
    with pytest.raises(ValueError, match=r"MultiHeadAttention: expected x of shape \(N, T, 8\), got \(2, 3, 6\)"):
        MultiHeadAttention(2).apply(params, state, jnp.ones((2, 3, 6)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: train=True with dropout=0.1 needs a PRNG key"):
        MultiHeadAttention(2, dropout=0.1).apply(params, state, jnp.ones((2, 3, 8)), train=True)
