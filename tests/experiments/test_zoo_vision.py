"""The vision scripts of the model zoo end to end in --quick mode (ResNet and MiniViT on the shipped MNIST
sample): each trains, prints, writes metrics.json, curves.png and a checkpoint that loads against the
script's own model, and tells the validation split from the test split."""

import json

import numpy as np
import pytest

from purenet.training.checkpoint import load_checkpoint
from purenet.data import num_batches
from tests.helpers import checkpoint_template, is_png, load_experiment


@pytest.mark.parametrize("name, split", [("resnet_mnist", "test"), ("vit_mnist", "validation")])
def test_quick_run_writes_metrics_plot_and_checkpoint(name, split, tmp_path, capsys):
    script, common = load_experiment(name), load_experiment("common")
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()  # no MNIST files there: the shipped sample
    argv = ["--quick", "--out-dir", str(out), "--data-dir", str(empty), "--split", split]
    metrics = script.main(argv)
    printed = capsys.readouterr().out
    assert "offline MNIST sample" in printed and f"{split} images (--quick)" in printed and "wall time" in printed
    assert json.loads((out / "metrics.json").read_text()) == metrics and is_png(out / "curves.png")
    assert metrics["split"] == split and metrics["train_size"] == script.QUICK_TRAIN
    assert metrics["test_size"] == script.QUICK_TEST and metrics["num_params"] > 0
    assert np.isfinite(metrics["test_loss"]) and 0.0 <= metrics["test_accuracy"] <= 1.0
    args = script.parse_args(argv)
    steps = args.epochs * num_batches(script.QUICK_TRAIN, args.batch_size)
    options = dict(warmup=args.warmup, weight_decay=args.weight_decay) if name == "vit_mnist" else {}
    recipe = common.make_optimizer(args, steps=steps, **options)  # as the script builds it
    like = checkpoint_template(script.build_model(args), script.IN_SHAPE, recipe.optimizer, seed=0)
    checkpoint = load_checkpoint(out / "checkpoint.npz", like=like)
    assert checkpoint.step == script.QUICK_TRAIN // 50  # one epoch of batch 50
