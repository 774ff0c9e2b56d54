"""Transformer blocks beyond the registry: blocks stack with serial (masks pass through, the memory's
cotangent sums over the blocks that read it), the decoder block's steps equal apply, and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_function, compare
from purenet.combinators import select, serial
from purenet.layers.transformer import DecoderBlock, EncoderBlock


def _params(layer, in_shape, seed=0):
    """Params (standard normal, scaled by 0.5, float64) and state of init's trees, drawn by numpy: init is
    only traced, so no random draw is compiled (each costs more than a block's forward)."""
    shapes, state = jax.eval_shape(lambda k: layer.init(k, in_shape)[1:], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: 0.5 * rng.standard_normal(a.shape), shapes), state


def test_stacked_blocks_pass_masks_and_sum_the_memory_cotangent():
    # Two decoder blocks (pre-LN, then post-LN) passing the cross-attention mask along, both reading the
    # memory, whose cotangent sums both: ours against jax.vjp (float64, 1e-10), every random value drawn
    # by numpy. (An encoder block's mask in and out, with no cotangent for it, is the registry's row
    # encoder-block-post-ln-mask-rms-swiglu; serial's chaining, its serial rows.)
    decoder = serial(DecoderBlock(2, 8), DecoderBlock(2, 8, pre_ln=False), select(0))
    rng = np.random.default_rng(1)
    mask = jnp.ones((2, 3, 5), bool).at[1, :, 3:].set(False)
    params, state = _params(decoder, ((2, 3, 8), (2, 5, 6), (2, 3, 5)))
    x, memory, dy = (rng.standard_normal(shape) for shape in ((2, 3, 8), (2, 5, 6), (2, 3, 8)))

    def ours(params, x, memory):
        y, _, pullback = decoder.vjp(params, state, (x, memory, mask))
        return y, pullback(dy)

    def theirs(params, x, memory):
        y, pullback = jax.vjp(lambda p, x, memory: decoder.apply(p, state, (x, memory, mask))[0], params, x, memory)
        dparams, dx, dmemory = pullback(dy)
        return y, (dparams, (dx, dmemory, None))  # no cotangent for the boolean mask

    check_function(ours, theirs, params, x, memory, what="stacked decoder blocks")


@pytest.mark.parametrize("pre_ln", [True, False])
def test_decoder_block_steps_equal_apply(pre_ln):
    block = DecoderBlock(2, 12, pre_ln=pre_ln, norm="rms", rotary=True)
    rng = np.random.default_rng(1)
    x, memory = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 6))
    mask = jnp.ones((2, 4, 5), bool).at[0, :, 4:].set(False)
    params, state = _params(block, ((2, 4, 8), (2, 5, 6), (2, 4, 5)))

    @jax.jit
    def apply_and_steps(params, x, memory):
        (expected, *_), _ = block.apply(params, state, (x, memory, mask))

        def step(cache, t):
            (y_t, *_), cache = block.decode.step(params, cache, (x[:, t], memory, mask[:, t]), pos=t)
            return cache, y_t

        _, steps = jax.lax.scan(step, block.decode.init_cache(params, 2, 4), jnp.arange(4))
        return jnp.swapaxes(steps, 0, 1), expected

    steps, expected = apply_and_steps(params, x, memory)
    compare(steps, expected, rtol=1e-12, what="decoder block decode")


def test_params_are_named_by_sub_layer():
    params, _ = _params(EncoderBlock(2, 16, gated=True, activation="silu"), (1, 3, 8))
    assert set(params) == {"norm1", "attn", "norm2", "ff"} and set(params["ff"]) >= {"w_gate", "w_in", "w_out"}
    params, _ = _params(DecoderBlock(2, 16), ((1, 3, 8), (1, 4, 6)))
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



def test_decoder_block_steps_on_keys_and_values_projected_once():
    """`project_context` made once per memory gives the same steps as projecting the memory at each
    step (also for a rotary cross-attention), and it checks what it is given."""
    from purenet.layers.attention import KeyValues, MultiHeadAttention, project_context

    block, cross = DecoderBlock(2, 12), MultiHeadAttention(2, cross=True, rotary=True)
    rng = np.random.default_rng(0)
    x, memory = jnp.asarray(rng.standard_normal((2, 3, 8))), rng.standard_normal((2, 5, 6))
    mask = jnp.ones((2, 5), bool).at[1, 3:].set(False)
    params, _ = _params(block, ((2, 3, 8), (2, 5, 6)))
    p_cross, _ = _params(cross, ((2, 1, 8), (2, 5, 6)), seed=1)

    @jax.jit
    def steps(params, p_cross):
        kv = project_context(params["cross_attn"], memory)
        out = []
        for source in (memory, kv):
            def step(cache, t, source=source):
                (y_t, *_), cache = block.decode.step(params, cache, (x[:, t], source, mask), pos=t)
                return cache, y_t

            out.append(jax.lax.scan(step, block.decode.init_cache(params, 2, 3), jnp.arange(3))[1])
        for source in (memory, project_context(p_cross, memory)):
            def cross_step(_, pos, source=source):
                return None, cross.decode.step(p_cross, {}, (x[:, 0], source), pos=pos)[0]

            out.append(jax.lax.scan(cross_step, None, jnp.array([0, 2]))[1])
        return kv, out

    kv, (each_step, once, rotary_each_step, rotary_once) = steps(params, p_cross)
    assert isinstance(kv, KeyValues) and kv.k.shape == kv.v.shape == (2, 5, 8)
    compare(once, each_step, rtol=1e-12, what="decoder block steps on KeyValues")
    compare(rotary_once, rotary_each_step, rtol=1e-12, what="rotary cross-attention steps on KeyValues")
    with pytest.raises(ValueError, match=r"project_context: expected a context of shape \(N, S, 6\), got \(2, 5, 7\)"):
        project_context(p_cross, jnp.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: expected KeyValues k and v of shape \(2, S, 8\)"):
        cross.decode.step(p_cross, {}, (x[:, 0], KeyValues(kv.k[..., :4], kv.v[..., :4])), pos=0)
