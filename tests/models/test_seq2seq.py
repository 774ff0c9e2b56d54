"""Sequence-to-sequence models of the zoo: the whole model's handwritten gradient against jax.grad
(Transformer post-LN and pre-LN, with dropout in training; LSTM), decode steps equal to the whole
decoder, padding that changes nothing, and the searches: every cache gives the same tokens, beam 1 is
greedy, and errors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model, compare, tolerance
from purenet.core import init_model
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models.search import beam_search, greedy_search
from purenet.models.seq2seq import (LSTMSeq2SeqConfig, Seq2SeqInput, TransformerConfig, lstm_seq2seq,
                                    transformer_seq2seq)
from tests.helpers import fan_in_init

TINY = TransformerConfig(src_vocab=9, tgt_vocab=7, layers=1, d_model=8, heads=2, hidden=16, dropout=0.0)
TINY_LSTM = LSTMSeq2SeqConfig(src_vocab=9, tgt_vocab=7, layers=2, hidden=6, embedding=5)
# Sources end in EOS (2) then PAD (0); decoder inputs start with BOS (1); outputs end in EOS.
SRC = np.array([[4, 5, 6, 2, 0], [7, 8, 2, 0, 0], [4, 4, 4, 4, 2]])
TGT_IN = np.array([[1, 3, 4, 5, 0, 0], [1, 6, 6, 0, 0, 0], [1, 3, 3, 3, 3, 3]])
TGT_OUT = np.array([[3, 4, 5, 2, 0, 0], [6, 6, 2, 0, 0, 0], [3, 3, 3, 3, 3, 2]])
SHAPE = Seq2SeqInput((-1, 5), (-1, 6))


def build(config, dtype=jnp.float32, seed=0):
    """-> (Seq2Seq, params, state) with params drawn by numpy, N(0, 0.5^2), in the tree `init` gives:
    compiling `init` (a random draw per leaf) costs more here than the checks it serves."""
    model = transformer_seq2seq(config) if isinstance(config, TransformerConfig) else lstm_seq2seq(config)
    shapes = jax.eval_shape(lambda key: init_model(model.layer, key, SHAPE, dtype=dtype)[1:], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    params, state = jax.tree_util.tree_map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    return model, params, state


# One block a side keeps the compile time down (the memory's cotangent summed over several decoder
# blocks: tests/layers/test_transformer.py). The float32 Transformer case is pre-LN with learned
# positions and dropout in training (the same key in both applies draws the same masks). The LSTM:
# float64 and float32 in one program.
@pytest.mark.parametrize("config, dtype, train", [
    (TINY, jnp.float64, False),
    (TINY._replace(pre_ln=True, positions="learned", max_len=8, dropout=0.2), jnp.float32, True),
    (TINY_LSTM, (jnp.float64, jnp.float32), False),
], ids=["transformer-post-ln-f64", "transformer-pre-ln-learned-dropout-f32", "lstm-f64-f32"])
def test_whole_model_gradient_equals_jax(config, dtype, train):
    several = isinstance(dtype, tuple)
    model, params, state = build(config, jnp.float32 if several else dtype)
    loss = masked_softmax_cross_entropy(label_smoothing=0.1)
    report = check_model(model.layer, loss, params, state, Seq2SeqInput(SRC, TGT_IN),
                         TokenTargets(TGT_OUT, TGT_OUT != 0), key=jax.random.PRNGKey(3), train=train,
                         dtype=dtype if several else None)
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert any("src_embed" in leaf for leaf in report)  # the gradient reached the encoder's input


@pytest.mark.parametrize("config", [TINY, TINY_LSTM], ids=["transformer", "lstm"])
def test_decode_steps_and_padding(config):
    """Stepping with the caches (cross-attention keys and values projected once, or not) gives the
    whole decoder's logits; extra PAD columns on the source change nothing."""
    model, params, state = build(config, jnp.float64)

    @jax.jit
    def run(params):
        memory = model.encode(params, SRC)
        full = model.decode(params, memory, TGT_IN)  # (N, T, V)
        stepped = []
        for cache_cross in (True, False):
            context, cache = model.start(params, memory, TGT_IN.shape[1], cache_cross=cache_cross)

            def step(cache, inputs, context=context):
                logits_t, cache = model.step(params, context, cache, *inputs)
                return cache, logits_t

            _, logits = jax.lax.scan(step, cache, (TGT_IN.T, jnp.arange(TGT_IN.shape[1])))  # (T, N, V)
            stepped.append(jnp.swapaxes(logits, 0, 1))
        padded = jnp.pad(SRC, ((0, 0), (0, 3)))  # PAD is 0
        return full, stepped, model.layer.apply(params, state, Seq2SeqInput(padded, TGT_IN))[0]

    full, stepped, padded = run(params)
    for logits in stepped:
        compare(logits, full, rtol=1e-12, what=f"{model.layer.name} steps")
    compare(padded, full, rtol=1e-12, what=f"{model.layer.name} with extra padding")


