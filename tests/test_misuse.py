"""Systematic misuse: bad input either works correctly or raises a purenet error naming the layer or
function (raised through `purenet._checks.fail`), never a bare JAX/XLA error and never a silent wrong
result. Over every registry row, every optimizer, transform and schedule constructor, and every
experiment script's numeric flags.

The registry part runs abstractly (`jax.eval_shape`: traced, nothing compiled or run), as purenet's
checks fire while tracing: per row and kind, the misused input (a wrong rank, a wrong trailing
dimension, a wrong dtype, an empty batch) goes through `apply`, `vjp` and the pullback with the params
`init` made for the row's shape. If that runs, the result must be what is correct for that input: `init`
at the misused shape accepts it with params of the same shapes and declares the output shape we got
(the wrong dtype: the float32 input's shapes and dtypes, an integer passed through unchanged, and
values checked concretely on one row per family in `test_integer_input_equals_its_float_value`).
"""

import argparse
import ast
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import optim
from purenet._checks import fail
from purenet.check import compare, upcast
from purenet.core import as_shape_tree, init_model, is_differentiable, is_shape
from purenet.optim import schedules
from tests.helpers import EXPERIMENTS, load_experiment
from tests.registry import CASES
from tests.test_registry import _x

KINDS = ("wrong_rank", "wrong_trailing_dim", "wrong_dtype", "empty_batch")


