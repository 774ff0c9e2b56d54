"""purenet.combinators beyond the registry rows (tests/cases_core.py): the Tape (keys folded by name, a
name run twice, replays that can be repeated, stateless children, errors), `at` and `residual(at=...)`
on structured inputs, a routed `parallel`, and debug mode naming a layer inside a block inside a model.
The combinators' older tests are in tests/test_core.py."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_layer
from purenet.combinators import Tape, at, parallel, residual, select, serial, taped
from purenet.core import Layer, init_model, stateless
from purenet.debug import NonFiniteLayerError, debug_nonfinite
from purenet.layers import GRU, BatchNorm, Bidirectional, Dense, Dropout, Tanh
from tests.helpers import random_params


def _shared_dense_model() -> Layer:
    """y = dense(x) + dense(tanh(dense(x))), one Dense run three times under the name "dense"."""
    dense, tanh = Dense(3), Tanh()

    def init(key, in_shape):
        _, p, _ = dense.init(key, in_shape)
        return in_shape[:-1] + (3,), {"dense": p, "tanh": {}}, {}

    def forward(tape, x):
        h = tape("dense", dense, x)
        return h + tape("dense", dense, tape("tanh", tanh, tape("dense", dense, x))), None

    # dx and ddense: both branches' pullbacks, the three calls of dense replayed latest first.
    def backward(back, _, dy):
        return back("dense", back("tanh", back("dense", dy))) + back("dense", dy), {}

    return taped("Shared", init, forward, backward)


def test_tape_sums_the_dparams_of_a_name_run_several_times_and_replays_again(key):
    # check_layer calls the pullback once per cotangent: each call is a fresh replay of the same tape
    report = check_layer(_shared_dense_model(), (2, 3), key=key, num_cotangents=2)
    assert "Shared.dparams['dense']['w']" in report


def test_tape_folds_each_call_s_key_by_name(key):
    drop = Dropout(0.5)
    x = jnp.ones((4, 16))
    tape = Tape("Model", {"drop": {}}, {}, key=key, train=True, keep=False)
    first, second = tape("drop", drop, x), tape("drop", drop, x)
    by_name = jax.random.fold_in(key, zlib.crc32(b"drop"))
    for k, y in enumerate((first, second)):
        expected, _ = drop.apply({}, {}, x, key=jax.random.fold_in(by_name, k), train=True)
        assert bool(jnp.all(y == expected))
    assert not bool(jnp.all(first == second))  # the second call draws its own mask


def test_tape_gathers_state_and_needs_an_entry_for_a_stateful_child(key):
    norm = BatchNorm()
    _, p, s = norm.init(key, (4, 2))
    x = jax.random.normal(key, (4, 2))
    tape = Tape("Model", {"norm": p}, {"norm": s, "other": {}}, train=True, keep=False)
    tape("norm", norm, x)
    assert set(tape.state) == {"norm", "other"} and not bool(jnp.all(tape.state["norm"]["mean"] == s["mean"]))
    with pytest.raises(ValueError, match=r"Model: child 'norm' \(BatchNorm\) has state, but the state given has no "
                                         r"entry for it"):
        Tape("Model", {"norm": p}, {}, train=True)("norm", norm, x)


def test_tape_errors_name_the_model_and_the_child(key):
    _, p, _ = Dense(2).init(key, (1, 3))
    tape = Tape("Model", {"head": p}, {})
    tape("head", Dense(2), jnp.ones((1, 3)))
    back = tape.backward()
    with pytest.raises(ValueError, match=r"Model: grads\(\) before every call is replayed: calls left \{'head': 1\}"):
        back.grads()
    back("head", jnp.ones((1, 2)))
    with pytest.raises(ValueError, match=r"Model: child 'head' has no call left to replay \(it ran 1 times\)"):
        back("head", jnp.ones((1, 2)))
    with pytest.raises(ValueError, match=r"Model: path \('body',\): no part 'body' in dict"):
        tape("body", Dense(2), jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"Model: a Tape made with keep=False kept no pullbacks to replay"):
        Tape("Model", {}, {}, keep=False).backward()


def test_at_and_residual_at_pass_the_other_parts_through(key):
    x, mask = jax.random.normal(key, (2, 4)), jnp.array([[True, False, True, True]] * 2)
    model = serial(at(0, Dense(4)), residual(serial(at(0, Tanh()), _masked_sum()), at=0))
    _, params, state = init_model(model, key, ((2, 4), (2, 4)))
    (y, kept), _, pullback = model.vjp(params, state, (x, mask))
    assert kept is mask and y.shape == (2, 4)
    _, (dx, dmask) = pullback((jnp.ones((2, 4)), None))
    assert dx.shape == (2, 4) and dmask is None
    with pytest.raises(ValueError, match=r"At: path \(2,\): no part 2 in tuple"):
        at(2, Tanh()).init(key, ((2, 4), (2, 4)))
    with pytest.raises(ValueError, match=r"Residual: inner layer Serial maps \(\(2, 4\), \(2, 4\)\) to \(2, 3\), "
                                         r"not the shape of the part at \[0\]"):
        residual(serial(select(0), Dense(3)), at=0).init(key, ((2, 4), (2, 4)))


def _masked_sum() -> Layer:  # (h, mask) -> h where mask, 0 elsewhere
    def init(key, in_shape):
        del key
        return in_shape[0], {}

    def vjp(params, x):
        del params
        h, mask = x
        return jnp.where(mask, h, 0), lambda dy: ({}, (jnp.where(mask, dy, 0), None))

    return stateless("MaskedSum", init, lambda params, x: vjp(params, x)[0], vjp)


def test_routed_parallel_takes_the_router_s_name_in_messages(key):
    layer = Bidirectional(GRU(3), GRU(4, reverse=True), merge="sum")
    assert layer.name == "Bidirectional"
    with pytest.raises(ValueError, match=r"Bidirectional: merge='sum' needs equal output shapes"):
        jax.eval_shape(lambda k: layer.init(k, (2, 5, 2))[1:], key)  # traced: the GRUs' draws are not run
    with pytest.raises(ValueError, match=r"Parallel: route must be a Layer, got 'swap'"):
        parallel(Dense(2), route="swap")


# -------------------------------------------------------------------------------------- debug mode


def test_debug_mode_names_a_nan_inside_attention_inside_a_block_inside_a_model():
    """The issue's case: blocks and models used to run their sub-layers directly, so a NaN in attention
    was reported as the EncoderBlock child of serial; now every child is named down to the attention."""
    from purenet.models import GPTConfig, Seq2SeqInput, TransformerConfig, gpt, transformer_seq2seq

    # Params drawn by numpy (the init only traced): debug mode runs op by op, and an eager init would compile
    # a sampler per shape. The seq2seq below has the GPT's widths and lengths, so most ops compile once.
    model = gpt(GPTConfig(vocab_size=7, context=5, layers=2, d_model=8, heads=2))  # tied: a model function
    params, state = random_params(model, (2, 5), np.float32)
    params["body"]["blocks"][1]["attn"]["w_o"][0, 0] = np.nan
    ids = jnp.zeros((2, 5), jnp.int32)
    for run in (model.apply, model.vjp):
        with debug_nonfinite(), pytest.raises(NonFiniteLayerError) as error:
            run(params, state, ids)
        assert str(error.value).startswith(
            "child 'body' (Serial) > child 'blocks' (Serial) > child 1 (EncoderBlock) > child 0 (Residual) > "
            "inner layer (Serial) > child 'attn' (MultiHeadAttention): non-finite output (value: 10 nan")
    # an encoder-decoder run by a Tape: down to the cross-attention of the decoder block
    seq2seq = transformer_seq2seq(TransformerConfig(src_vocab=9, tgt_vocab=7, layers=1, d_model=8, heads=2))
    params, state = random_params(seq2seq.layer, Seq2SeqInput((2, 5), (2, 5)), np.float32)
    params["decoder"]["blocks"][0]["cross_attn"]["w_v"][0, 0] = np.inf
    with debug_nonfinite(), pytest.raises(NonFiniteLayerError) as error:
        seq2seq.layer.vjp(params, state, Seq2SeqInput(jnp.ones((2, 5), jnp.int32), jnp.ones((2, 5), jnp.int32)))
    assert str(error.value).startswith(
        "child 'decoder' (Serial) > child 'blocks' (Serial) > child 0 (DecoderBlock) > child 2 (Residual) > "
        "inner layer (Serial) > child 'cross_attn' (MultiHeadAttention): non-finite output")
