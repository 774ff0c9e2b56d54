"""The GPT experiments: the sorting smoke test in its short form (every held-out sequence sorted), and
MiniGPT on Shakespeare in --quick mode (metrics, checkpoint, sampling past the position table, a resumed
run equal to an uninterrupted one, the LSTM comparison)."""

import json

import jax
import numpy as np
import pytest

from purenet.data import sorting_task
from tests.helpers import is_png, load_experiment


def test_sorting_task_splits_every_sequence_once():
    train, test = sorting_task(6, 3, seed=0)
    assert train.shape == (547, 6) and test.shape == (182, 6)  # 729 sequences, 25% held out
    seen = {tuple(s) for s in train}
    assert len(seen) == len(train) and not seen & {tuple(s) for s in test}
    assert len(seen | {tuple(s) for s in test}) == 3 ** 6 and train.min() == 0 and train.max() == 2


def test_sorting_task_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sorting_task: test_fraction must be in"):
        sorting_task(test_fraction=1.0)
    with pytest.raises(ValueError, match="digits\\*\\*length must be at most"):
        sorting_task(20, 3)


def test_gpt_sorts_the_held_out_sequences(tmp_path):
    # minGPT's demo, shortened for the suite: 1 layer without dropout, 200 steps at a higher rate (the
    # default run is 3 layers, 2,000 steps). This form sorted 100% of 1,000 test draws at seeds 0 to 5 and
    # 99.5% at seed 6 (train 100% at each; 2 layers: 100%, and 99.7% at seed 2); an untrained model sorts none.
    sort = load_experiment("gpt_sort")
    metrics = sort.main(["--steps", "200", "--lr", "5e-3", "--warmup", "20", "--layers", "1", "--dropout", "0",
                         "--test-draws", "1000", "--out-dir", str(tmp_path)])
    assert metrics["test_draws"] == 1000 and metrics["test_sequences"] == 182
    assert metrics["test_exact_match"] >= 0.99 and metrics["train_exact_match"] >= 0.99
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_sort_batch_counts_only_the_sorted_copy():
    sort = load_experiment("gpt_sort")
    batch = sort.batch_of(np.array([[2, 0, 1]]))
    np.testing.assert_array_equal(batch["x"], [[2, 0, 1, 0, 1]])
    np.testing.assert_array_equal(batch["y"].labels, [[0, 1, 0, 1, 2]])
    np.testing.assert_array_equal(batch["y"].mask, [[False, False, True, True, True]])


def test_mini_gpt_quick_compare_mixed_precision_and_resume(tmp_path, capsys):
    # Each main() compiles its own programs (training step, evaluation, sampling), so the claims share runs:
    # the float32 --compare run is the reference of the mixed-precision runs, and the float16 run (dynamic
    # loss scaling) is the uninterrupted run that a stopped-then-resumed float16 run must equal bit for bit.
    mini = load_experiment("mini_gpt")
    # A prompt of at least context // 2 characters: every sampled chunk has the same shape (one compilation).
    metrics = mini.main(["--quick", "--compare", "--prompt", "HAMLET, PRINCE", "--out-dir", str(tmp_path / "f32")])
    printed = capsys.readouterr().out
    assert "| gpt |" in printed and "| lstm |" in printed and "tokens/s" in printed
    assert json.loads((tmp_path / "f32" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert is_png(tmp_path / "f32" / "val_loss.png") and (tmp_path / "f32" / "checkpoint.npz").exists()
    gpt, lstm = metrics["gpt"], metrics["lstm"]
    assert gpt["steps"] == mini.QUICK["steps"] and np.isfinite(gpt["val_loss"])
    assert gpt["val_loss"] < np.log(metrics["vocabulary_size"]) + 0.5  # not diverged (untrained: 4.32 < 4.83)
    (_, early, _), (_, late, _) = gpt["val_history"]  # steps 6 and 12: it learns (4.22 -> 4.17 nats/char)
    assert late < early
    assert len(gpt["sample"]) == mini.QUICK["sample_length"] > mini.QUICK["context"]  # past the table
    # The LSTM's steps are calibrated to the GPT's training seconds, and the run stops when those are spent:
    # with steps of a few ms on a loaded machine it may stop a step or two before the calibrated count.
    assert 2 <= lstm["steps"] <= lstm["scheduled_steps"] and lstm["train_seconds"] <= 3 * gpt["train_seconds"] + 1

    # The issue's bar for bfloat16 (a validation loss within 0.02 of float32's at the same steps and seed),
    # here at --quick's size (training moves it 0.16, from 4.32 untrained); float16 trains with dynamic loss
    # scaling by default.
    flags = ["--quick", "--sample-length", "4"]
    runs = {"float32": gpt}
    for dtype in ("bfloat16", "float16"):
        runs[dtype] = mini.main(flags + ["--compute-dtype", dtype, "--out-dir", str(tmp_path / dtype)])["gpt"]
    assert [(r["compute_dtype"], r["loss_scale"]) for r in runs.values()] == [
        ("float32", "none"), ("bfloat16", "none"), ("float16", "dynamic")]
    for dtype in ("bfloat16", "float16"):
        assert runs[dtype]["steps"] == mini.QUICK["steps"]
        assert abs(runs[dtype]["val_loss"] - runs["float32"]["val_loss"]) < 0.02, dtype

    # A float16 run stopped early by its time budget, then resumed from its checkpoint, equals the
    # uninterrupted one: params, Adam's moments and the loss scale's state, bit for bit.
    split = flags + ["--compute-dtype", "float16", "--out-dir", str(tmp_path / "split")]
    first = mini.main(split + ["--time-budget", "1e-9"])
    assert first["gpt"]["steps"] < mini.QUICK["steps"]
    second = mini.main(split + ["--resume"])
    assert second["gpt"]["steps"] == mini.QUICK["steps"]
    assert second["gpt"]["val_loss"] == runs["float16"]["val_loss"]
    a, b = np.load(tmp_path / "float16" / "checkpoint.npz"), np.load(tmp_path / "split" / "checkpoint.npz")
    assert a.files == b.files and "['opt_state'].scale" in a.files
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    with pytest.raises(SystemExit, match=f"is at step {mini.QUICK['steps']}, none left of --steps"):
        mini.main(split + ["--resume"])


def test_mini_gpt_rejects_bad_flags(capsys):
    mini = load_experiment("mini_gpt")
    for flags in (["--d-model", "30", "--heads", "4"], ["--context", "1"], ["--steps", "0"], ["--lr", "-1"],
                  ["--epochs", "2"], ["--time-budget", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            mini.parse_args(flags)
        assert exit_info.value.code == 2, flags
    assert "--d-model (30) must be divisible by --heads (4)" in capsys.readouterr().err
    args = mini.parse_args(["--hidden", "48"])  # the feed-forward's width (default 4 x --d-model)
    shapes = jax.eval_shape(lambda key: mini.init_model(mini.build_gpt(args, 10), key, (-1, 8))[1],
                            jax.random.PRNGKey(0))
    assert shapes["body"]["blocks"][0]["ff"]["w_in"].shape == (args.d_model, 48)
