"""purenet.optim against optax (reference only), step by step; purity, jit, convergence, error messages.

Every row of ROWS runs 100 steps of fresh random gradients on a nested tree (dicts, lists, tuples, a
bias-like vector, scalars) through ours and optax's, inside one jitted `lax.scan`; every step's updates
and the final params must agree, by the suite's rule (tests/README.md). float64 runs with x64 on; float32
runs with x64 off, as users run it, and is held to optax's trajectory in float64 from the same inputs.
All rows of a dtype are one jitted program, and one test checks them all (with the eager steps that
reuse the float64 run), so that the suite's workers compile each program once, not once per worker.
`python tests/optim/test_optim.py` prints the worst relative error of every row against its bound.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from purenet import optim
from purenet.check import compare, failures
from purenet.core import leaf_path
from purenet.optim.schedules import cosine_decay_schedule, warmup_cosine_decay_schedule

STEPS = 100


class Row(NamedTuple):
    id: str
    ours: Callable
    reference: Callable
    kwargs: dict


def with_mask(factory, mask):
    return lambda **kwargs: factory(**kwargs, mask=mask)


SCHEDULE = warmup_cosine_decay_schedule(0.0, 0.1, 10, 90, end_value=0.01)  # ours, fed to both sides
MASK_TREE = {"dense": {"w": True, "b": False}, "blocks": [(False, True)]}
MASK_PREFIX = {"dense": True, "blocks": False}
LR = {"learning_rate": 0.05}

ROWS = [
    Row("sgd", optim.sgd, optax.sgd, LR),
    Row("sgd-momentum", optim.sgd, optax.sgd, {**LR, "momentum": 0.9}),
    Row("sgd-nesterov", optim.sgd, optax.sgd, {**LR, "momentum": 0.9, "nesterov": True}),
    Row("sgd-schedule", optim.sgd, optax.sgd, {"learning_rate": SCHEDULE, "momentum": 0.5}),
    Row("rmsprop", optim.rmsprop, optax.rmsprop, {**LR, "decay": 0.8}),
    Row("rmsprop-centered", optim.rmsprop, optax.rmsprop, {**LR, "centered": True}),
    Row("rmsprop-momentum", optim.rmsprop, optax.rmsprop, {**LR, "momentum": 0.9}),
    Row("rmsprop-centered-nesterov", optim.rmsprop, optax.rmsprop,
        {**LR, "centered": True, "momentum": 0.8, "nesterov": True, "eps": 1e-6}),
    Row("adagrad", optim.adagrad, optax.adagrad, LR),
    Row("adagrad-zero-init", optim.adagrad, optax.adagrad, {**LR, "initial_accumulator_value": 0.0}),
    Row("adam", optim.adam, optax.adam, {"learning_rate": 0.01}),
    Row("adam-schedule", optim.adam, optax.adam, {"learning_rate": SCHEDULE, "b1": 0.8, "b2": 0.99,
                                                   "eps": 1e-6}),
    Row("adamw-default-mask", optim.adamw, with_mask(optax.adamw, optim.decay_mask),
        {"learning_rate": 0.01, "weight_decay": 0.1}),
    Row("adamw-mask-none", optim.adamw, optax.adamw, {"learning_rate": 0.01, "weight_decay": 0.1, "mask": None}),
    Row("adamw-mask-tree", optim.adamw, optax.adamw, {"learning_rate": 0.01, "weight_decay": 0.1,
                                                      "mask": MASK_TREE}),
    Row("adamw-mask-prefix", optim.adamw, optax.adamw, {"learning_rate": 0.01, "weight_decay": 0.1,
                                                        "mask": MASK_PREFIX}),
    Row("adamw-mask-callable", optim.adamw, optax.adamw,
        {"learning_rate": SCHEDULE, "mask": lambda p: jax.tree.map(lambda x: x.ndim == 1, p)}),
    Row("lion", optim.lion, optax.lion, {"learning_rate": 0.001, "weight_decay": 0.0}),
    Row("lion-decay", optim.lion, with_mask(optax.lion, optim.decay_mask),
        {"learning_rate": 0.001, "b1": 0.8, "b2": 0.95, "weight_decay": 0.5}),
    Row("clip_by_global_norm+adam",
        lambda: optim.chain(optim.clip_by_global_norm(5.0), optim.adam(0.01)),
        lambda: optax.chain(optax.clip_by_global_norm(5.0), optax.adam(0.01)), {}),
    Row("clip+sgd", lambda: optim.chain(optim.clip(0.5), optim.sgd(0.1, momentum=0.9)),
        lambda: optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9)), {}),
    Row("add_decayed_weights+sgd",
        lambda: optim.chain(optim.add_decayed_weights(0.1, mask=optim.decay_mask), optim.sgd(0.1)),
        lambda: optax.chain(optax.add_decayed_weights(0.1, mask=optim.decay_mask), optax.sgd(0.1)), {}),
    Row("scale", optim.scale, optax.scale, {"step_size": -0.3}),
    Row("scale_by_schedule", lambda: optim.scale_by_schedule(SCHEDULE), lambda: optax.scale_by_schedule(SCHEDULE),
        {}),
    Row("scale_by_learning_rate", optim.scale_by_learning_rate, optax.scale_by_learning_rate,
        {"learning_rate": SCHEDULE, "flip_sign": False}),
    Row("accumulate-adam-4", lambda: optim.accumulate_gradients(optim.adam(0.01), 4),
        lambda: optax.MultiSteps(optax.adam(0.01), 4, accumulator_dtype=None), {}),
    Row("accumulate-sgd-momentum-3", lambda: optim.accumulate_gradients(optim.sgd(0.1, momentum=0.9), 3),
        lambda: optax.MultiSteps(optax.sgd(0.1, momentum=0.9), 3, accumulator_dtype=None), {}),
    Row("accumulate-clip-adamw-1",
        lambda: optim.accumulate_gradients(optim.chain(optim.clip_by_global_norm(3.0), optim.adamw(0.01)), 1),
        lambda: optax.MultiSteps(optax.chain(optax.clip_by_global_norm(3.0),
                                             optax.adamw(0.01, mask=optim.decay_mask)), 1,
                                 accumulator_dtype=None), {}),
]


def make_params(rng):
    """A nested tree (dict, list, tuple) of a matrix, a bias-like vector, a rank-3 kernel and a scalar;
    float32, drawn with NumPy (a jax.random draw would be a program to compile)."""
    def normal(*shape):
        return np.asarray(rng.standard_normal(shape, dtype=np.float32))

    return {"dense": {"w": normal(4, 3), "b": normal(3)}, "blocks": [(normal(2, 2, 3), normal())]}


def random_like(rng, tree):
    """Fresh gradients: standard normal leaves times one random factor in [e^-2, e^2] (so clipping by
    global norm triggers on some steps and not on others)."""
    factor = np.float32(np.exp(rng.uniform(-2.0, 2.0)))
    return jax.tree.map(lambda x: factor * rng.standard_normal(x.shape, dtype=np.float32), tree)


def make_inputs(seed):
    """Params and STEPS fresh gradients (each leaf stacked on a leading step axis), float32."""
    rng = np.random.default_rng(seed)
    params = make_params(rng)
    return params, jax.tree.map(lambda *steps: np.stack(steps), *(random_like(rng, params) for _ in range(STEPS)))


def trajectory(opt, apply_updates, params, grads):
    """One update per step of `grads` -> (every step's updates, stacked; final params)."""

    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params)
        return (apply_updates(params, updates), state), updates

    (params, _), updates = lax.scan(step, (params, opt.init(params)), grads)
    return updates, params