def raised_by_fail(error: BaseException) -> bool:
    """Whether `error` was raised by purenet's `fail` (its traceback's last frame)."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is fail.__code__


def assert_purenet_error(error: BaseException, owner: str | None = None) -> None:
    assert raised_by_fail(error), f"not a purenet error: {type(error).__name__}: {error}"
    name = str(error).split(":")[0]
    assert name.isidentifier() and (owner is None or name == owner), f"does not name {owner or 'its owner'}: {error}"


def outcome(fn):
    """-> (result, None) or (None, the exception)."""
    try:
        return fn(), None
    except Exception as error:  # noqa: BLE001 (classified by the caller)
        return None, error


# ------------------------------------------------------------------------------------- the registry


def misused_shape(kind: str, shape: tuple) -> tuple:
    if kind == "wrong_rank":  # one example without its batch axis: the commonest slip
        return shape[1:]
    if kind == "wrong_trailing_dim":
        return (*shape[:-1], shape[-1] + 1)
    if kind == "empty_batch":
        return (0, *shape[1:])
    return shape


def misused_input(kind: str, x):
    """x's ShapeDtypeStructs with every leaf misused: float leaves become int32 and integer or boolean
    leaves float32 for the wrong dtype."""
    def leaf(a):
        if kind == "wrong_dtype":
            return jax.ShapeDtypeStruct(a.shape, jnp.int32 if is_differentiable(a) else jnp.float32)
        return jax.ShapeDtypeStruct(misused_shape(kind, a.shape), a.dtype)

    return jax.tree_util.tree_map(leaf, x)


def _abstract(x):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)


@functools.cache
def row_abstract(case_id: str) -> tuple:
    """A row's (params, state) from `abstract_init` at its own shape, and its input's ShapeDtypeStructs,
    traced once for every kind of misuse."""
    case = next(c for c in CASES if c.id == case_id)
    _, params, state = abstract_init(case.build(), case.in_shape)
    return params, state, _abstract(_x(case, jax.random.PRNGKey(1), jnp.float32))


def abstract_init(layer, in_shape):
    """`init_model` traced, not run: -> (declared out_shape, params, state) as ShapeDtypeStructs."""
    declared = []

    def init(key):
        out_shape, params, state = init_model(layer, key, in_shape)
        declared.append(out_shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.PRNGKey(0))
    return declared[0], params, state


def run_everything(layer, train, params, state, x):
    """apply, vjp and the pullback (a cotangent at every float output, None at the others) -> shapes."""
    k = jax.random.PRNGKey(1)
    y, _ = layer.apply(params, state, x, key=k, train=train)
    y_vjp, new_state, pullback = layer.vjp(params, state, x, key=k, train=train)
    dy = jax.tree_util.tree_map(lambda a: jnp.ones_like(a) if is_differentiable(a) else None, y_vjp)
    dparams, dx = pullback(dy)
    return y, y_vjp, new_state, dparams, dx


def shapes(tree):
    return jax.tree_util.tree_map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype).name), tree)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_registry_row_misuse_works_or_names_the_layer(case, kind):
    layer = case.build()
    params, state, x = row_abstract(case.id)
    bad = misused_input(kind, x)
    result, error = outcome(lambda: jax.eval_shape(lambda p, s, x: run_everything(layer, case.train, p, s, x),
                                                   params, state, bad))
    if error is not None:
        assert_purenet_error(error)
        return
    y, y_vjp, new_state, dparams, dx = result
    assert shapes(y) == shapes(y_vjp), "apply and vjp disagree"
    assert shapes(dparams) == shapes(params), "dparams do not have the tree of params"
    assert shapes(new_state) == shapes(state)
    x_leaves, x_tree = jax.tree_util.tree_flatten(bad)
    for a, d in zip(x_leaves, x_tree.flatten_up_to(dx)):
        assert d is None or d.shape == a.shape, f"dx {d.shape} for an input leaf {a.shape}"
    if kind == "wrong_dtype":
        assert all(is_differentiable(a) for a in jax.tree_util.tree_leaves(x)), \
            "a float passed as ids or a mask must be refused, not rounded"
        reference = jax.eval_shape(lambda p, s, x: run_everything(layer, case.train, p, s, x), params, state, x)[0]
        for ours, ref in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(reference)):
            assert ours.shape == ref.shape and ours.dtype in (ref.dtype, jnp.int32), (ours, ref)
        return
    bad_shape = jax.tree_util.tree_map(lambda s: misused_shape(kind, tuple(s)), as_shape_tree(case.in_shape),
                                       is_leaf=is_shape)
    there, init_error = outcome(lambda: abstract_init(layer, bad_shape))
    if init_error is not None:
        pytest.fail(f"apply accepts an input that init refuses ({init_error}): a silent result")
    declared, params_there, _ = there
    assert shapes(params_there) == shapes(params), "ran with params made for another input shape"
    declared = jax.tree_util.tree_leaves(as_shape_tree(declared), is_leaf=is_shape)
    for shape, out in zip(declared, jax.tree_util.tree_leaves(y)):
        assert tuple(out.shape) == tuple(shape), f"declared {shape}, got {out.shape}"
    if kind == "empty_batch" and jax.tree_util.tree_leaves(state):  # statistics over no values: run it
        _, params, state = init_model(layer, jax.random.PRNGKey(0), case.in_shape)
        empty = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), bad)
        new_state = layer.apply(params, state, empty, key=jax.random.PRNGKey(1), train=case.train)[1]
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(new_state)), new_state


# ------------------------------------------------------------------- habits from other libraries


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_registry_row_refuses_other_libraries_habits_naming_the_layer(case):
    """Calling the layer (PyTorch, Equinox), init on data (Flax), None as the batch size (Keras), apply
    without the state or with the key positionally: each a purenet error naming the layer, before any
    computation."""
    layer = case.build()
    params, state, x = row_abstract(case.id)
    data = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), x)
    first = jax.tree_util.tree_leaves(as_shape_tree(case.in_shape), is_leaf=is_shape)[0]
    with_none = jax.tree_util.tree_map(lambda s: (None, *s[1:]) if s == first else s, as_shape_tree(case.in_shape),
                                       is_leaf=is_shape)
    for call in (lambda: layer(data), lambda: layer.init(jax.random.PRNGKey(0), data),
                 lambda: layer.init(jax.random.PRNGKey(0), with_none), lambda: layer.apply(params, data),
                 lambda: layer.vjp(params, state, data, jax.random.PRNGKey(0))):
        _, error = outcome(call)
        assert error is not None, "accepted"
        assert_purenet_error(error, layer.name)


def test_the_training_steps_refuse_other_libraries_habits():
    """The habits tests/test_frictions.py replays with their messages, here as purenet errors."""
    from tests.test_frictions import HABITS

    for call, _, _ in HABITS.values():
        _, error = outcome(call)
        assert error is not None
        assert_purenet_error(error)


# A row per family where a layer computes on its input: an integer input must give the float value.
# (Conv2D, ConvTranspose2D and Dense with integer and bfloat16 input: tests/layers/test_conv.py.)
VALUE_ROWS = ["relu", "softmax-axis1", "maxpool2d", "maxpool2d-overlap", "avgpool2d-same-excl", "globalavgpool-2d",
              "batchnorm-train-unbiased-running-var", "rmsnorm-rank3", "rotary-t5", "sinusoidal-positions-odd-f",
              "flatten"]


def test_integer_input_equals_its_float_value():
    rows = [c for c in CASES if c.id in VALUE_ROWS]
    assert len(rows) == len(VALUE_ROWS), "a row of VALUE_ROWS left the registry"
    layers = [c.build() for c in rows]
    xs = [np.round(2 * _x(c, jax.random.fold_in(jax.random.PRNGKey(0), 1), np.float32)).astype(np.int32)
          for c in rows]

    @jax.jit
    def both(key, xs):  # one program: init and both applications of every row
        outputs = []
        for layer, c, x in zip(layers, rows, xs):
            _, params, state = init_model(layer, key, c.in_shape)
            outputs.append([layer.apply(p, s, v, key=jax.random.fold_in(key, 2), train=c.train)[0]
                            for p, s, v in ((params, state, x), (params, state, x.astype(jnp.float32)),
                                            upcast((params, state, x.astype(jnp.float64))))])
        return outputs

    for c, (ours, ref, truth) in zip(rows, both(jax.random.PRNGKey(0), xs)):
        assert jnp.issubdtype(ours.dtype, jnp.floating) or c.id == "flatten", c.id
        if c.id == "flatten":  # integers stay integers: exact
            np.testing.assert_array_equal(ours, ref)
        else:  # the suite's rule (tests/README.md), the float64 input the truth
            compare(ours, ref, truth=truth, what=c.id)


# ---------------------------------------------------------------------- optimizers and schedules

BAD_VALUES = [-1.0, 0.0, math.inf, math.nan, "0.1", True]
NEVER_VALID = {"inf", "nan", "str", "bool"}

OPTIMIZERS = {  # each alias with valid values for every numeric hyperparameter
    optim.sgd: dict(learning_rate=0.1, momentum=0.5),
    optim.rmsprop: dict(learning_rate=0.01, decay=0.9, eps=1e-8, momentum=0.5),
    optim.adagrad: dict(learning_rate=0.1, initial_accumulator_value=0.1, eps=1e-7),
    optim.adam: dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8),
    optim.adamw: dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
    optim.lion: dict(learning_rate=0.01, b1=0.9, b2=0.99, weight_decay=0.1),
    optim.scale_by_learning_rate: dict(learning_rate=0.1),
}
TRANSFORMS = {  # gradient transforms: no direction to check, only finite updates
    optim.scale: dict(step_size=-0.1),
    optim.trace: dict(decay=0.9),
    optim.scale_by_rms: dict(decay=0.9, eps=1e-8, initial_scale=0.0),
    optim.scale_by_stddev: dict(decay=0.9, eps=1e-8, initial_scale=0.0),
    optim.scale_by_rss: dict(initial_accumulator_value=0.1, eps=1e-7),
    optim.scale_by_adam: dict(b1=0.9, b2=0.999, eps=1e-8),
    optim.scale_by_lion: dict(b1=0.9, b2=0.99),
    optim.add_decayed_weights: dict(weight_decay=0.1),
    optim.clip: dict(max_delta=1.0),
    optim.clip_by_global_norm: dict(max_norm=1.0),
    (lambda every_k: optim.accumulate_gradients(optim.sgd(0.1), every_k)): dict(every_k=2),
}
SCHEDULES = {
    schedules.constant_schedule: dict(value=0.1),
    schedules.polynomial_schedule: dict(init_value=1.0, end_value=0.1, power=2.0, transition_steps=10,
                                        transition_begin=2),
    schedules.linear_schedule: dict(init_value=1.0, end_value=0.1, transition_steps=10, transition_begin=2),
    schedules.piecewise_constant_schedule: dict(init_value=1.0),
    (lambda scale: schedules.piecewise_constant_schedule(1.0, {5: scale})): dict(scale=0.5),
    schedules.exponential_decay: dict(init_value=1.0, transition_steps=10, decay_rate=0.5, transition_begin=2,
                                      end_value=0.1),
    schedules.cosine_decay_schedule: dict(init_value=1.0, decay_steps=10, alpha=0.1),
    schedules.warmup_cosine_decay_schedule: dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=10,
                                                 end_value=0.1),
}


def _label(value) -> str:
    return {str: "str", bool: "bool"}.get(type(value)) or ("nan" if value != value else
                                                           "inf" if value == math.inf else repr(value))


def _cases(table):
    return [(ctor, arg, value) for ctor, kwargs in table.items() for arg in kwargs for value in BAD_VALUES]


def _ids(table):
    return [f"{getattr(c, '__name__', 'ctor')}-{a}-{_label(v)}" for c, a, v in _cases(table)]


def _owner(ctor) -> str | None:
    return None if ctor.__name__ == "<lambda>" else ctor.__name__


def test_the_tables_cover_every_numeric_hyperparameter():
    for table in (OPTIMIZERS, TRANSFORMS, SCHEDULES):
        for ctor, kwargs in table.items():
            numeric = {name for name, p in inspect.signature(ctor).parameters.items()
                       if name not in ("mask", "nesterov", "centered", "staircase", "flip_sign", "opt",
                                       "boundaries_and_scales", "schedule")}
            assert numeric == set(kwargs), (ctor, numeric)


def _descends(opt) -> bool:
    """Five updates on f(p) = |p|^2 / 2 (gradient p): finite, and f never increases."""
    params = {"w": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "b": jnp.array([0.5, -1.0])}
    state, value = opt.init(params), math.inf
    for _ in range(5):
        updates, state = opt.update(params, state, params)
        params = optim.apply_updates(params, updates)
        new = float(sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))) / 2
        if not math.isfinite(new) or new > value + 1e-12:
            return False
        value = new
    return True


@pytest.mark.parametrize("ctor, arg, value", _cases(OPTIMIZERS), ids=_ids(OPTIMIZERS))
def test_optimizer_hyperparameter_is_valid_or_refused(ctor, arg, value):
    opt, error = outcome(lambda: ctor(**(OPTIMIZERS[ctor] | {arg: value})))
    if error is not None:
        return assert_purenet_error(error, _owner(ctor))
    assert _label(value) not in NEVER_VALID, f"{ctor.__name__} accepted {arg}={value!r}"
    assert _descends(opt), f"{ctor.__name__}({arg}={value!r}) does not descend"


@pytest.mark.parametrize("ctor, arg, value", _cases(TRANSFORMS), ids=_ids(TRANSFORMS))
def test_transform_hyperparameter_is_valid_or_refused(ctor, arg, value):
    opt, error = outcome(lambda: ctor(**(TRANSFORMS[ctor] | {arg: value})))
    if error is not None:
        return assert_purenet_error(error, _owner(ctor))
    assert _label(value) not in NEVER_VALID, f"accepted {arg}={value!r}"
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    updates, _ = opt.update(params, opt.init(params), params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))


@pytest.mark.parametrize("ctor, arg, value", _cases(SCHEDULES), ids=_ids(SCHEDULES))
def test_schedule_argument_is_valid_or_refused(ctor, arg, value):
    schedule, error = outcome(lambda: ctor(**(SCHEDULES[ctor] | {arg: value})))
    if error is not None:
        return assert_purenet_error(error, _owner(ctor))
    assert _label(value) not in NEVER_VALID, f"accepted {arg}={value!r}"
    values = np.asarray(schedule(jnp.arange(30)))
    assert np.all(np.isfinite(values)) and np.all(values >= 0), values  # never a negative learning rate


# ---------------------------------------------------------------------------- experiment flags

SCRIPTS = sorted(p.stem for p in EXPERIMENTS.glob("*.py") if p.stem != "common")
# No numeric flag takes a negative number, NaN, an infinity or text; 0 means something for many (a seed,
# greedy sampling, no dropout), but never for the shared --epochs, --batch-size and --lr.
REFUSED, ZERO_REFUSED = ("-1", "nan", "inf", "abc"), {"epochs", "batch_size", "lr"}
UNVALIDATED = {}  # script -> reason, for a script of work in progress (strict: the mark goes when it validates)


class _Parsed(Exception):
    """Raised by the patched parser to stop a script right after it has built its parser."""


def script_parser(name: str, monkeypatch) -> tuple:
    """-> (the script's module, the ArgumentParser its main builds), running nothing else."""
    module = load_experiment(name)
    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        with pytest.raises(_Parsed):
            module.main([]) if inspect.signature(module.main).parameters else module.main()
    return module, seen[0]


def numeric_flags(parser) -> list:
    def numeric(action):
        try:
            return isinstance(action.type("1"), (int, float))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            return False

    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.type and numeric(a)]


