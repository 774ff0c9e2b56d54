"""Per-step XLA compiler options (purenet.compiler): "auto" applies the measured table's rule to the steps
whose program holds its primitive and to no other, None and a dict are obeyed (seen in the compiled
program), a bad option raises naming it, a table option this jaxlib lacks is dropped with a warning, a step
called inside another jit runs, and the options leave the step's results as they were."""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet.layers as L
from purenet import compiler
from purenet.check import tolerance
from purenet.combinators import serial
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.optim import adam
from purenet.training import make_eval_step, make_train_step

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
on_measured_cpu = pytest.mark.skipif(
    (jax.default_backend(), compiler._version()) not in compiler.MEASURED or jax.default_backend() != "cpu",
    reason="the table's CPU rule is for the CPU backend and the jaxlib it was measured on")


def conv_net():  # two input channels: one would take the "taps" form on the CPU, no convolution
    return serial(L.Conv2D(4, (3, 3)), L.Relu(), L.Flatten(), L.Dense(3))


def dense_net():
    return serial(L.Dense(8), L.Relu(), L.Dense(3))


def _step(model, in_shape, **kwargs):
    key = jax.random.PRNGKey(0)
    _, params, state = init_model(model, key, in_shape)
    optimizer = adam(1e-2)
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=in_shape).astype(np.float32), "y": rng.integers(0, 3, in_shape[0], np.int32)}
    step = make_train_step(model, softmax_cross_entropy(), optimizer, **kwargs)
    return step, (params, state, optimizer.init(params), batch, key)


def _uses_ynnpack(step, args) -> bool:
    return "__ynn_fusion" in step.lower(*args).compile().as_text()  # YNNPACK's fusions are kind "__ynn_fusion"


def test_auto_applies_a_rule_to_the_steps_holding_its_primitive_only(monkeypatch):
    rules = (("conv_general_dilated", YNN_OFF),)
    monkeypatch.setitem(compiler.MEASURED, (jax.default_backend(), compiler._version()), rules)
    conv, conv_args = _step(conv_net(), (2, 6, 6, 2))
    dense, dense_args = _step(dense_net(), (2, 5))
    assert conv.options is None and dense.options is None  # decided at the first call
    conv(*conv_args), dense(*dense_args)
    assert conv.options == YNN_OFF and dense.options == {}
    if jax.default_backend() == "cpu":  # the options reach XLA: no YNNPACK fusion where they turn it off
        assert not _uses_ynnpack(conv, conv_args) and _uses_ynnpack(dense, dense_args)
    evaluate = make_eval_step(conv_net(), softmax_cross_entropy())
    evaluate(*conv_args[:2], conv_args[3])
    assert evaluate.options == YNN_OFF


@on_measured_cpu
def test_the_cpu_table_keeps_ynnpack_for_single_products_in_a_step_with_a_convolution():
    conv, conv_args = _step(conv_net(), (2, 6, 6, 2))
    conv(*conv_args)
    assert conv.options == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@on_measured_cpu
def test_none_and_a_dict_are_obeyed():
    plain, args = _step(conv_net(), (2, 6, 6, 2), compiler_options=None)
    plain(*args)
    assert plain.options == {} and _uses_ynnpack(plain, args)
    own, dense_args = _step(dense_net(), (2, 5), compiler_options=YNN_OFF)
    own(*dense_args)
    assert own.options == YNN_OFF and not _uses_ynnpack(own, dense_args)


def test_the_options_leave_the_results_as_they_were():
    with_options, args = _step(conv_net(), (3, 7, 7, 2), compiler_options=YNN_OFF)
    without, _ = _step(conv_net(), (3, 7, 7, 2), compiler_options=None)
    a, b = with_options(*args), without(*args)
    # float32: the same sums in another order (`purenet.check.tolerance`'s rule)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=tolerance(jnp.float32), atol=1e-6)