def per_step(tree) -> list:
    """A tree of stacked (STEPS, ...) leaves as a list of STEPS trees, so each step is compared on its
    own scale."""
    return [jax.tree.map(lambda a: a[t], tree) for t in range(STEPS)]


@functools.cache
def inputs(dtype: str) -> tuple:
    """Params and STEPS gradients drawn in float32 and cast to `dtype`: the float64 run is then, exactly,
    the truth of the float32 one (tests/README.md)."""
    return jax.tree.map(lambda a: a.astype(dtype), make_inputs(0))


_RUNS: dict = {}


def run_rows(rows, dtype: str) -> list:
    """[((our updates, our final params), (optax's updates, final params))] for every row, from
    `inputs(dtype)`, all rows in one jitted program (one compilation per dtype); cached for ROWS."""
    key = (tuple(row.id for row in rows), dtype)
    if key not in _RUNS:
        with jax.enable_x64(dtype == "float64"):
            pairs = [(row.ours(**row.kwargs), row.reference(**row.kwargs)) for row in rows]

            @jax.jit
            def run(params, grads):
                return [(trajectory(ours, optim.apply_updates, params, grads),
                         trajectory(reference, optax.apply_updates, params, grads)) for ours, reference in pairs]

            _RUNS[key] = jax.tree.map(np.asarray, run(*inputs(dtype)))
    return _RUNS[key]


