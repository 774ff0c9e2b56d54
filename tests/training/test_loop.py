"""The step-based loop (purenet.training.loop.run_steps): step t gets batch_at(t) and fold_in(key, t);
evaluations every k steps, at the last step and when the time budget is spent; a checkpoint at each;
a resumed run equals an uninterrupted one; StopTraining ends a run; bad arguments are named; tqdm is
imported only where a bar is shown. And the training package's floors: no import circle, and models/
imports neither training/ nor optim/."""

import ast
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.training import Run, StopTraining, run_steps
from purenet.training.checkpoint import Checkpoint, load_checkpoint


def toy_step(params, state, opt_state, batch, key):
    """params + batch + a number drawn from key; state counts the steps, opt_state keeps the last key."""
    params = params + batch + jax.random.uniform(key)
    return params, state + 1, key, {"loss": params}


def start():
    return jnp.zeros(()), jnp.zeros((), jnp.int32), jax.random.PRNGKey(7)


def test_steps_get_their_batch_and_key_and_evaluations_come_every_k_and_at_the_end(tmp_path):
    key, seen, calls = jax.random.PRNGKey(3), [], []

    def on_eval(run: Run):
        seen.append((run.step, [float(m["loss"]) for m in run.metrics], int(run.state)))
        return {"loss": float(run.metrics[-1]["loss"])}

    run = run_steps(toy_step, *start(), lambda t: calls.append(t) or float(t), key=key, steps=7, eval_every=3,
                    on_eval=on_eval, checkpoint=tmp_path / "c.npz", progress="period")
    assert calls == list(range(7)) and run.step == 7 and int(run.state) == 7
    expected = np.cumsum([t + float(jax.random.uniform(jax.random.fold_in(key, t))) for t in range(7)])
    np.testing.assert_allclose([float(m["loss"]) for m in run.metrics], expected, rtol=1e-12)  # float64
    assert [s for s, _, _ in seen] == [3, 6, 7] and [n for _, _, n in seen] == [3, 6, 7]
    assert all(len(losses) == step for step, losses, _ in seen)  # every step's metrics so far, on the host
    assert isinstance(run.metrics[0]["loss"], np.ndarray) and len(run.seconds) == 7
    assert run.trained == pytest.approx(sum(run.seconds[1:]))
    saved = load_checkpoint(tmp_path / "c.npz", like=Checkpoint(*start(), 0, key))
    assert saved.step == 7 and float(saved.params) == float(run.params)
    np.testing.assert_array_equal(saved.key, key)
    np.testing.assert_array_equal(run.opt_state, jax.random.fold_in(key, 6))


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    key = jax.random.PRNGKey(0)
    whole = run_steps(toy_step, *start(), float, key=key, steps=6, eval_every=2)

    def stop_at_4(run):
        if run.step == 4:
            raise StopTraining

    path = tmp_path / "checkpoint.npz"
    first = run_steps(toy_step, *start(), float, key=key, steps=6, eval_every=2, on_eval=stop_at_4, checkpoint=path)
    assert first.step == 4 and load_checkpoint(path, like=Checkpoint(*start(), 0, key)).step == 4
    second = run_steps(toy_step, *start(), float, key=key, steps=6, eval_every=2, checkpoint=path, resume=True)
    assert second.step == 6 and len(second.metrics) == 2
    assert float(second.params) == float(whole.params) and int(second.state) == 6
    # A checkpoint at or past `steps` runs nothing.
    done = run_steps(toy_step, *start(), float, key=key, steps=6, checkpoint=path, resume=True)
    assert done.step == 6 and done.metrics == [] and float(done.params) == float(whole.params)


def test_the_time_budget_stops_the_run_after_an_evaluation():
    evaluated = []
    run = run_steps(toy_step, *start(), float, key=jax.random.PRNGKey(0), steps=50, eval_every=20,
                    on_eval=lambda run: evaluated.append(run.step), time_budget=1e-9)
    assert run.step == 2 and evaluated == [2]  # the first step compiles: its time does not count


def test_bad_arguments_are_named(tmp_path):
    args = (toy_step, *start(), float)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"run_steps: steps must be an integer >= 1, got steps=0"):
        run_steps(*args, key=key, steps=0)
    with pytest.raises(ValueError, match=r"run_steps: eval_every must be an integer >= 1, got eval_every=0"):
        run_steps(*args, key=key, steps=3, eval_every=0)
    with pytest.raises(ValueError, match=r"run_steps: time_budget must be > 0 seconds, got time_budget=0"):
        run_steps(*args, key=key, steps=3, time_budget=0)
    with pytest.raises(ValueError, match=r"run_steps: resume=True needs the checkpoint path"):
        run_steps(*args, key=key, steps=3, resume=True)
    with pytest.raises(FileNotFoundError, match=r"run_steps: resume=True found no checkpoint at .*missing\.npz"):
        run_steps(*args, key=key, steps=3, resume=True, checkpoint=tmp_path / "missing.npz")


def test_tqdm_is_imported_only_where_a_bar_is_shown():
    code = "import sys, purenet, purenet.training; print('tqdm' in sys.modules)"
    root = pathlib.Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root)), cwd=root,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _purenet_imports(path: pathlib.Path) -> set[str]:
    """The purenet modules a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("purenet"):
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("purenet")}
    return names


def test_training_has_no_import_circle_and_models_import_no_training():
    package = pathlib.Path(__file__).parents[2] / "purenet"
    modules = {p.stem for p in (package / "training").glob("*.py")} - {"__init__"}
    graph = {m: {n.split(".")[2] for n in _purenet_imports(package / "training" / f"{m}.py")
                 if n.startswith("purenet.training.") and n.split(".")[2] in modules} for m in modules}
    done: list[str] = []
    while len(done) < len(modules):  # peel off the modules whose imports are all done
        ready = [m for m in sorted(modules) if m not in done and graph[m] <= set(done)]
        assert ready, f"an import circle among {sorted(set(modules) - set(done))}: {graph}"
        done += ready
    for path in (package / "models").glob("*.py"):
        upward = {n for n in _purenet_imports(path) if n.startswith(("purenet.training", "purenet.optim"))}
        assert not upward, f"{path.name} imports {upward}"
