"""Sentence pairs: the shipped Tatoeba file (checksum, provenance), the split by distinct source
sentence, tab-separated files of any origin (plain, gzipped, extra columns, broken ones), character
vocabularies and padded batches."""

import gzip
import hashlib

import numpy as np
import pytest

from purenet.data.pairs import (BOS, EOS, PAD, TATOEBA_PATH, TATOEBA_SHA256, UNK, CharVocabulary,
                                char_vocabularies, encode_pairs, fits, load_pairs, pad_ids, split_pairs)


def test_shipped_pairs_match_their_checksum_and_provenance():
    data = TATOEBA_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == TATOEBA_SHA256
    assert hashlib.sha256(gzip.decompress(data)).hexdigest() == (
        "0054ea2102484f4800d0b2cca57460b6b4a2e05328e6954240601065b001b1a6")
    pairs = load_pairs()
    assert len(pairs) == 76_037 and pairs[0] == ("Go.", "Va !")
    assert len({source for source, _ in pairs}) == 49_197
    notes = TATOEBA_PATH.with_name("TATOEBA.md").read_text()
    assert TATOEBA_SHA256 in notes and "Tatoeba Project" in notes and "CC BY 2.0 FR" in notes


def test_split_by_distinct_source_is_disjoint_complete_and_seeded():
    pairs = load_pairs()
    splits = split_pairs(pairs, validation=0.05, test=0.05, seed=0)
    sources = [{s for s, _ in split} for split in splits]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert sorted(p for split in splits for p in split) == sorted(pairs)
    distinct = len(sources[0] | sources[1] | sources[2])
    assert [len(s) for s in sources[1:]] == [round(0.05 * distinct)] * 2
    assert split_pairs(pairs, seed=0) == splits and split_pairs(pairs, seed=1).test != splits.test
    run = [p for p in pairs if p[0] == "Run!"]  # two translations, which go to one split together
    assert len(run) == 2 and sum(all(p in split for p in run) for split in splits) == 1


def test_any_tab_separated_file_plain_or_gzipped(tmp_path):
    lines = "Hello.\tBonjour.\n\nThanks!\tMerci !\tCC-BY 2.0 (France) Attribution: tatoeba.org #1\n"
    plain, packed = tmp_path / "pairs.tsv", tmp_path / "pairs.tsv.gz"
    plain.write_text(lines, encoding="utf-8")
    packed.write_bytes(gzip.compress(lines.encode("utf-8")))
    expected = [("Hello.", "Bonjour."), ("Thanks!", "Merci !")]
    assert load_pairs(plain) == expected and load_pairs(packed) == expected


def test_broken_files_fail_naming_the_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("Hello.\tBonjour.\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"load_pairs: .*bad.tsv, line 2: expected 'source<TAB>target'"):
        load_pairs(path)
    path.write_text("Hello.\t \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected 'source<TAB>target' with both sides non-empty"):
        load_pairs(path)
    path.write_bytes(gzip.compress(b"Hello.\tBonjour.\n" * 50)[:30])
    with pytest.raises(ValueError, match=r"load_pairs: .*bad.tsv is not a complete gzip file"):
        load_pairs(path)
    path.write_bytes(b"Caf\xe9\tCaf\xe9\n")
    with pytest.raises(ValueError, match=r"load_pairs: .*bad.tsv is not UTF-8 text"):
        load_pairs(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"load_pairs: .*bad.tsv holds no pairs"):
        load_pairs(path)


def test_vocabularies_batches_and_special_ids():
    pairs = [("Hi.", "Salut."), ("Run!", "Cours !")]
    source, target = char_vocabularies(pairs)
    assert source.chars == "!.HRinu" and source.size == 4 + 7
    ids = source.encode("Hi!?")
    assert ids.tolist()[-1] == UNK and source.decode(ids) == "Hi!?"
    assert source.decode([source.encode("Hi")[0], source.encode("i")[0], EOS, 5]) == "Hi"  # stops at EOS
    batch = encode_pairs(pairs, source, target, src_len=6, tgt_len=8)
    assert batch.src.shape == (2, 6) and batch.tgt_in.shape == batch.tgt_out.shape == (2, 8)
    assert batch.src[0].tolist()[3:] == [EOS, PAD, PAD] and source.decode(batch.src[1]) == "Run!"
    assert batch.tgt_in[1, 0] == BOS and target.decode(batch.tgt_in[1, 1:]) == "Cours !"
    assert batch.tgt_out[1].tolist()[-1] == EOS and target.decode(batch.tgt_out[1]) == "Cours !"
    np.testing.assert_array_equal(batch.tgt_in[:, 1:][batch.tgt_out[:, :-1] != EOS],
                                  batch.tgt_out[:, :-1][batch.tgt_out[:, :-1] != EOS])  # shifted by one
    assert fits(pairs[1], src_len=5, tgt_len=8) and not fits(pairs[1], src_len=4, tgt_len=8)
    with pytest.raises(ValueError, match=r"pad_ids: sequence 0 has 3 ids, more than length=2"):
        pad_ids([np.arange(3)], 2)
    with pytest.raises(ValueError, match=r"split_pairs: validation \+ test must be < 1, got 0.5 \+ 0.5"):
        split_pairs(pairs, validation=0.5, test=0.5)
    assert CharVocabulary("ab").decode([BOS, 4, 5, PAD, 4]) == "ab"
