"""Transformer blocks beyond the registry: blocks stack with serial (masks pass through, the memory's
cotangent sums over the blocks that read it), the decoder block's steps equal apply, and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_layer, compare
from purenet.combinators import select, serial
from purenet.core import init_model
from purenet.layers.transformer import DecoderBlock, EncoderBlock


def test_stacked_blocks_pass_masks_and_sum_the_memory_cotangent(key):
    encoder = serial(EncoderBlock(2, 8), EncoderBlock(2, 8, pre_ln=False), select(0))
    x = jax.random.normal(key, (2, 4, 8), jnp.float64)
    mask = jnp.ones((2, 4, 4), bool).at[1, :, 3].set(False)
    check_layer(encoder, ((2, 4, 8), (2, 4, 4)), key=key, x=(x, mask), num_cotangents=1)
    decoder = serial(DecoderBlock(2, 8), DecoderBlock(2, 8), select(0))  # pre-LN; both read the memory
    report = check_layer(decoder, ((2, 3, 8), (2, 5, 6)), key=key, num_cotangents=1)
    assert "Serial.dx[1]" in report  # the memory's cotangent, from both blocks


@pytest.mark.parametrize("pre_ln", [True, False])
def test_decoder_block_steps_equal_apply(pre_ln, key):
    block = DecoderBlock(2, 12, pre_ln=pre_ln, norm="rms", rotary=True)
    x, memory = jax.random.normal(key, (2, 4, 8), jnp.float64), jax.random.normal(key, (2, 5, 6), jnp.float64)
    mask = jnp.ones((2, 4, 5), bool).at[0, :, 4:].set(False)
    _, params, state = init_model(block, key, ((2, 4, 8), (2, 5, 6), (2, 4, 5)), dtype=jnp.float64)
    (expected, *_), _ = block.apply(params, state, (x, memory, mask))
    cache, steps, step = block.decode.init_cache(params, 2, 4), [], jax.jit(block.decode.step)
    for t in range(4):
        (y_t, *_), cache = step(params, cache, (x[:, t], memory, mask[:, t]), pos=t)
        steps.append(y_t)
    compare(jnp.stack(steps, axis=1), expected, rtol=1e-12, what="decoder block decode")


def test_params_are_named_by_sub_layer(key):
    _, params, _ = EncoderBlock(2, 16, gated=True, activation="silu").init(key, (1, 3, 8))
    assert set(params) == {"norm1", "attn", "norm2", "ff"} and set(params["ff"]) >= {"w_gate", "w_in", "w_out"}
    _, params, _ = DecoderBlock(2, 16).init(key, ((1, 3, 8), (1, 4, 6)))
    assert set(params) == {"norm1", "self_attn", "norm2", "cross_attn", "norm3", "ff"}
    assert params["cross_attn"]["w_k"].shape == (6, 8)


def test_errors_name_the_block_and_the_values(key):
    with pytest.raises(ValueError, match=r"EncoderBlock: norm must be one of \('layer', 'rms'\), got norm='batch'"):
        EncoderBlock(2, 8, norm="batch")
    with pytest.raises(ValueError, match=r"EncoderBlock: hidden must be positive integers, got hidden=0"):
        EncoderBlock(2, 0)
    with pytest.raises(ValueError, match=r"DecoderBlock: expects \(x, memory\) or \(x, memory, cross_mask\)"):
        DecoderBlock(2, 8).init(key, (2, 3, 8))
    with pytest.raises(ValueError, match=r"EncoderBlock: cannot decode step by step: it is not causal"):
        EncoderBlock(2, 8).decode.init_cache({}, 1, 3)



def test_decoder_block_steps_on_keys_and_values_projected_once(key):
    """`project_context` made once per memory gives the same steps as projecting the memory at each
    step (also for a rotary cross-attention), and it checks what it is given."""
    from purenet.layers.attention import KeyValues, MultiHeadAttention, project_context

    block, cross = DecoderBlock(2, 12), MultiHeadAttention(2, cross=True, rotary=True)
    x, memory = jax.random.normal(key, (2, 3, 8), jnp.float64), jax.random.normal(key, (2, 5, 6), jnp.float64)
    mask = jnp.ones((2, 5), bool).at[1, 3:].set(False)
    rng = np.random.default_rng(0)  # random params in init's trees, without compiling init
    params, p_cross = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), jax.eval_shape(
            lambda k: (block.init(k, ((2, 3, 8), (2, 5, 6)))[1], cross.init(k, ((2, 1, 8), (2, 5, 6)))[1]), key))

    @jax.jit
    def steps(params, p_cross):
        kv = project_context(params["cross_attn"], memory)
        out = []
        for source in (memory, kv):
            cache, ys = block.decode.init_cache(params, 2, 3), []
            for t in range(3):
                (y_t, *_), cache = block.decode.step(params, cache, (x[:, t], source, mask), pos=t)
                ys.append(y_t)
            out.append(jnp.stack(ys, axis=1))
        for source in (memory, project_context(p_cross, memory)):
            out.append(jnp.stack([cross.decode.step(p_cross, {}, (x[:, 0], source), pos=pos)[0] for pos in (0, 2)]))
        return kv, out

    kv, (each_step, once, rotary_each_step, rotary_once) = steps(params, p_cross)
    assert isinstance(kv, KeyValues) and kv.k.shape == kv.v.shape == (2, 5, 8)
    compare(once, each_step, rtol=1e-12, what="decoder block steps on KeyValues")
    compare(rotary_once, rotary_each_step, rtol=1e-12, what="rotary cross-attention steps on KeyValues")
    with pytest.raises(ValueError, match=r"project_context: expected a context of shape \(N, S, 6\), got \(2, 5, 7\)"):
        project_context(p_cross, jnp.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: expected KeyValues k and v of shape \(2, S, 8\)"):
        cross.decode.step(p_cross, {}, (x[:, 0], KeyValues(kv.k[..., :4], kv.v[..., :4])), pos=0)
