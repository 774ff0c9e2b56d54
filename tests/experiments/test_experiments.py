"""The experiment scripts end to end in --quick mode: each main() trains, prints, and writes metrics.json,
its PNGs and a checkpoint that loads against the script's own model. No network: LeNet-5 falls back to
the shipped sample, Fashion-MNIST reads small fake IDX files, MNIST-1D is generated into a tmp dir."""

import ast
import json

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.data import load_mnist_sample, to_float_images
from purenet.models import lenet5
from purenet.optim import adam
from purenet.optim.schedules import cosine_decay_schedule
from purenet.training.checkpoint import load_checkpoint
from tests.helpers import EXPERIMENTS, checkpoint_template, is_png, load_experiment, write_fake_mnist


def assert_outputs(out, pngs, checkpoints, models_and_shapes, optimizer=adam(1e-3)):
    """metrics.json parses; every PNG is a PNG; each checkpoint loads against its model and optimizer."""
    metrics = json.loads((out / "metrics.json").read_text())
    for png in pngs:
        assert is_png(out / png), png
    loaded = []
    for checkpoint, (model, in_shape) in zip(checkpoints, models_and_shapes):
        like = checkpoint_template(model, in_shape, optimizer, seed=0)
        loaded.append(load_checkpoint(out / checkpoint, like=like))
    return metrics, loaded


def test_lenet5_quick_falls_back_to_sample_checkpoint_reproduces_accuracy_and_float16_scales(tmp_path, capsys):
    lenet = load_experiment("lenet5_mnist")
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()  # a directory without MNIST's files: the sample, and the run says so
    metrics = lenet.main(["--quick", "--out-dir", str(out), "--data-dir", str(tmp_path / "empty")])
    printed = capsys.readouterr().out
    assert "offline MNIST sample" in printed and "test_accuracy" in printed and "wall time" in printed
    assert "total: 60,170 parameters (235.0 KiB)" in printed  # the model's summary, printed at start-up
    saved, (checkpoint,) = assert_outputs(out, ["curves.png"], ["checkpoint.npz"], [(lenet5(), lenet.IN_SHAPE)])
    assert saved == metrics
    assert metrics["train_size"] == lenet.QUICK_TRAIN and metrics["epochs"] == 1
    assert checkpoint.step == lenet.QUICK_TRAIN // 64  # one epoch of batch 64
    # The saved params give the reported test accuracy.
    sample = load_mnist_sample()
    x, y = to_float_images(sample["x_test"][:lenet.QUICK_TEST]), sample["y_test"][:lenet.QUICK_TEST]
    logits, _ = lenet5().apply(checkpoint.params, checkpoint.state, jnp.asarray(x))
    assert float(jnp.mean(jnp.argmax(logits, axis=1) == y)) == pytest.approx(metrics["test_accuracy"])
    assert "['params']['conv1']['w']" in np.load(out / "checkpoint.npz").files  # named layers

    # float16 with dynamic loss scaling, in the same test: it reuses the compiled initializers above.
    metrics = lenet.main(["--quick", "--compute-dtype", "float16", "--out-dir", str(tmp_path / "float16")])
    assert (metrics["compute_dtype"], metrics["loss_scale"]) == ("float16", "dynamic")
    assert metrics["train_loss_scale"] == 2.0**15 and np.isfinite(metrics["test_loss"])


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
    metrics = autoencoder.main(["--quick", "--out-dir", str(out), "--data-dir", str(tmp_path)])
    saved, _ = assert_outputs(out, ["curves.png", "reconstructions.png"], ["checkpoint.npz"],
                              [(autoencoder.build_model(), autoencoder.IN_SHAPE)])
    assert saved == metrics
    assert 0.0 < metrics["test_mse"] < 1.0 and np.isfinite(metrics["test_loss"])


def test_mlp_toy_quick_both_tasks_keeps_an_explicit_epochs(tmp_path):
    toy = load_experiment("mlp_toy")
    out = tmp_path / "out"
    metrics = toy.main(["--quick", "--epochs", "2", "--out-dir", str(out), "--task", "both"])
    assert metrics["epochs"] == 2 and metrics["clusters"]["epochs"] == 2  # --quick does not override it
    saved, _ = assert_outputs(
        out, ["clusters/curves.png", "clusters/decision_boundary.png", "regression/curves.png",
              "regression/fit.png"], ["clusters/checkpoint.npz", "regression/checkpoint.npz"],
        [(toy.build_classifier(), (-1, 2)), (toy.build_regressor(), (-1, 1))])
    assert saved == metrics
    assert 0.0 <= metrics["clusters"]["test_accuracy"] <= 1.0
    assert np.isfinite(metrics["regression"]["test_mse"])


