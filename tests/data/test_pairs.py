"""Sentence pairs: the shipped Tatoeba file (checksum, provenance), the split by distinct source
sentence, tab-separated files of any origin (plain, gzipped, extra columns, broken ones), character
vocabularies and padded batches, subword vocabularies (sentencepiece), length buckets."""

import gzip
import hashlib
import sys

import numpy as np
import pytest

from purenet.data.pairs import (BOS, EOS, PAD, TATOEBA_PATH, TATOEBA_SHA256, UNK, CharVocabulary, PairBatch,
                                SubwordVocabulary, char_vocabularies, encode_pairs, fits, length_buckets,
                                load_pairs, pad_ids, split_pairs, subword_vocabularies)


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


@pytest.fixture(scope="module")
def tatoeba_train():
    splits = split_pairs(load_pairs(), seed=0)
    return [p for p in splits.train if fits(p, src_len=21, tgt_len=41)][:3000]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_subword_vocabularies_give_back_the_text_and_keep_the_special_ids(kind, tatoeba_train, tmp_path):
    source, target = subword_vocabularies(tatoeba_train, 300, kind=kind, cache=tmp_path)
    assert source.size == target.size == 300
    pieces = target._processor
    assert [pieces.id_to_piece(i) for i in (PAD, BOS, EOS, UNK)] == ["<pad>", "<s>", "</s>", "<unk>"]
    for english, french in tatoeba_train[::97]:  # every character kept, the narrow no-break space before "!" too
        assert source.decode(source.encode(english)) == english
        ids = target.encode(french)
        assert ids.dtype == np.int32 and ids.min() > UNK and len(ids) <= len(french)
        assert target.decode(np.concatenate([[BOS], ids, [EOS, 7, 8], [PAD] * 3])) == french
    assert target.decode(target.encode("Ça 𝔵 va")) == "Ça ? va"  # unseen character -> UNK -> "?"
    # Trained on the same pairs, the same model, from the cache or not; the cache holds one file per side.
    files = sorted(tmp_path.iterdir())
    assert [f.name.split("-")[:2] for f in files] == [["source", f"{kind}300"], ["target", f"{kind}300"]]
    again = subword_vocabularies(tatoeba_train, 300, kind=kind)
    assert again[1].model == target.model and SubwordVocabulary.load(files[1]).model == target.model
    other = subword_vocabularies(tatoeba_train[:2000], 300, kind=kind, cache=tmp_path)  # other pairs: new files
    assert other[1].model != target.model and len(list(tmp_path.iterdir())) == 4


def test_subword_vocabularies_refuse_bad_arguments(tatoeba_train):
    with pytest.raises(ValueError, match="subword_vocabularies.*'bpe' or 'unigram'"):
        subword_vocabularies(tatoeba_train, 100, kind="wordpiece")
    with pytest.raises(ValueError, match="subword_vocabularies.*empty"):
        subword_vocabularies([], 100)
    with pytest.raises(ValueError, match="subword_vocabularies.*size"):
        subword_vocabularies(tatoeba_train, 0)


def test_subword_vocabularies_without_sentencepiece_say_what_to_install(tatoeba_train, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if not installed
    with pytest.raises(ImportError, match="subword_vocabularies.*pip install sentencepiece"):
        subword_vocabularies(tatoeba_train, 100)


def test_length_buckets_partition_the_pairs_each_cut_to_its_own_lengths():
    rng = np.random.default_rng(0)
    pairs = [("".join(rng.choice(list("abc"), rng.integers(1, 12))), "".join(rng.choice(list("xyz"), rng.integers(1, 30))))
             for _ in range(203)]
    batch = encode_pairs(pairs, *char_vocabularies(pairs), src_len=12, tgt_len=30)
    assert length_buckets(batch, 1) == [batch]
    buckets = length_buckets(batch, 4)
    assert [len(b.src) for b in buckets] == [51, 51, 51, 50]
    tgt_lengths = [np.sum(b.tgt_out != PAD, axis=1) for b in buckets]
    assert all(a.max() <= b.min() for a, b in zip(tgt_lengths, tgt_lengths[1:]))  # classes by target length
    seen = []
    for b in buckets:  # cut to the class' longest source and target: no token lost, no column all PAD
        assert isinstance(b, PairBatch) and b.tgt_in.shape == b.tgt_out.shape
        for array in b:
            assert np.any(array[:, -1] != PAD)
        seen += [tuple(row) for row in np.concatenate([b.src, np.zeros((len(b.src), 12 - b.src.shape[1]), int)], 1)]
    assert sorted(seen) == sorted(tuple(row) for row in batch.src)
    assert buckets[0].tgt_out.shape[1] < buckets[-1].tgt_out.shape[1] == 30
    assert len(length_buckets(batch._replace(src=batch.src[:2], tgt_in=batch.tgt_in[:2], tgt_out=batch.tgt_out[:2]),
                              4)) == 2
    with pytest.raises(ValueError, match="length_buckets.*count"):
        length_buckets(batch, 0)