def test_beam_search_agrees_across_caches():
    """An untrained Transformer (random but fixed tokens): beam 3 gives the same hypotheses and scores
    with the caches (the decoder's keys and values, reordered with the beams; the memory's projected
    once) and without (the whole decoder on the tokens so far). Greedy and beam search share the step
    (`search._stepper`): this compares its cached and uncached forms for both. (The decode steps'
    cross-attention with and without projected keys and values: test_decode_steps_and_padding; greedy,
    beam 1 and beam 3 against each other: test_lstm_greedy_and_beams, the searches' loops not depending
    on the model.)"""
    # At the initializers' scales (N(0, 0.5^2) everywhere makes every sentence EOS at once): hypotheses
    # of 1 to 8 tokens that depend on the source, so the caches are compared over many steps.
    model = transformer_seq2seq(TINY._replace(d_model=16, hidden=32))
    _, params, _ = fan_in_init(model.layer, SHAPE, np.float64, bias_scale=0.1)  # float64: scores to 1e-10
    src = np.array([[4, 5, 6, 7, 2, 0], [8, 2, 0, 0, 0, 0], [5, 5, 6, 6, 7, 2], [4, 8, 7, 2, 0, 0]])
    three = [beam_search(model, params, src, beam=3, max_len=8, cache=cache) for cache in ("full", "none")]
    tokens = np.asarray(three[0][0])
    assert len({tuple(row) for row in tokens.tolist()}) > 2 and np.sum(tokens != 0) > 12
    np.testing.assert_array_equal(three[0][0], three[1][0])
    np.testing.assert_allclose(three[0][1], three[1][1], rtol=tolerance(jnp.float64))


@partial(jax.jit, static_argnums=0)
def _log_probability(model, params, src, tokens):
    """Sum of log p(token) of each row of tokens (N, L) up to its EOS, under teacher forcing."""
    tokens = jnp.asarray(tokens)
    tgt_in = jnp.concatenate([jnp.ones_like(tokens[:, :1]), tokens[:, :-1]], axis=1)  # BOS first
    logits = model.decode(params, model.encode(params, src), tgt_in)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(tokens != 0, picked, 0.0), axis=1)


def test_lstm_greedy_and_beams():
    """An untrained LSTM (random but fixed tokens; its state through the searches): beam 1 gives
    greedy's tokens for any length penalty; beam 3's best hypothesis scores at least greedy's
    log-probability under teacher forcing (here 0.25 to 0.33 more: beam 3 finds other tokens). (The
    searches without the caches: test_beam_search_agrees_across_caches; for the LSTM they run `decode`
    on the tokens so far, which equals its steps: test_decode_steps_and_padding.)"""
    model, params, _ = build(TINY_LSTM._replace(hidden=16), jnp.float64, seed=7)  # scores to 1e-10
    src = np.array([[4, 5, 6, 7, 2, 0], [8, 2, 0, 0, 0, 0], [5, 5, 6, 6, 7, 2], [4, 8, 7, 2, 0, 0]])
    greedy = np.asarray(greedy_search(model, params, src, max_len=8))
    assert len({tuple(row) for row in greedy.tolist()}) > 1 and len(set(greedy.ravel().tolist())) > 1
    one, _ = beam_search(model, params, src, beam=1, max_len=8, length_penalty=0.6)
    np.testing.assert_array_equal(one, greedy)
    _, scores = beam_search(model, params, src, beam=3, max_len=8)
    greedy_logp = np.asarray(_log_probability(model, params, src, greedy))
    assert np.all(np.asarray(scores) >= greedy_logp - tolerance(jnp.float64) * np.abs(greedy_logp))


def test_errors_name_the_model_and_the_value():
    with pytest.raises(ValueError, match=r"TransformerSeq2Seq: d_model \(=10\) must be divisible by heads \(=4\)"):
        transformer_seq2seq(TINY._replace(d_model=10, heads=4))
    with pytest.raises(ValueError, match=r"TransformerSeq2Seq: positions must be one of \('sinusoidal', 'learned'\)"):
        transformer_seq2seq(TINY._replace(positions="rotary"))
    with pytest.raises(ValueError, match=r"LSTMSeq2Seq: hidden must be positive integers, got hidden=0"):
        lstm_seq2seq(TINY_LSTM._replace(hidden=0))
    model, params, state = build(TINY_LSTM)
    with pytest.raises(ValueError, match=r"LSTMSeq2Seq: expected tgt integer ids of shape \(N, L\), got float32"):
        model.layer.apply(params, state, Seq2SeqInput(SRC, TGT_IN.astype(jnp.float32)))
    with pytest.raises(ValueError, match=r"beam_search: beam must be an integer >= 1, got beam=0"):
        beam_search(model, params, SRC, beam=0, max_len=4)
    with pytest.raises(ValueError, match=r"greedy_search: cache must be one of \('full', 'self', 'none'\)"):
        greedy_search(model, params, SRC, max_len=4, cache="kv")
