"""The char-level recurrent LM of the zoo: named params, whole-model gradient against jax.grad, and its
decode step equal to apply for every cell, tied or not."""

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_decode, check_model
from purenet.losses import softmax_cross_entropy
from purenet.models import CharLMConfig, char_lm
from tests.helpers import random_init


# Every cell's decode step, and the head tied (TiedLM's step) and untied (a Dense head's): each row
# another cell, the tie on one of them (the head's step does not depend on the cell).
@pytest.mark.parametrize("cell, tie", [("rnn", False), ("lstm", True), ("gru", False)])
def test_decode_steps_equal_apply(cell, tie):
    model = char_lm(CharLMConfig(11, cell, hidden=6, layers=2, embedding=6, tie_weights=tie))
    _, params, state = random_init(model, (2, 7), np.float64)
    assert ("body" in params) == tie  # TiedLM holds the cells under "body"
    ids = np.random.default_rng(1).integers(0, 11, (2, 7))
    check_decode(model, params, state, ids)


def test_whole_model_gradient_equals_jax():  # float64 and float32 at one point
    model = char_lm(CharLMConfig(9, "lstm", hidden=5, layers=2, embedding=4))
    _, params, state = random_init(model, (3, 6))
    ids = np.random.default_rng(1).integers(0, 9, (3, 6))
    report = check_model(model, softmax_cross_entropy(), params, state, ids, np.roll(ids, -1, axis=1),
                         dtype=(jnp.float64, jnp.float32))
    assert all(e.max_rel <= e.rtol for e in report.values())
    assert "Serial[float32].dparams['rnn'][1]['w_h']" in report and "Serial[float64].dparams['head']['b']" in report


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"char_lm: cell must be one of \('rnn', 'lstm', 'gru'\), got cell='tcn'"):
        char_lm(CharLMConfig(9, "tcn"))
    with pytest.raises(ValueError, match=r"char_lm: tie_weights needs hidden == embedding, got hidden=8, "
                                         r"embedding=4"):
        char_lm(CharLMConfig(9, hidden=8, embedding=4, tie_weights=True))