def compare_with_optax(rows, dtype: str) -> tuple[dict[str, dict], dict]:
    """-> ({row id: compare's report of every step's updates and the final params, ours vs optax's},
    {row id: our updates of every step}); float32 is held to the float64 run of optax, its truth."""
    results, truths = run_rows(rows, dtype), run_rows(rows, "float64")
    reports, our_steps = {}, {}
    for row, ((our_updates, our_params), reference), (_, truth) in zip(rows, results, truths):
        assert jax.tree.structure(our_params) == jax.tree.structure(inputs(dtype)[0]), row.id
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves((our_updates, our_params))), row.id
        ours, reference, truth = ((per_step(u), p) for u, p in ((our_updates, our_params), reference, truth))
        reports[row.id] = compare(ours, reference, truth=truth, what=row.id, raise_=False)
        our_steps[row.id] = our_updates
    return reports, our_steps


@functools.cache
def all_rows_against_optax(dtype: str) -> tuple[dict[str, dict], dict]:
    return compare_with_optax(ROWS, dtype)


def test_comparison_can_fail():
    wrong = Row("sgd-vs-other-momentum", optim.sgd, lambda **kw: optax.sgd(**{**kw, "momentum": 0.8}),
                {"learning_rate": 0.1, "momentum": 0.9})
    for dtype in ("float64", "float32"):
        report = compare_with_optax([wrong], dtype)[0][wrong.id]
        assert failures(report) and max(e.max_rel for e in report.values()) > 1e-3


def snapshot(tree):
    return jax.tree.structure(tree), [np.array(leaf) for leaf in jax.tree.leaves(tree)]


def assert_same(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1], strict=True):
        np.testing.assert_array_equal(a, b)


EAGER_STEPS = 2


def first_steps(opt, params, grads_per_step):
    """The updates of the first EAGER_STEPS steps, run eagerly, asserting that no step changes its inputs
    and that updates and float state keep the params' dtype."""
    state, updates_per_step = opt.init(params), []
    for step in range(EAGER_STEPS):
        grads = jax.tree.map(lambda g: g[step], grads_per_step)
        inputs = snapshot((grads, state, params))
        updates, new_state = opt.update(grads, state, params)
        new_params = optim.apply_updates(params, updates)
        assert_same(inputs, snapshot((grads, state, params)))
        dtype = jax.tree.leaves(params)[0].dtype
        assert all(u.dtype == dtype for u in jax.tree.leaves((updates, new_params)))
        assert all(s.dtype in (dtype, jnp.int32) for s in jax.tree.leaves(new_state))
        updates_per_step.append(updates)
        params, state = new_params, new_state
    return updates_per_step


