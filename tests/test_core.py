"""The contract and the combinators: shape inference at init, key splitting, structured inputs and the
None rule, named children, the decode contract, and errors naming the combinator and the values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import check_decode, check_layer
from purenet.combinators import identity, parallel, residual, select, serial
from purenet.core import Decode, Layer, can_decode, init_model, tree_add, zero_cotangent
from purenet.layers import LSTM, Conv1D, Dense, Dropout, Embedding, GRU, LayerNorm, Relu, SequenceInput, Tanh
from purenet.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tests.helpers import random_params, traced_init


def test_serial_infers_shapes_without_data():
    out_shape, params, state = traced_init(serial(Dense(8), Dense(3)), (-1, 5))
    assert out_shape == (-1, 3)
    assert params[0]["w"].shape == (5, 8) and params[1]["b"].shape == (3,)
    assert state == ({}, {})


def test_parallel_shapes():
    assert traced_init(parallel(Dense(2), Dense(3)), (-1, 4))[0] == (-1, 5)
    assert traced_init(parallel(Dense(4), identity(), merge="sum"), (-1, 4))[0] == (-1, 4)
    assert traced_init(parallel(a=Dense(2), b=Dense(3), merge=None), (-1, 4))[0] == {"a": (-1, 2), "b": (-1, 3)}
    assert traced_init(parallel(Dense(2), Dense(3), merge=None), [-1, 4])[0] == ((-1, 2), (-1, 3))


def test_init_model_casts_params(key):
    _, params, _ = init_model(Dense(2), key, (1, 3), dtype=jnp.float64)
    assert params["w"].dtype == jnp.float64


def test_serial_splits_keys_per_child(key):
    seen = []

    def spy():
        layer = identity()

        def apply(params, state, x, *, key=None, train=False):
            seen.append(key)
            return x, state

        return layer._replace(apply=apply)

    model = serial(spy(), spy())
    model.apply(({}, {}), ({}, {}), jnp.ones((1, 2)), key=key)
    assert not jnp.array_equal(seen[0], seen[1])
    model.apply(({}, {}), ({}, {}), jnp.ones((1, 2)), key=key)
    assert jnp.array_equal(seen[0], seen[2]) and jnp.array_equal(seen[1], seen[3])


# ------------------------------------------------------------------------------------------ errors


def test_serial_rejects_non_layers():
    with pytest.raises(ValueError, match=r"Serial: expects one or more Layer arguments, got 1: 'relu'"):
        serial(Dense(2), "relu")
    with pytest.raises(ValueError, match=r"Serial: expects one or more Layer arguments, got 'head': 3"):
        serial(body=Dense(2), head=3)
    with pytest.raises(ValueError, match=r"Serial: expects one or more Layer arguments, got \(\)"):
        serial()


def test_children_are_all_positional_or_all_named():
    with pytest.raises(ValueError, match=r"Serial: children are either all positional or all named, got 1 "
                                         r"positional and named \['head'\]"):
        serial(Dense(2), head=Dense(3))


def test_parallel_rejects_unknown_merge():
    with pytest.raises(ValueError, match=r"Parallel: merge must be one of \('concat', 'sum', 'mean', 'mul', None\), "
                                         r"got merge='max'"):
        parallel(Dense(2), merge="max")
    with pytest.raises(ValueError, match=r"Parallel: expects one or more Layer arguments, got 'merj': 'sum'"):
        parallel(a=Dense(2), merj="sum")  # a misspelt option is not swallowed


def test_parallel_sum_rejects_unequal_shapes(key):
    with pytest.raises(ValueError, match=r"Parallel: merge='sum' needs equal output shapes"):
        parallel(Dense(2), Dense(3), merge="sum").init(key, (1, 4))


def test_residual_rejects_shape_change(key):
    with pytest.raises(ValueError, match=r"Residual: inner layer Dense maps \(1, 4\) to \(1, 3\)"):
        residual(Dense(3)).init(key, (1, 4))


# ------------------------------------------------------------------------------- named children


def test_named_children_give_named_params_and_state(key):
    block = serial(dense=Dense(4), norm=LayerNorm())
    model = serial(embed=Embedding(10, 4), blocks=serial(block, block, block), head=Dense(10))
    out_shape, params, state = model.init(key, (-1, 7))  # run: a trace would sort the dicts' keys
    assert out_shape == (-1, 7, 10)
    assert list(params) == ["embed", "blocks", "head"] and list(state) == ["embed", "blocks", "head"]
    assert params["blocks"][2]["dense"]["w"].shape == (4, 4)
    assert params["blocks"][1]["norm"]["gamma"].shape == (4,)
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert "['blocks'][2]['norm']['beta']" in paths and "['embed']['w']" in paths


def test_named_params_give_named_checkpoint_entries_and_gradients(key, tmp_path):
    model = serial(hidden=Dense(5), act=Tanh(), head=Dense(2))
    params, state = random_params(model, (3, 4), np.float64)

    def dparams_of(params, x):  # traced (jax.eval_shape): the claim is dparams' tree
        y, _, pullback = model.vjp(params, state, x)
        return pullback(jnp.ones_like(y))[0]

    dparams = jax.eval_shape(dparams_of, params, jax.ShapeDtypeStruct((3, 4), jnp.float64))
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params)
    save_checkpoint(tmp_path / "c.npz", params=params, state=state, opt_state=(), step=1, key=None)
    with np.load(tmp_path / "c.npz") as npz:
        assert "['params']['head']['w']" in npz.files
    loaded = load_checkpoint(tmp_path / "c.npz", like=Checkpoint(params, state, (), 0, None))
    np.testing.assert_array_equal(loaded.params["hidden"]["w"], params["hidden"]["w"])


# ------------------------------------------------------------------- structured inputs, the None rule


def test_tree_add_skips_none():
    a = (jnp.ones(2), None, {"m": None, "x": jnp.ones(1)})
    b = (jnp.ones(2), None, {"m": None, "x": 2 * jnp.ones(1)})
    total = tree_add(a, b)
    assert total[1] is None and total[2]["m"] is None
    np.testing.assert_array_equal(total[0], [2, 2])
    np.testing.assert_array_equal(total[2]["x"], [3])
    assert tree_add(None, None) is None
    np.testing.assert_array_equal(tree_add(None, jnp.ones(2)), [1, 1])


def test_zero_cotangent_puts_none_at_integer_and_boolean_leaves():
    x = {"ids": jnp.zeros((2, 3), jnp.int32), "mask": jnp.ones((2, 3), bool), "x": jnp.ones((2, 3))}
    dx = zero_cotangent(x)
    assert dx["ids"] is None and dx["mask"] is None
    np.testing.assert_array_equal(dx["x"], np.zeros((2, 3)))


def test_parallel_of_two_embeddings_sums_to_none(key):
    # This failed in v1 (None + None); ids have no cotangent, so dx is None.
    model = parallel(Embedding(5, 3), Embedding(5, 3), merge="sum")
    _, params, state = model.init(key, (2, 4))
    ids = jnp.array([[0, 1, 2, 3], [4, 4, 0, 1]])
    y, _, pullback = model.vjp(params, state, ids)
    dparams, dx = pullback(jnp.ones_like(y))
    assert dx is None
    np.testing.assert_allclose(y, params[0]["w"][ids] + params[1]["w"][ids])
    np.testing.assert_allclose(dparams[0]["w"][4], 2 * np.ones(3))  # id 4 used twice


def test_select_routes_one_part_and_mirrors_the_input_structure(key):
    model = serial(parallel(serial(select("ids"), Embedding(6, 3)), select("x"), merge="sum"), Dense(2))
    in_shape = {"ids": (2, 5), "mask": (2, 5), "x": (2, 5, 3)}
    x = {"ids": jnp.ones((2, 5), jnp.int32), "mask": jnp.ones((2, 5), bool), "x": jnp.ones((2, 5, 3))}

    def dx_of(key, x):  # traced only (jax.eval_shape): the structure of dx, not its values (check_layer's)
        out_shape, params, state = model.init(key, in_shape)
        assert out_shape == (2, 5, 2)
        y, _, pullback = model.vjp(params, state, x)
        return pullback(jnp.ones_like(y))[1]

    dx = jax.eval_shape(dx_of, key, x)
    assert set(dx) == {"ids", "mask", "x"} and dx["ids"] is None and dx["mask"] is None
    assert dx["x"].shape == (2, 5, 3)
    check_layer(model, in_shape, key=key, x=jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, x))


def test_select_errors_name_the_path():
    with pytest.raises(ValueError, match=r"Select: expects a path of ints and strings, got \(\)"):
        select()
    with pytest.raises(ValueError, match=r"Select: path \('text',\): no part 'text' in dict"):
        select("text").init(None, {"image": (2, 3)})


def test_sequence_input_is_a_structured_input(key):
    # The recurrent layers' optional initial state follows the same rule: in_shape and dx mirror it.
    layer = LSTM(4)
    in_shape = SequenceInput((2, 5, 3), ((2, 4), (2, 4)))
    assert traced_init(layer, in_shape)[0] == (2, 5, 4)
    report = check_layer(layer, in_shape, key=key)
    assert "LSTM.dx.initial[1]" in report and "LSTM.dx.x" in report
    with pytest.raises(ValueError, match=r"LSTM: expected initial state h and c of shape \(2, 4\)"):
        layer.init(key, SequenceInput((2, 5, 3), (2, 4)))


# --------------------------------------------------------------------------------------- decode


def _lm(cell=LSTM):
    return serial(embed=Embedding(11, 5), rnn=serial(cell(6), cell(6)), norm=LayerNorm(), act=Relu(),
                  drop=Dropout(0.3), head=Dense(11))


@pytest.mark.parametrize("cell", [LSTM, GRU])
def test_serial_decode_steps_equal_apply(key, cell):
    model = _lm(cell)
    params, state = random_params(model, (-1, 9), np.float64)  # numpy draws: one compiled program, check_decode's
    ids = jax.random.randint(key, (3, 9), 0, 11)
    report = check_decode(model, params, state, ids)
    assert max(e.max_rel for e in report.values()) < 1e-12
    cache = model.decode.init_cache(params, 3, 9)
    assert set(cache) == set(params) and len(cache["rnn"][0]) == (2 if cell is LSTM else 1)  # (h, c) or (h,)
    assert cache["rnn"][1][0].shape == (3, 6) and cache["head"] == {}


def test_parallel_and_residual_decode(key):
    model = serial(Dense(4), residual(serial(Dense(4), Tanh())), parallel(Dense(2), LSTM(3)))
    params, state = random_params(model, (2, 6, 3), np.float64)
    check_decode(model, params, state, jax.random.normal(key, (2, 6, 3), jnp.float64))


def test_layers_that_cannot_decode_say_which_and_why(key):
    model = serial(embed=Embedding(5, 3), conv=Conv1D(4, 3), head=Dense(5))
    assert not can_decode(model) and model.decode.reason.startswith("Serial: child 'conv' (Conv1D)")
    with pytest.raises(ValueError, match=r"Serial: cannot decode step by step: child 'conv' \(Conv1D\) has no "
                                         r"decode step"):
        model.decode.init_cache(None, 2, 8)
    reverse = serial(LSTM(3, reverse=True))
    with pytest.raises(ValueError, match=r"Serial: cannot decode step by step: child 0 \(LSTM\) cannot decode "
                                         r"\(LSTM: reverse=True runs from the end of the sequence\)"):
        reverse.decode.step(None, None, None, pos=0)
    assert can_decode(Dense(2)) and not can_decode(Layer(*Dense(2)[:4]))


def test_decode_is_jittable_with_a_traced_position(key):
    model = _lm()
    params, state = random_params(model, (-1, 4), np.float32)
    step = jax.jit(model.decode.step)
    cache = model.decode.init_cache(params, 2, 4)
    logits, cache = step(params, cache, jnp.array([1, 2]), pos=jnp.int32(0))
    assert logits.shape == (2, 11) and isinstance(model.decode, Decode)


# ------------------------------------------------------------------------------ misuse, by name


def _returns_y_only():
    """A custom layer whose apply and vjp forget to return the state."""
    inner = Dense(3)

    def apply(params, state, x, *, key=None, train=False):
        return inner.apply(params, state, x)[0]

    def vjp(params, state, x, *, key=None, train=False):
        y, _, pullback = inner.vjp(params, state, x)
        return y, pullback

    return Layer(inner.init, apply, vjp, "MyLayer")


@pytest.mark.parametrize("batch", [2, 3])  # at batch 2, unpacking y along the batch would "work"
def test_combinators_name_a_child_that_breaks_the_return_contract(key, batch):
    model = serial(Dense(4), _returns_y_only())
    _, params, state = model.init(key, (batch, 5))
    x = jnp.ones((batch, 5), jnp.float32)
    with pytest.raises(ValueError, match=rf"Serial: child 1 \(MyLayer\)\.apply must return \(y, new_state\), got "
                                         rf"an array of shape \({batch}, 3\) float32"):
        model.apply(params, state, x)
    with pytest.raises(ValueError, match=r"Serial: child 1 \(MyLayer\)\.vjp must return \(y, new_state, pullback\), "
                                         r"got a tuple of 2"):
        model.vjp(params, state, x)
    with pytest.raises(ValueError, match=r"Parallel: child 0 \(MyLayer\)\.apply must return \(y, new_state\)"):
        parallel(_returns_y_only(), Dense(2)).apply(*parallel(_returns_y_only(), Dense(2)).init(key, (2, 5))[1:], x)


def test_serial_names_params_that_are_not_this_models(key):
    model = serial(Dense(4), Tanh(), Dense(2))
    _, params, state = model.init(key, (2, 5))
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=r"Serial: params must be a tuple of 3 entries, one per child \(what this "
                                         r"model's init returned\), got None"):
        model.apply(None, state, x)
    _, other, _ = serial(Dense(4), Dense(2)).init(key, (2, 5))  # another model: 2 children
    with pytest.raises(ValueError, match=r"Serial: params must be a tuple of 3 entries, one per child .*got a tuple "
                                         r"of 2 \(dict, dict\)"):
        model.apply(other, state, x)
    _, wider, _ = serial(Dense(6), Tanh(), Dense(2)).init(key, (2, 5))  # same structure, other shapes
    with pytest.raises(ValueError, match=r"Dense: params must be \{'w': \(\?, 4\), 'b': \(4,\)\} as this layer's "
                                         r"init made them, got \{'w': \(5, 6\), 'b': \(6,\)\}"):
        model.apply(wider, state, x)
    named = serial(a=Dense(2))
    with pytest.raises(ValueError, match=r"Serial: params must be a dict with keys \['a'\], one per child .*got a "
                                         r"dict with keys \['b'\]"):
        named.apply({"b": {}}, {"a": {}}, x)


def test_merges_and_residual_check_shapes_when_applied(key):
    # ids (N, T) with a longer T than at init reach the sum with another shape than the features do
    model = parallel(select(0), serial(select(1), Embedding(6, 3)), merge="sum")
    _, params, state = model.init(key, ((2, 4, 3), (2, 4)))
    x = (jnp.ones((2, 4, 3), jnp.float32), jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"Parallel: merge='sum' needs equal output shapes, got outputs \["
                                         r"'an array of shape \(2, 4, 3\) float32', 'an array of shape \(2, 5, 3\)"):
        model.apply(params, state, x)


def test_init_model_casts_float_state_with_the_params(key):
    from purenet.layers import BatchNorm

    _, params, state = init_model(serial(Dense(3), BatchNorm()), key, (4, 2), dtype=jnp.float64)
    assert state[1]["mean"].dtype == state[1]["var"].dtype == jnp.float64 == params[0]["w"].dtype
    _, new_state = serial(Dense(3), BatchNorm()).apply(params, state, jnp.ones((4, 2), jnp.float64), train=True)
    assert new_state[1]["var"].dtype == jnp.float64  # the running statistics stay in the model's dtype


def test_debug_mode_names_the_first_layer_with_a_non_finite_output_or_gradient(key):
    from purenet.debug import NonFiniteLayerError, debug_nonfinite

    log = Layer(Relu().init, lambda p, s, x, **kw: (jnp.log(x), s),
                lambda p, s, x, **kw: (jnp.log(x), s, lambda dy: ({}, dy / x)), "Log")
    model = serial(features=serial(Dense(3), Relu()), log=log, head=Dense(2))
    _, params, state = model.init(key, (2, 4))
    x = jnp.zeros((2, 4))  # Dense gives its bias, 0; Relu keeps it: log(0) = -inf
    model.apply(params, state, x)  # outside the debug mode nothing is checked
    with debug_nonfinite(), pytest.raises(NonFiniteLayerError) as error:
        model.apply(params, state, x)
    assert str(error.value).startswith("child 'log' (Log): non-finite output (value: 0 nan, ")
    params_nan = jax.tree_util.tree_map(lambda a: a, params)
    params_nan["features"][0]["w"] = params["features"][0]["w"].at[0, 0].set(jnp.nan)
    with debug_nonfinite(), pytest.raises(NonFiniteLayerError) as error:
        model.vjp(params_nan, state, jnp.ones((2, 4)))
    assert str(error.value).startswith("child 'features' (Serial) > child 0 (Dense): non-finite output")


def test_names_moved_out_of_core_still_import_with_a_warning():
    import purenet.core as core
    from purenet import _sharding, combinators

    with pytest.warns(DeprecationWarning, match=r"purenet\.core\.serial moved to purenet\.combinators\.serial"):
        assert core.serial is combinators.serial
    with pytest.warns(DeprecationWarning, match=r"purenet\.core\.vary_like moved to purenet\._sharding\.vary_like"):
        assert core.vary_like is _sharding.vary_like
    with pytest.raises(AttributeError, match=r"module 'purenet.core' has no attribute 'nothing'"):
        core.nothing  # noqa: B018
