"""MiniBERT: the whole model's gradient (padding included) against jax.grad, the padding mask, BERT's
masking proportions, and config errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model, compare, upcast
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models import BertConfig, bert, mask_tokens
from purenet.optim import adam
from purenet.training import make_train_step
from tests.helpers import random_params

PAD, MASK = 8, 7  # ids 0..6 are tokens
TINY = BertConfig(vocab_size=9, context=8, layers=2, d_model=8, heads=2, hidden=16, pad_id=PAD)
# One block for the gradient check: a block's pullback is as wrong in one block as in two (the padding
# mask handed from block to block: test_padding_changes_nothing, two blocks).
ONE = TINY._replace(layers=1)


def padded_batch():
    """Three sequences of 7: whole, 5 tokens + 2 [PAD], 3 tokens + 4 [PAD]; about half the tokens chosen,
    most of those replaced by [MASK] (numpy: no program to compile; `mask_tokens` is tested below)."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, MASK, (3, 7))
    ids[1, 5:], ids[2, 3:] = PAD, PAD
    chosen = (rng.random((3, 7)) < 0.5) & (ids != PAD)
    return np.where(chosen & (rng.random((3, 7)) < 0.7), MASK, ids), TokenTargets(ids, chosen)


def test_whole_model_gradient_equals_jax():  # float64 and float32 at one point
    model = bert(ONE)
    params, state = random_params(model, (3, 7), jnp.float32)
    assert params["encoder"]["blocks"][0]["attn"]["w_q"].shape == (8, 8) and params["head"]["b"].shape == (9,)
    inputs, targets = padded_batch()
    assert targets.mask.any() and not (targets.mask & (inputs == PAD)).any()
    report = check_model(model, masked_softmax_cross_entropy(), params, state, inputs, targets, dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())


def test_padding_changes_nothing():
    # The tokens' logits of a right-padded sequence equal those of the sequence alone; without the
    # padding mask the [PAD] rows would be attended to (non-causal) and change them.
    model = bert(TINY)
    params, state = random_params(model, (1, 7), np.float32)
    tokens = np.array([[3, 1, 4, 1, 5]])

    @jax.jit  # one program for the three applies
    def run(params):
        apply = lambda p, ids: model.apply(p, state, ids)[0]  # noqa: E731
        return (apply(params, np.concatenate([tokens, np.full((1, 2), PAD)], axis=1)), apply(params, tokens),
                apply(upcast(params), tokens))

    padded, alone, truth = run(params)
    compare(padded[:, :5], alone, truth=truth, what="padded")


def test_training_step_traces_without_autodiff(autodiff_forbidden):
    # The jitted step traced (jax.eval_shape: nothing compiled) with JAX's autodiff patched to raise.
    model, optimizer = bert(TINY), adam(1e-3)
    params, state = random_params(model, (3, 7), np.float32)
    inputs, targets = padded_batch()
    step = make_train_step(model, masked_softmax_cross_entropy(), optimizer, metrics={})
    new_params, *_ = jax.eval_shape(step, params, state, jax.eval_shape(optimizer.init, params),
                                    {"x": inputs, "y": targets}, jax.random.PRNGKey(0))
    assert new_params["embed"]["w"].shape == (9, 8)


def test_mask_tokens_proportions():
    ids = np.random.default_rng(0).integers(0, 50, (400, 500))  # 200,000 positions
    valid = np.broadcast_to(np.arange(500) < 450, (400, 500))  # the last 50 of each row are padding
    draw = jax.jit(functools.partial(mask_tokens, mask_id=50, num_tokens=50))  # one program, not op by op
    inputs, targets = draw(jax.random.PRNGKey(1), ids, valid=valid)
    chosen = np.asarray(targets.mask)
    np.testing.assert_array_equal(targets.labels, ids)
    assert not chosen[:, 450:].any()  # padding is never chosen
    assert abs(chosen.mean() / 0.9 - 0.15) < 0.003  # 15% of the valid positions (sd 0.0008)
    inputs, ids = np.asarray(inputs), np.asarray(ids)
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # unchosen positions are untouched
    masked, kept = np.mean(inputs[chosen] == 50), np.mean(inputs[chosen] == ids[chosen])
    assert abs(masked - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 50)) < 0.006  # a random id may equal the label
    random = inputs[chosen][(inputs[chosen] != 50) & (inputs[chosen] != ids[chosen])]
    assert abs(len(random) / chosen.sum() - 0.1 * 49 / 50) < 0.006 and 0 <= random.min() and random.max() < 50
    again, _ = draw(jax.random.PRNGKey(1), ids, valid=valid)
    np.testing.assert_array_equal(again, inputs)  # the same key, the same draw


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"MiniBERT: d_model \(=10\) must be divisible by heads \(=4\)"):
        bert(BertConfig(5, d_model=10, heads=4))
    with pytest.raises(ValueError, match=r"MiniBERT: pad_id must be None or an id in \[0, vocab_size=5\)"):
        bert(BertConfig(5, pad_id=5))
    with pytest.raises(ValueError, match=r"mask_tokens: rate must be in \(0, 1\], got rate=0"):
        mask_tokens(jax.random.PRNGKey(0), jnp.zeros((2, 3), int), mask_id=1, num_tokens=1, rate=0)
    with pytest.raises(ValueError, match=r"mask_fraction \+ random_fraction must be <= 1"):
        mask_tokens(jax.random.PRNGKey(0), jnp.zeros((2, 3), int), mask_id=1, num_tokens=1, mask_fraction=0.95)
    with pytest.raises(ValueError, match=r"MiniBERT: expected ids of rank 2 \(N, T\), got shape \(3,\)"):
        bert(TINY).init(jax.random.PRNGKey(0), (3,))
