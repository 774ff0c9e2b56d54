"""BertMLM (Hugging Face's BertForMaskedLM with the pooler): the whole model's gradient against jax.grad
with padding, token types and the pooler's output in the loss; the input forms; config errors. The match
with transformers itself is in tests/interop/."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_model
from purenet.core import Loss
from purenet.losses import TokenTargets, masked_softmax_cross_entropy
from purenet.models import BertMLMConfig, bert_mlm
from tests.helpers import random_params

TINY = BertMLMConfig(vocab_size=11, context=8, type_vocab_size=2, layers=2, d_model=8, heads=2, hidden=16)
# One block for the gradient check: a block's pullback is as wrong in one block as in two (two stacked
# blocks against PyTorch's gradient, float64 and float32: the loaded BERT of tests/interop).
ONE = TINY._replace(layers=1)


def mlm_and_pooled(c):
    """masked cross-entropy of the logits + <pooled, c>: a loss that reaches the pooler too."""
    ce = masked_softmax_cross_entropy()

    def vjp(out, target):
        value, pullback = ce.vjp(out[0], target)
        return value + jnp.sum(out[1] * c), lambda g: (pullback(g), g * c)

    return Loss(lambda out, target: vjp(out, target)[0], vjp, "MLMAndPooled")


def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, (3, 6))
    valid = np.ones((3, 6), bool)
    valid[1, 4:], valid[2, 2:] = False, False
    types = (np.arange(6) >= 3).astype(np.int32)[None].repeat(3, 0)
    chosen = (rng.random((3, 6)) < 0.5) & valid
    chosen[:, 0] = True
    return (ids, types, valid), TokenTargets(ids, chosen)


def test_whole_model_gradient_equals_jax():  # float64 and float32 at one point
    model = bert_mlm(ONE)
    (ids, types, valid), targets = batch()
    params, state = random_params(model, ((3, 6),) * 3, np.float32)
    assert params["types"]["w"].shape == (2, 8) and params["pooler"]["dense"]["w"].shape == (8, 8)
    c = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)  # in the loss: cast with the point
    report = check_model(model, mlm_and_pooled(c), params, state, (ids, types, valid), targets,
                         dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert "BertMLM[float32].dparams['pooler']['dense']['w']" in report


def test_input_forms_and_padding():
    model = bert_mlm(TINY._replace(pooler=False))
    (ids, types, valid), _ = batch()
    params, state = random_params(model, (3, 6), jnp.float64)
    changed = np.array(ids)
    changed[1, 4:] = 0  # what a padded key holds does not reach a token

    @jax.jit  # one program for the four applies (eagerly, each op compiles on its own)
    def run(params):
        return [model.apply(params, state, x)[0] for x in (ids, (ids, np.zeros_like(ids)), (ids, types, valid),
                                                            (changed, types, valid))]

    alone, with_types, masked, again = run(params)
    np.testing.assert_array_equal(alone, with_types)  # token types default to 0, the mask to all tokens
    np.testing.assert_allclose(masked[1, :4], again[1, :4], rtol=1e-12)
    assert alone.shape == (3, 6, 11)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"BertMLM: d_model \(=10\) must be divisible by heads \(=4\)"):
        bert_mlm(BertMLMConfig(d_model=10, heads=4))
    with pytest.raises(ValueError, match=r"BertMLM: expected token_type_ids of shape \(N, T\) like ids \(2, 5\), "
                                         r"got \(2, 4\)"):
        bert_mlm(TINY).init(jax.random.PRNGKey(0), ((2, 5), (2, 4)))
    with pytest.raises(ValueError, match=r"BertMLM: expected integer ids of shape \(N, T\), got float32"):
        model = bert_mlm(TINY)
        params, state = random_params(model, (2, 5), jnp.float32)
        model.apply(params, state, jnp.zeros((2, 5), jnp.float32))
