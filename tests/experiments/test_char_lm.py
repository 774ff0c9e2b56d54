"""experiments/char_lm.py end to end in --quick mode on a text file: --compare's table, each cell's metrics,
plot and checkpoint, the LSTM's checkpoint reproducing its reported validation bits per character, and the
prompt checked before training."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import compare, upcast
from purenet.data.text import consecutive_windows, encode, load_text, split
from purenet.losses import softmax_cross_entropy
from purenet.training.checkpoint import load_checkpoint
from tests.helpers import checkpoint_template, is_png, load_experiment


@pytest.fixture(scope="module")
def char_lm():
    return load_experiment("char_lm")


def test_quick_compare_on_a_text_file_with_a_checkpoint_that_reproduces_val_bits(char_lm, tmp_path, capsys):
    # --compare trains every cell through the single-cell path (train_one: metrics, plot, checkpoint), so
    # one run checks both: the table over the cells, and the LSTM's outputs in full.
    text_path = tmp_path / "corpus.txt"
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(200)]
    text_path.write_text("".join(lines))
    out = tmp_path / "compare"
    metrics = char_lm.main(["--quick", "--compare", "--text", str(text_path), "--out-dir", str(out),
                            "--prompt", "line", "--steps", "5"])
    printed = capsys.readouterr().out
    table = metrics["table"].splitlines()
    assert table[0].startswith("| cell |") and [row.split("|")[1].strip() for row in table[2:]] == [
        "rnn", "lstm", "gru"]
    assert metrics["table"] in printed and (out / "compare.md").read_text() == metrics["table"] + "\n"
    assert is_png(out / "compare.png")
    for cell, row in metrics["compare"].items():
        assert (out / cell / "checkpoint.npz").exists() and is_png(out / cell / "loss.png")
        assert json.loads((out / cell / "metrics.json").read_text()) == json.loads(json.dumps(row))
        assert row["cell"] == cell and row["steps"] == 5 and row["ms_per_step"] > 0
        assert row["text"] == str(text_path) and len(row["sample"]) == char_lm.QUICK["sample_length"]
        assert set(row["sample"]) <= set(row["vocabulary"]) == set("".join(lines))
        assert 0 < row["val_bits_per_char"] < np.log2(len(row["vocabulary"])) + 1  # not diverged (untrained: 5.4)

    metrics = metrics["compare"]["lstm"]
    args = char_lm.parse_args(["--quick", "--steps", "5"])
    model = char_lm.build_model(len(metrics["vocabulary"]), cell="lstm", hidden=args.hidden,
                                layers=args.layers, embedding=args.embedding)
    recipe = load_experiment("common").make_optimizer(args, steps=args.steps, clip=args.clip)  # as char_lm's
    like = checkpoint_template(model, (-1, args.seq_len), recipe.optimizer, 0)
    checkpoint = load_checkpoint(out / "lstm" / "checkpoint.npz", like=like)
    assert checkpoint.step == args.steps
    # The saved params give the reported validation bits per character.
    vocabulary = metrics["vocabulary"]
    _, val_ids = split(encode(load_text(text_path), vocabulary), args.val_fraction)
    x, y = consecutive_windows(val_ids[:args.val_chars + 1], args.seq_len)
    def bits(params, state):
        logits, _ = model.apply(params, state, jnp.asarray(x))
        return softmax_cross_entropy().apply(logits, jnp.asarray(y)) / np.log(2).astype(logits.dtype)

    # the script's windows and batches against one pass, float32; the suite's rule (tests/README.md)
    compare(np.float32(metrics["val_bits_per_char"]), bits(checkpoint.params, checkpoint.state),
            truth=bits(*upcast((checkpoint.params, checkpoint.state))), what="val_bits_per_char")
    # It learned: below the bits of the params it started from (the same seed's init; 5.34 -> 5.23 here).
    assert metrics["val_bits_per_char"] < float(bits(like.params, like.state))


def test_a_prompt_outside_the_vocabulary_fails_before_training(char_lm, tmp_path):
    with pytest.raises(ValueError, match="encode: characters not in the vocabulary: '§'"):
        char_lm.main(["--quick", "--out-dir", str(tmp_path), "--prompt", "§"])
    assert not (tmp_path / "metrics.json").exists()
