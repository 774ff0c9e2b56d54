"""The text-bearing models of the zoo in --quick mode: MiniBERT (masked characters of Shakespeare) and
MiniCLIP (MNIST digits and captions, zero-shot by prompts): metrics.json, plot and checkpoint written,
figures finite and better than chance."""

import json

import numpy as np

from tests.helpers import is_png, load_experiment


def test_mini_bert_quick(tmp_path):
    mini = load_experiment("mini_bert")
    metrics = mini.main(["--quick", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert is_png(tmp_path / "accuracy.png") and (tmp_path / "checkpoint.npz").exists()
    assert metrics["steps"] == mini.QUICK["steps"] and metrics["split"] == "test" and metrics["masked_positions"] > 0
    assert np.isfinite(metrics["loss"]) and 0 < metrics["baseline_accuracy"] < 1
    assert metrics["accuracy"] > 1 / metrics["vocabulary_size"]  # better than a uniform guess


def test_mini_clip_quick(tmp_path):
    mini = load_experiment("mini_clip")
    metrics = mini.main(["--quick", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert is_png(tmp_path / "curves.png") and (tmp_path / "checkpoint.npz").exists()
    assert metrics["split"] == "test" and len(metrics["accuracy_by_training_template"]) == len(mini.TEMPLATES)
    losses = [row[2] for row in metrics["history"]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # the contrastive loss falls
    assert 0.0 <= metrics["zero_shot_accuracy"] <= 1.0