def test_matches_optax_step_by_step_and_jit_equals_eager():
    """Every row, float64 and float32: our updates at every step and the final params equal optax's (the
    module's docstring). Then every row's first EAGER_STEPS steps, eagerly in float64: no step changes its
    inputs, updates and float state keep float64, and the updates equal those of the jitted run."""
    bad = [line for dtype in ("float64", "float32") for report in all_rows_against_optax(dtype)[0].values()
           for line in failures(report)]
    assert not bad, "\n".join(bad)
    for row in ROWS:
        eager = first_steps(row.ours(**row.kwargs), *jax.tree.map(jnp.asarray, inputs("float64")))
        jitted = all_rows_against_optax("float64")[1][row.id]
        for step, updates in enumerate(eager):
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(jitted), strict=True):
                np.testing.assert_allclose(a, b[step], rtol=1e-12, atol=1e-14, err_msg=f"{row.id}, step {step}")


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_float32_stays_float32_with_x64_on(row):
    """With x64 on, nothing promotes float32 to float64: the updates, params and float state of
    EAGER_STEPS steps, traced (the dtypes an eager run gives)."""
    opt = row.ours(**row.kwargs)

    def steps(params, grads_per_step):
        state, out = opt.init(params), []
        for step in range(EAGER_STEPS):
            updates, state = opt.update(jax.tree.map(lambda g: g[step], grads_per_step), state, params)
            params = optim.apply_updates(params, updates)
            out.append((updates, params, state))
        return out

    for updates, params, state in jax.eval_shape(steps, *inputs("float32")):
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((updates, params))), row.id
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state)), row.id


def test_adamw_default_mask_skips_vectors_and_scalars():
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), make_params(np.random.default_rng(4)))
    opt = optim.adamw(0.1, weight_decay=0.5)
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    for p, u in zip(jax.tree.leaves(params), jax.tree.leaves(updates)):
        np.testing.assert_allclose(u, -0.1 * 0.5 * p if p.ndim >= 2 else np.zeros(p.shape), rtol=1e-14)


def test_masks_by_name():
    params = {"embed": {"w": jnp.ones((5, 3))}, "pos": {"w": jnp.ones((8, 3))},
              "blocks": [{"ff": {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}}, {"ff": {"w": jnp.ones((3, 3))}}]}
    paths = jax.tree_util.tree_map_with_path(lambda p, _: leaf_path(p), params)
    assert paths["blocks"][1]["ff"]["w"] == "blocks/1/ff/w" and paths["pos"]["w"] == "pos/w"
    mask = optim.decay_mask_except("pos/*", "embed*")(params)
    assert mask == {"embed": {"w": False}, "pos": {"w": False},
                    "blocks": [{"ff": {"w": True, "b": False}}, {"ff": {"w": True}}]}
    only_first = optim.path_mask(lambda path, leaf: path.startswith("blocks/0/"))(params)
    assert only_first["blocks"][0]["ff"] == {"w": True, "b": True}
    assert not only_first["blocks"][1]["ff"]["w"] and not only_first["embed"]["w"]
    # adamw decays by name: the positional table keeps its value under zero gradients.
    opt = optim.adamw(0.1, weight_decay=0.5, mask=optim.decay_mask_except("pos/*"))
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    np.testing.assert_allclose(updates["pos"]["w"], 0.0)
    np.testing.assert_allclose(updates["embed"]["w"], -0.05)
    with pytest.raises(ValueError, match=r"decay_mask_except: expects one or more non-empty path patterns"):
        optim.decay_mask_except()


def test_accumulate_gradients_applies_the_mean_every_k_calls():
    params = {"w": jnp.zeros((2, 3))}
    opt = optim.accumulate_gradients(optim.sgd(1.0), 3)
    state = opt.init(params)
    grads = [{"w": jnp.full((2, 3), float(i))} for i in (1, 2, 6, 3)]
    seen = []
    for g in grads:
        updates, state = opt.update(g, state, params)
        seen.append(float(updates["w"][0, 0]))
    assert seen == [0.0, 0.0, -3.0, 0.0]
    assert int(state.mini_step) == 1 and float(state.mean_grads["w"][1, 2]) == 3.0


