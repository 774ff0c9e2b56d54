"""The char-level recurrent LM of the zoo: named params, whole-model gradient against jax.grad, and its
decode step equal to apply for every cell, tied or not."""

import jax
import jax.numpy as jnp
import pytest

from purenet.check import check_decode, check_model
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.models import CharLMConfig, char_lm


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_decode_steps_equal_apply(cell, tie, key):
    model = char_lm(CharLMConfig(11, cell, hidden=6, layers=2, embedding=6, tie_weights=tie))
    _, params, state = init_model(model, key, (-1, 7), dtype=jnp.float64)
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 0, 11)
    check_decode(model, params, state, ids)


def test_whole_model_gradient_equals_jax(key):  # float64 and float32 at one point
    model = char_lm(CharLMConfig(9, "lstm", hidden=5, layers=2, embedding=4))
    _, params, state = init_model(model, key, (-1, 6))
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 9)
    report = check_model(model, softmax_cross_entropy(), params, state, ids, jnp.roll(ids, -1, axis=1),
                         dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert "Serial[float32].dparams['rnn'][1]['w_h']" in report and "Serial[float64].dparams['head']['b']" in report


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"char_lm: cell must be one of \('rnn', 'lstm', 'gru'\), got cell='tcn'"):
        char_lm(CharLMConfig(9, "tcn"))
    with pytest.raises(ValueError, match=r"char_lm: tie_weights needs hidden == embedding, got hidden=8, "
                                         r"embedding=4"):
        char_lm(CharLMConfig(9, hidden=8, embedding=4, tie_weights=True))