@pytest.mark.parametrize("name", [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=UNVALIDATED[s]))
                                  if s in UNVALIDATED else s for s in SCRIPTS])
def test_numeric_flags_are_validated_when_parsed(name, monkeypatch, capsys):
    module, parser = script_parser(name, monkeypatch)
    parse = getattr(module, "parse_args", parser.parse_args)  # the script's own checks too, where it has them
    flags = numeric_flags(parser)
    assert flags or name == "make_mnist_sample"
    for flag in flags:
        for bad in REFUSED + (("0",) if flag.dest in ZERO_REFUSED else ()):
            with pytest.raises(SystemExit) as exit_info:
                parse([flag.option_strings[0], bad])
            assert exit_info.value.code == 2, (flag.option_strings, bad)
            assert flag.option_strings[0] in capsys.readouterr().err, (flag.option_strings, bad)


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s not in ("benchmark", "attention_memory",
                                                                   "make_mnist_sample")])
def test_quick_keeps_an_explicit_epochs_and_a_missing_data_dir_fails(name, monkeypatch, capsys, tmp_path):
    module, parser = script_parser(name, monkeypatch)
    parse = getattr(module, "parse_args", parser.parse_args)
    try:
        assert parse(["--quick", "--epochs", "3"]).epochs == 3
    except SystemExit:  # a script that counts steps may refuse --epochs, with a message naming it
        assert "--epochs" in capsys.readouterr().err
    quick_epochs = getattr(parser, "quick_epochs", None)
    assert parse(["--quick"]).epochs == (quick_epochs or parser.get_default("epochs"))
    if name not in ("mnist1d_baselines", "cnn_fashion_mnist"):  # those create it (a cache, --download)
        with pytest.raises(SystemExit):
            parse(["--data-dir", str(tmp_path / "missing")])
        assert "no such directory" in capsys.readouterr().err


def test_no_script_overrides_epochs_under_quick():
    """--quick may shorten a run only through base_parser(quick_epochs=...), which an explicit --epochs
    overrides; an assignment to args.epochs inside `if args.quick:` would silently win over the flag."""
    for path in EXPERIMENTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and "quick" in ast.unparse(node.test):
                for inner in ast.walk(node):
                    targets = getattr(inner, "targets", [getattr(inner, "target", None)])
                    for target in targets:
                        for t in ast.walk(target) if target is not None else ():
                            assert not (isinstance(t, ast.Attribute) and t.attr == "epochs"), \
                                f"{path.name}: {ast.unparse(inner)}"


def test_the_misuse_test_sees_every_script():
    assert {"lenet5_mnist", "char_lm", "benchmark", "attention_memory", "mlp_toy"} <= set(SCRIPTS)