# ------------------------------------------------------------------------------------ convergence


def quadratic_gradient(params, center, curvature):
    """f = sum(curvature * (x - center)^2) / 2  ->  df/dx = curvature * (x - center)."""
    return jax.tree.map(lambda x, c, a: a * (x - c), params, center, curvature)


CONVERGE = {
    "sgd": lambda lr: optim.sgd(lr),
    "sgd-nesterov": lambda lr: optim.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop-centered": lambda lr: optim.rmsprop(lr, centered=True, momentum=0.5),
    "adagrad": lambda lr: optim.adagrad(lr),
    "adam": lambda lr: optim.adam(lr),
    "adamw-no-decay": lambda lr: optim.adamw(lr, weight_decay=0.0),
    "lion": lambda lr: optim.lion(lr),
    "accumulate-adam": lambda lr: optim.accumulate_gradients(optim.adam(lr), 2),
}
PEAK_LR = {"sgd": 0.5, "sgd-nesterov": 0.1, "adagrad": 1.0, "lion": 0.05}


def test_converges_on_a_quadratic():
    """Every optimizer of CONVERGE, 800 steps from zero (one jitted program for all): max |x - x*| < 1e-3."""
    rng = np.random.default_rng(5)
    center = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,))}
    curvature = jax.tree.map(lambda c: rng.uniform(0.5, 2.0, c.shape), center)
    opts = {name: make(cosine_decay_schedule(PEAK_LR.get(name, 0.1), 600)) for name, make in CONVERGE.items()}

    def run(opt, params):
        def step(i, carry):
            params, state = carry
            updates, state = opt.update(quadratic_gradient(params, center, curvature), state, params)
            return optim.apply_updates(params, updates), state

        return lax.fori_loop(0, 800, step, (params, opt.init(params)))[0]

    finals = jax.jit(lambda p: {name: run(opt, p) for name, opt in opts.items()})(jax.tree.map(np.zeros_like, center))
    errors = {name: max(np.max(np.abs(p - c)) for p, c in zip(jax.tree.leaves(params), jax.tree.leaves(center)))
              for name, params in finals.items()}
    assert all(error < 1e-3 for error in errors.values()), {n: f"{e:.2e}" for n, e in errors.items()}


def rosenbrock_gradient(xy):
    """f = (1 - x)^2 + 100 (y - x^2)^2  ->  df/dx = -2 (1 - x) - 400 x (y - x^2);  df/dy = 200 (y - x^2)."""
    x, y = xy[0], xy[1]
    return jnp.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


def test_adam_solves_rosenbrock():
    opt = optim.adam(cosine_decay_schedule(0.05, 5000, alpha=0.01))

    def step(i, carry):
        xy, state = carry
        updates, state = opt.update(rosenbrock_gradient(xy), state, xy)
        return optim.apply_updates(xy, updates), state

    xy0 = jnp.array([-1.5, 2.0])
    xy, _ = jax.jit(lambda p: lax.fori_loop(0, 5000, step, (p, opt.init(p))))(xy0)
    np.testing.assert_allclose(xy, [1.0, 1.0], atol=1e-3)


# ---------------------------------------------------------------------------------------- errors


def _adam_without_params():
    opt = optim.adamw(0.1, mask=None)
    params = {"w": jnp.ones((2, 2))}
    return opt.update(params, opt.init(params))