def test_a_step_inside_another_jit_runs_without_its_options():
    step, args = _step(conv_net(), (2, 6, 6, 2), compiler_options=YNN_OFF)
    outer = jax.jit(lambda *a: step(*a)[3]["loss"])(*args)
    np.testing.assert_allclose(outer, step(*args)[3]["loss"], rtol=tolerance(jnp.float32))


@pytest.mark.parametrize("bad, says", [({"xla_cpu_no_such_option": True}, "No such compile option"),
                                       ({"xla_cpu_use_onednn": "maybe"}, "not a valid bool"),
                                       ("fast", "compiler_options must be 'auto', None or a dict"),
                                       ({1: True}, "compiler_options must be 'auto', None or a dict")])
def test_a_bad_option_is_named(bad, says):
    with pytest.raises(ValueError, match="make_train_step") as error:
        _step(dense_net(), (2, 5), compiler_options=bad)
    assert says in str(error.value)


def test_a_table_option_this_jaxlib_lacks_is_dropped_with_a_warning(monkeypatch):
    rule = ("dot_general", {"xla_cpu_from_a_later_jaxlib": True, "xla_cpu_multi_thread_eigen": False})
    monkeypatch.setitem(compiler.MEASURED, (jax.default_backend(), compiler._version()), (rule,))
    step, args = _step(dense_net(), (2, 5))
    with pytest.warns(UserWarning, match="xla_cpu_from_a_later_jaxlib"):
        step(*args)
    assert step.options == {"xla_cpu_multi_thread_eigen": False}


def test_an_unlisted_jaxlib_gets_no_options(monkeypatch):
    monkeypatch.setattr(compiler, "MEASURED", {})
    step, args = _step(conv_net(), (2, 6, 6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(*args)
    assert step.options == {}


def test_primitives_are_found_inside_sub_programs():
    def scanned(x):
        return jax.lax.scan(lambda c, _: (jax.lax.cond(c.sum() > 0, jnp.sin, jnp.cos, c), None), x, None, 2)[0]

    found = compiler._primitives(jax.make_jaxpr(scanned)(jnp.ones(3)).jaxpr)
    assert {"scan", "cond", "sin", "cos"} <= found


def test_generate_and_the_searches_take_options():
    from purenet.models import GPTConfig, generate, gpt
    from purenet.models.search import beam_search, greedy_search
    from purenet.models.seq2seq import Seq2SeqInput, TransformerConfig, transformer_seq2seq

    lm = gpt(GPTConfig(11, context=8, layers=1, d_model=8, heads=2))
    _, params, _ = init_model(lm, jax.random.PRNGKey(0), (-1, 8))
    prompt, key = jnp.ones((2, 3), jnp.int32), jax.random.PRNGKey(1)
    drawn = [generate(lm, params, prompt, key, length=4, temperature=0.0, compiler_options=options)
             for options in (YNN_OFF, None)]
    np.testing.assert_array_equal(*drawn)
    with pytest.raises(ValueError, match="generate.*xla_cpu_nope"):
        generate(lm, params, prompt, key, length=4, compiler_options={"xla_cpu_nope": 1})

    translator = transformer_seq2seq(TransformerConfig(src_vocab=9, tgt_vocab=7, layers=1, d_model=8, heads=2,
                                                       hidden=16, dropout=0.0))
    _, params, _ = init_model(translator.layer, jax.random.PRNGKey(2), Seq2SeqInput((-1, 5), (-1, 6)))
    src = np.array([[4, 5, 6, 2, 0], [7, 8, 2, 0, 0]])
    greedy = [greedy_search(translator, params, src, max_len=6, compiler_options=o) for o in (YNN_OFF, None)]
    np.testing.assert_array_equal(*greedy)
    beams, _ = beam_search(translator, params, src, beam=1, max_len=6, compiler_options=YNN_OFF)
    np.testing.assert_array_equal(beams, greedy[0])  # beam 1 is greedy search
    for search in (greedy_search, partial(beam_search, beam=2)):
        with pytest.raises(ValueError, match="compiler_options"):
            search(translator, params, src, max_len=6, compiler_options="fast")