def test_mnist1d_quick_table(tmp_path, capsys):
    mnist1d = load_experiment("mnist1d_baselines")
    out = tmp_path / "out"
    models = "logistic,cnn,gru"
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
    for name in names:  # each model's own curves and metrics, from the shared tail
        assert is_png(out / name / "curves.png") and json.loads((out / name / "metrics.json").read_text())


def test_mnist1d_table_marks_models_not_run():
    mnist1d = load_experiment("mnist1d_baselines")
    table = mnist1d.markdown_table({"logistic": 0.3, "mlp": 0.7, "cnn": 0.95})
    assert "| GRU | not run | 91% |" in table
    assert "| CNN | 95.0% | 94% |" in table and "| Logistic regression | 30.0% | 32% |" in table
    with pytest.raises(SystemExit):
        mnist1d.parse_models("cnn,transformer")


def test_make_optimizer_returns_what_it_builds_and_leaves_the_flags_alone():
    common = load_experiment("common")
    parser = common.base_parser("x", "x", epochs=1, batch_size=8, lr_adam=1e-3, lr_sgd=0.1)
    args = parser.parse_args([])
    recipe = common.make_optimizer(args, steps=100, warmup=10, end_lr=lambda lr: lr / 10, clip=1.0,
                                   weight_decay=0.1)
    assert args.lr is None and recipe.lr == 1e-3 == common.learning_rate(args)
    assert [float(recipe.rate(n)) for n in (0, 10, 100)] == pytest.approx([0.0, 1e-3, 1e-4])
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((2, 2), 10.0), "b": jnp.zeros(2)}  # global norm 20: clipped to 1
    state = recipe.optimizer.init(params)
    for _ in range(11):  # the 11th update is at the peak rate
        updates, state = recipe.optimizer.update(grads, state, params)
    # Adam's normalized step (1 for a constant gradient, whatever its clipped size) plus the decay 0.1 * w
    np.testing.assert_allclose(updates["w"], -1e-3 * (1 + 0.1), rtol=1e-4)
    np.testing.assert_allclose(updates["b"], 0.0, atol=1e-12)  # zero gradient, no decay on a vector
    sgd = common.make_optimizer(parser.parse_args(["--optimizer", "sgd"]))
    assert sgd.lr == sgd.rate == 0.1 and common.make_optimizer(args, lr=0.5).lr == 0.5


def test_scripts_import_no_other_script_and_not_the_tests():
    scripts = sorted(EXPERIMENTS.glob("*.py"))
    others = {p.stem for p in scripts} - {"common"}
    assert "mnist1d" not in others  # it would shadow the mnist1d package
    for path in scripts:
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & (others | {"tests", "registry"}), f"{path.name} imports {imported & others}"
        assert "sys.path" not in path.read_text(), path.name


def test_attention_memory_prints_a_table(capsys):
    rows = load_experiment("attention_memory").main(["--lengths", "64", "128", "--block-size", "32"])
    assert [(r["residuals"], r["T"]) for r in rows] == [("probs", 64), ("probs", 128), ("logsumexp", 64),
                                                          ("logsumexp", 128)]
    assert all(r["temp_bytes"] > 0 for r in rows) and "| logsumexp | 128 |" in capsys.readouterr().out


def test_attention_memory_compares_causal_query_blocks(capsys):
    rows = load_experiment("attention_memory").main(["--lengths", "64", "--query-block-sizes", "16",
                                                     "--rounds", "1"])[2:]
    assert [(r["residuals"], r["query_block_size"]) for r in rows] == [("probs", 64), ("probs", 16),
                                                                        ("logsumexp", 64), ("logsumexp", 16)]
    whole, blocks = rows[0], rows[1]
    assert blocks["flops"] < 0.7 * whole["flops"] and all(r["seconds"] > 0 for r in rows)
    assert "| probs | 64 | 16 | 0.6" in capsys.readouterr().out
