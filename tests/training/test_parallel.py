"""Scaling out: the data-parallel tests on 8 simulated CPU devices (tests/training/eight_devices.py, in a
subprocess: JAX fixes the device count when its CPU backend starts), 2 processes x 4 devices reaching the
same parameters as the full batches on one device, and what can be checked on this process's single
device."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from purenet import models, optim
from purenet.check import compare
from purenet.core import init_model
from purenet.losses import softmax_cross_entropy
from purenet.training import make_eval_step, make_train_step
from purenet.training.step import data_parallel_grad
from tests.training import multihost_worker

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent


def _env(devices: int) -> dict:
    """The child's environment: `devices` CPU devices, and the parent's XLA flags (a kernel variant of
    `make test-variants` applies to the child too) but for a device count of its own."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), PYTHONPATH=str(ROOT), XLA_FLAGS=" ".join(flags))


def test_on_eight_simulated_devices():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          str(HERE / "eight_devices.py")], env=_env(8), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and " passed" in run.stdout and "skipped" not in run.stdout, run.stdout + run.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reach_the_parameters_of_one_device(tmp_path):
    """2 processes x 4 devices (one 8-device mesh, each process feeding half of every batch) train to the
    parameters, BatchNorm statistics and losses of the same 10 steps on this process's one device with
    the full batches."""
    worker = HERE / "multihost_worker.py"

    def spawn(process_id, port, out):
        return subprocess.Popen([sys.executable, str(worker), "--process-id", str(process_id), "--processes", "2",
                                 "--port", str(port), "--out", str(out)], env=_env(4), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    port = _free_port()
    try:
        runs = [spawn(0, port, tmp_path / "two.npz"), spawn(1, port, tmp_path / "unused.npz")]
    except OSError as error:  # pragma: no cover - sandboxes without process spawning
        pytest.skip(f"cannot spawn worker processes: {error}")
    with jax.enable_x64(False):  # float32 as the workers run it, while they run
        multihost_worker.train(tmp_path / "one.npz")
    multihost_worker.train(tmp_path / "truth.npz", dtype="float64")
    outputs = []
    for run in runs:
        try:
            outputs.append(run.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for r in runs:
                r.kill()
            pytest.fail("the multi-host workers did not finish within 240 s")
    assert all(r.returncode == 0 for r in runs), "\n----\n".join(outputs)
    one, two, truth = (dict(np.load(tmp_path / f"{name}.npz")) for name in ("one", "two", "truth"))
    assert sorted(one) == sorted(two) == sorted(truth) and "losses" in one and "['state']['bn']['mean']" in one
    compare(two, one, truth=truth, what="2 processes x 4 devices")  # the suite's rule: tests/README.md
    assert not (tmp_path / "unused.npz").exists()  # process 1 writes nothing


def test_a_one_device_mesh_gives_the_plain_step(key):
    model = models.mlp((8,), 3)
    params, state = jax.jit(lambda key: init_model(model, key, (-1, 5))[1:])(key)  # one program, not one per draw
    batch = {"x": np.random.default_rng(0).normal(size=(4, 5)), "y": np.array([0, 1, 2, 1])}
    mesh = jax.make_mesh((1,), ("data",))
    plain = make_train_step(model, softmax_cross_entropy(), optim.sgd(0.1))
    meshed = make_train_step(model, softmax_cross_entropy(), optim.sgd(0.1), mesh=mesh)
    opt_state = optim.sgd(0.1).init(params)
    compare(meshed(params, state, opt_state, batch, key), plain(params, state, opt_state, batch, key), rtol=1e-12,
            what="1-device mesh")
    evaluate = make_eval_step(model, softmax_cross_entropy(), mesh=mesh)
    np.testing.assert_allclose(evaluate(params, state, batch)["loss"],
                               make_eval_step(model, softmax_cross_entropy())(params, state, batch)["loss"])


def test_bad_meshes_are_refused_by_name(key):
    model, loss = models.mlp((8,), 3), softmax_cross_entropy()
    with pytest.raises(TypeError, match=r"data_parallel_grad: mesh must be a jax.sharding.Mesh .*got dict"):
        data_parallel_grad(model, loss, {"data": 8})
    with pytest.raises(ValueError, match=r"axis_name \(='batch'\) is not an axis of the mesh, whose axes are "
                                         r"\('data',\)"):
        make_train_step(model, loss, optim.sgd(0.1), mesh=jax.make_mesh((1,), ("data",)), axis_name="batch")