ERRORS = [
    (lambda: optim.adam(-0.1),
     "adam: learning_rate must be a finite number >= 0 or a schedule, got learning_rate=-0.1"),
    (lambda: optim.adam("fast"), "adam: learning_rate must be a real number, got learning_rate='fast'"),
    (lambda: optim.adam(0.1, b1=1.5), "adam: b1 must be in [0, 1), got b1=1.5"),
    (lambda: optim.adam(0.1, b2=-0.1), "adam: b2 must be in [0, 1), got b2=-0.1"),
    (lambda: optim.adam(0.1, eps=0.0), "adam: eps must be a finite number > 0, got eps=0.0"),
    (lambda: optim.adam(0.1, eps=True), "adam: eps must be a real number, got eps=True"),
    (lambda: optim.adamw(0.1, weight_decay=-1e-4),
     "adamw: weight_decay must be a finite number >= 0, got weight_decay=-0.0001"),
    (lambda: optim.sgd(0.1, nesterov=True), "sgd: nesterov=True needs a momentum, got momentum=None"),
    (lambda: optim.sgd(0.1, momentum=1.0), "sgd: momentum must be in [0, 1), got momentum=1.0"),
    (lambda: optim.rmsprop(0.1, decay=1.0), "rmsprop: decay must be in [0, 1), got decay=1.0"),
    (lambda: optim.rmsprop(0.1, eps=-1e-8), "rmsprop: eps must be a finite number > 0, got eps=-1e-08"),
    (lambda: optim.rmsprop(0.1, nesterov=True), "rmsprop: nesterov=True needs a momentum, got momentum=None"),
    (lambda: optim.adagrad(0.1, initial_accumulator_value=-1.0),
     "adagrad: initial_accumulator_value must be a finite number >= 0, got initial_accumulator_value=-1.0"),
    (lambda: optim.lion(0.1, b1=float("nan")), "lion: b1 must be a real number, got b1=nan"),
    (lambda: optim.clip(0.0), "clip: max_delta must be a finite number > 0, got max_delta=0.0"),
    (lambda: optim.clip_by_global_norm(-1.0),
     "clip_by_global_norm: max_norm must be a finite number > 0, got max_norm=-1.0"),
    (lambda: optim.trace(2.0), "trace: decay must be in [0, 1), got decay=2.0"),
    (lambda: optim.scale(None), "scale: step_size must be a finite real number, got step_size=None"),
    (lambda: optim.adam(float("inf")), "adam: learning_rate must be a finite number >= 0 or a schedule, got "
                                       "learning_rate=inf"),
    (lambda: optim.adam(lambda count: -1e-3 * jnp.ones(())),
     "adam: a learning_rate schedule's value must be a finite number >= 0, got learning_rate(0)=-0.001"),
    (lambda: optim.scale_by_schedule(0.1), "scale_by_schedule: schedule must be callable (count -> value), "
                                          "got schedule=0.1"),
    (lambda: optim.accumulate_gradients(optim.sgd(0.1), 0),
     "accumulate_gradients: every_k must be an integer >= 1, got every_k=0"),
    (lambda: optim.accumulate_gradients(optim.sgd(0.1), 2.0),
     "accumulate_gradients: every_k must be an integer >= 1, got every_k=2.0"),
    (lambda: optim.accumulate_gradients(optim.sgd, 2),
     "accumulate_gradients: expects optimizers with init and update (call the factory), got <function sgd"),
    (lambda: optim.chain(optim.clip(1.0), optim.adam),
     "chain: expects optimizers with init and update (call the factory), got <function adam"),
    (_adam_without_params, "add_decayed_weights: update needs params, got params=None"),
]


@pytest.mark.parametrize("build, message", ERRORS, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in
                                                         enumerate(ERRORS)])
def test_error_messages(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    print(f"{'row':32s} {'float64 error/bound':>20s} {'float32 error/bound':>20s}")
    for row in ROWS:
        worst = [max(e.max_rel / e.rtol for e in all_rows_against_optax(dtype)[0][row.id].values())
                 for dtype in ("float64", "float32")]
        print(f"{row.id:32s} {worst[0]:20.2e} {worst[1]:20.2e}")
