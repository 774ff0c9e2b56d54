"""The experiment scripts end to end in --quick mode: each main() trains, prints, and writes metrics.json,
its PNGs and a checkpoint that loads against the script's own model. No network: LeNet-5 falls back to
the shipped sample, Fashion-MNIST reads small fake IDX files, MNIST-1D is generated into a tmp dir."""

import importlib.util
import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.checkpoint import load_checkpoint
from purenet.data import load_mnist_sample, write_idx
from purenet.optim import adam
from purenet.schedules import cosine_decay_schedule

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
if str(EXPERIMENTS) not in sys.path:
    sys.path.append(str(EXPERIMENTS))  # appended: experiments/mnist1d.py must not shadow the package


def load_experiment(name):
    """Import experiments/<name>.py under a private module name (never shadowing a package)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_outputs(out, pngs, checkpoints, models_and_shapes, optimizer=adam(1e-3)):
    """metrics.json parses; every PNG is a PNG; each checkpoint loads against its model and optimizer."""
    common = load_experiment("common")
    metrics = json.loads((out / "metrics.json").read_text())
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    loaded = []
    for checkpoint, (model, in_shape) in zip(checkpoints, models_and_shapes):
        like = common.checkpoint_template(model, in_shape, optimizer, seed=0)
        loaded.append(load_checkpoint(out / checkpoint, like=like))
    return metrics, loaded


def write_fake_mnist(directory, num_train, num_test, seed=0):
    """Four gzipped IDX files with MNIST's names: random uint8 images (N, 28, 28) and labels 0..9."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count).astype(np.uint8))


def test_lenet5_quick_falls_back_to_sample_and_checkpoint_reproduces_accuracy(tmp_path, capsys):
    lenet = load_experiment("lenet5_mnist")
    out = tmp_path / "out"
    metrics = lenet.main(["--quick", "--out-dir", str(out), "--data-dir", str(tmp_path / "empty")])
    printed = capsys.readouterr().out
    assert "offline MNIST sample" in printed and "test accuracy" in printed and "wall time" in printed
    saved, (checkpoint,) = assert_outputs(out, ["curves.png"], ["checkpoint.npz"],
                                          [(lenet.build_model(), lenet.IN_SHAPE)])
    assert saved == metrics
    assert metrics["train_size"] == lenet.QUICK_TRAIN and metrics["epochs"] == 1
    assert checkpoint.step == lenet.QUICK_TRAIN // 64  # one epoch of batch 64
    # The saved params give the reported test accuracy.
    sample = load_mnist_sample()
    x, y = lenet.prepare(sample["x_test"][:lenet.QUICK_TEST]), sample["y_test"][:lenet.QUICK_TEST]
    logits, _ = lenet.build_model().apply(checkpoint.params, checkpoint.state, jnp.asarray(x))
    assert float(jnp.mean(jnp.argmax(logits, axis=1) == y)) == pytest.approx(metrics["test_accuracy"])


def test_lenet5_load_data_prefers_full_mnist_when_found(tmp_path):
    lenet = load_experiment("lenet5_mnist")
    write_fake_mnist(tmp_path / "mnist", num_train=30, num_test=20)
    data, source = lenet.load_data(tmp_path / "mnist")
    assert source.startswith("full MNIST") and data["x_train"].shape == (30, 28, 28)
    data, source = lenet.load_data(tmp_path / "nothing_here")
    assert "offline" in source and data["x_train"].shape == (4000, 28, 28)
    assert lenet.prepare(data["x_train"][:2]).shape == (2, 28, 28, 1)
    assert 0.0 <= lenet.prepare(data["x_train"]).min() and lenet.prepare(data["x_train"]).max() <= 1.0


def test_cnn_fashion_mnist_quick_on_fake_idx_files(tmp_path):
    fashion = load_experiment("cnn_fashion_mnist")
    write_fake_mnist(tmp_path / "fashion", num_train=300, num_test=80)
    out = tmp_path / "out"
    metrics = fashion.main(["--quick", "--data-dir", str(tmp_path / "fashion"), "--out-dir", str(out)])
    saved, (checkpoint,) = assert_outputs(out, ["curves.png"], ["checkpoint.npz"],
                                          [(fashion.build_model(), fashion.IN_SHAPE)])
    assert saved == metrics and metrics["train_size"] == fashion.QUICK_TRAIN
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["test_loss"])
    assert checkpoint.step == fashion.QUICK_TRAIN // 128


def test_cnn_fashion_mnist_without_files_explains_and_exits_2(tmp_path, capsys):
    fashion = load_experiment("cnn_fashion_mnist")
    with pytest.raises(SystemExit) as exit_info:
        fashion.main(["--quick", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--download" in message and "--data-dir" in message and "train-images-idx3-ubyte.gz" in message
    assert not (tmp_path / "out").exists()


def test_conv_autoencoder_quick(tmp_path):
    autoencoder = load_experiment("conv_autoencoder")
    out = tmp_path / "out"
    metrics = autoencoder.main(["--quick", "--out-dir", str(out), "--data-dir", str(tmp_path / "empty")])
    saved, _ = assert_outputs(out, ["curves.png", "reconstructions.png"], ["checkpoint.npz"],
                              [(autoencoder.build_model(), autoencoder.IN_SHAPE)])
    assert saved == metrics
    assert 0.0 < metrics["test_mse"] < 1.0 and np.isfinite(metrics["test_bce"])


def test_mlp_toy_quick_both_tasks(tmp_path):
    toy = load_experiment("mlp_toy")
    out = tmp_path / "out"
    metrics = toy.main(["--quick", "--out-dir", str(out), "--task", "both"])
    saved, _ = assert_outputs(
        out, ["clusters/curves.png", "clusters/decision_boundary.png", "regression/curves.png",
              "regression/fit.png"], ["clusters/checkpoint.npz", "regression/checkpoint.npz"],
        [(toy.build_classifier(), (-1, 2)), (toy.build_regressor(), (-1, 1))])
    assert saved == metrics
    assert 0.0 <= metrics["clusters"]["test_accuracy"] <= 1.0
    assert np.isfinite(metrics["regression"]["test_mse"])


def test_mnist1d_quick_table(tmp_path, capsys):
    mnist1d = load_experiment("mnist1d")
    out = tmp_path / "out"
    models = "logistic,cnn,gru" if mnist1d.GRU is not None else "logistic,cnn"
    metrics = mnist1d.main(["--quick", "--out-dir", str(out), "--data-dir", str(tmp_path / "data"),
                            "--models", models])
    names = models.split(",")
    saved, _ = assert_outputs(out, ["curves.png"], [f"{name}/checkpoint.npz" for name in names],
                              [(mnist1d.build_model(name), (-1, 40)) for name in names],
                              optimizer=adam(cosine_decay_schedule(1e-2, 4)))
    assert saved == metrics and sorted(metrics["test_accuracy"]) == sorted(names)
    table = (out / "table.md").read_text()
    assert table.strip() in capsys.readouterr().out
    assert "| MLP | not run | 68% |" in table and "| CNN |" in table


def test_mnist1d_table_marks_gru_unavailable():
    mnist1d = load_experiment("mnist1d")
    table = mnist1d.markdown_table({"logistic": 0.3, "mlp": 0.7, "cnn": 0.95})
    assert "| GRU | n/a (recurrent issue) | 91% |" in table
    assert "| CNN | 95.0% | 94% |" in table and "| Logistic regression | 30.0% | 32% |" in table
    with pytest.raises(SystemExit):
        mnist1d.parse_models("cnn,transformer")
