"""Sentence pairs for sequence-to-sequence models: the shipped Tatoeba English-French pairs (see
TATOEBA.md) or any tab-separated file, a split by distinct source sentence, character or subword
vocabularies with pad / bos / eos / unk ids, padded (N, L) id batches, and length buckets.

Dimension letters: N pairs, S source positions, T target positions. Ids 0..3 are PAD, BOS, EOS and UNK
(a character or piece the vocabulary has not seen); characters follow from id 4 in code-point order
(`CharVocabulary`), or a sentencepiece model's pieces (`SubwordVocabulary`). A source is its tokens then
EOS; the decoder reads BOS then the target (`tgt_in`) and learns to emit the
target then EOS (`tgt_out`); positions after that are PAD, and the loss mask is `tgt_out != PAD`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
from functools import cached_property
from typing import NamedTuple

import numpy as np

from purenet._checks import check_positive, fail
from purenet._files import atomic_write

TATOEBA_PATH = pathlib.Path(__file__).with_name("tatoeba-eng-fra.tsv.gz")
TATOEBA_SHA256 = "ccbcd4e580585399e60155f2c874a45223042c12eae9b9a8223ee0332b18b5ae"  # of the .gz file
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = 4

Pair = tuple[str, str]


def load_pairs(path: str | os.PathLike | None = None) -> list[Pair]:
    """(source, target) pairs, one per line of a UTF-8 `source<TAB>target` file, gzipped or not.

    `path=None` reads the shipped Tatoeba English-French pairs (76,037), checked against their SHA-256.
    Further tab-separated columns (the attribution column of the manythings.org exports) are ignored;
    blank lines are skipped; a line without a tab or with an empty side fails, naming its number."""
    data = pathlib.Path(TATOEBA_PATH if path is None else path).read_bytes()
    where = TATOEBA_PATH if path is None else path
    if path is None and hashlib.sha256(data).hexdigest() != TATOEBA_SHA256:
        fail("load_pairs", f"{TATOEBA_PATH} does not match its SHA-256 (damaged install?)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            fail("load_pairs", f"{where} is not a complete gzip file ({error})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        fail("load_pairs", f"{where} is not UTF-8 text ({error.reason} at byte {error.start})")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            fail("load_pairs", f"{where}, line {number}: expected 'source<TAB>target' with both sides "
                               f"non-empty, got {line[:80]!r}")
        pairs.append((fields[0].strip(), fields[1].strip()))
    if not pairs:
        fail("load_pairs", f"{where} holds no pairs")
    return pairs


class PairSplits(NamedTuple):
    """Pairs split by distinct source sentence: no source is in two splits."""

    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]


def split_pairs(pairs: list[Pair], *, validation: float = 0.05, test: float = 0.05, seed: int = 0) -> PairSplits:
    """Shuffle the distinct sources (seeded) and give the first `test` fraction of them, with every
    translation they have, to the test split, the next `validation` fraction to the validation split,
    and the rest to training. Pairs keep their file order within a split."""
    for name, value in (("validation", validation), ("test", test)):
        if not 0 <= value < 1:
            fail("split_pairs", f"{name} must be a fraction in [0, 1), got {name}={value!r}")
    if validation + test >= 1:
        fail("split_pairs", f"validation + test must be < 1, got {validation} + {test}")
    sources = sorted({source for source, _ in pairs})
    order = np.random.default_rng(seed).permutation(len(sources))
    n_test, n_val = int(round(test * len(sources))), int(round(validation * len(sources)))
    part = {sources[i]: 2 for i in order[:n_test]} | {sources[i]: 1 for i in order[n_test:n_test + n_val]}
    splits = ([], [], [])
    for pair in pairs:
        splits[part.get(pair[0], 0)].append(pair)
    return PairSplits(*splits)


class CharVocabulary(NamedTuple):
    """Characters in code-point order; id of `chars[i]` is SPECIALS + i (0..3: PAD, BOS, EOS, UNK)."""

    chars: str

    @property
    def size(self) -> int:
        return SPECIALS + len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text`: int32 (len(text),); characters not in the vocabulary become UNK."""
        table = {c: SPECIALS + i for i, c in enumerate(self.chars)}
        return np.asarray([table.get(c, UNK) for c in text], np.int32)

    def decode(self, ids) -> str:
        """The text of ids (rank 1) up to the first EOS (or PAD); BOS is skipped, UNK reads as '?'."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i in (EOS, PAD):
                break
            if i == UNK or not 0 <= i < self.size:
                out.append("?")
            elif i >= SPECIALS:
                out.append(self.chars[i - SPECIALS])
        return "".join(out)


def char_vocabularies(pairs: list[Pair]) -> tuple[CharVocabulary, CharVocabulary]:
    """The (source, target) character vocabularies of `pairs` (build them on the training split)."""
    if not pairs:
        fail("char_vocabularies", "pairs is empty")
    return (CharVocabulary("".join(sorted({c for s, _ in pairs for c in s}))),
            CharVocabulary("".join(sorted({c for _, t in pairs for c in t}))))


class SubwordVocabulary:
    """A sentencepiece model (BPE or unigram) whose ids 0..3 are PAD, BOS, EOS and UNK, as
    `CharVocabulary`'s; made by `subword_vocabularies`, kept as the model file's bytes (`save`, `load`).
    Text is not normalized (the identity rule), so decoding gives back the characters encoded."""

    def __init__(self, model: bytes):
        self.model = bytes(model)

    @cached_property
    def _processor(self):
        return _sentencepiece().SentencePieceProcessor(model_proto=self.model)

    @property
    def size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text`'s pieces: int32 (pieces,); characters not seen in training become UNK."""
        return np.asarray(self._processor.encode(text), np.int32)

    def decode(self, ids) -> str:
        """The text of ids (rank 1) up to the first EOS (or PAD); BOS is skipped, UNK reads as '?'."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i in (EOS, PAD):
                break
            if i != BOS:
                out.append(i if 0 <= i < self.size else UNK)
        return self._processor.decode(out).replace(" \u2047 ", "?").replace("\u2047", "?")

    def save(self, path: str | os.PathLike) -> None:
        """Write the model file, all at once or not at all (`purenet._files.atomic_write`)."""
        with atomic_write(path) as file:
            file.write(self.model)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SubwordVocabulary":
        return cls(pathlib.Path(path).read_bytes())


def subword_vocabularies(pairs: list[Pair], size: int, *, kind: str = "bpe",
                         cache: str | os.PathLike | None = None) -> tuple[SubwordVocabulary, SubwordVocabulary]:
    """The (source, target) sentencepiece vocabularies of `pairs` (build them on the training split): each
    side's own model of `kind` "bpe" or "unigram" with at most `size` ids (4 of them special), every
    character of the side covered. Deterministic for the same pairs. With `cache` (a folder), the models
    are read from it when it holds them for these pairs and settings, or trained and written there
    (named by kind, size and a hash of the texts)."""
    if not pairs:
        fail("subword_vocabularies", "pairs is empty")
    check_positive("subword_vocabularies", "size", size)
    if kind not in ("bpe", "unigram"):
        fail("subword_vocabularies", f"kind must be 'bpe' or 'unigram', got {kind!r}")
    vocabularies = []
    for side, texts in (("source", [s for s, _ in pairs]), ("target", [t for _, t in pairs])):
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
        path = None if cache is None else pathlib.Path(cache) / f"{side}-{kind}{size}-{digest}.model"
        if path is not None and path.exists():
            vocabularies.append(SubwordVocabulary.load(path))
            continue
        vocabulary = SubwordVocabulary(_train_sentencepiece(texts, size, kind))
        if path is not None:
            vocabulary.save(path)
        vocabularies.append(vocabulary)
    return vocabularies[0], vocabularies[1]


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        fail("subword_vocabularies", "subword units need the sentencepiece package: pip install sentencepiece "
                                     "(or purenet[experiments])", ImportError)
    return sentencepiece


def _train_sentencepiece(texts: list[str], size: int, kind: str) -> bytes:
    model = io.BytesIO()
    try:
        _sentencepiece().SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type=kind, vocab_size=size,
            pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, character_coverage=1.0,
            normalization_rule_name="identity", hard_vocab_limit=False, num_threads=1,
            input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as error:
        fail("subword_vocabularies", f"sentencepiece could not train a {kind} vocabulary of {size} ids on "
                                     f"{len(texts)} texts: {error}")
    return model.getvalue()


def pad_ids(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """Sequences of ids, each at most `length` long, right-padded with PAD -> int32 (N, length)."""
    check_positive("pad_ids", "length", length)
    out = np.full((len(sequences), length), PAD, np.int32)
    for n, ids in enumerate(sequences):
        if len(ids) > length:
            fail("pad_ids", f"sequence {n} has {len(ids)} ids, more than length={length}")
        out[n, :len(ids)] = ids
    return out


class PairBatch(NamedTuple):
    """Padded id arrays of N pairs: src (N, S) (characters, EOS, PAD...); tgt_in (N, T) (BOS,
    characters, PAD...); tgt_out (N, T) (characters, EOS, PAD...)."""

    src: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray


Vocabulary = CharVocabulary | SubwordVocabulary


def encode_pairs(pairs: list[Pair], source: Vocabulary, target: Vocabulary, *, src_len: int,
                 tgt_len: int) -> PairBatch:
    """Encode and pad `pairs` to fixed lengths: S = src_len (source + EOS) and T = tgt_len (target +
    one BOS or EOS); a pair that does not fit fails (filter with `fits` first)."""
    src = [np.append(source.encode(s), EOS) for s, _ in pairs]
    tgt = [target.encode(t) for _, t in pairs]
    tgt_in = pad_ids([np.append(BOS, ids) for ids in tgt], tgt_len)
    tgt_out = pad_ids([np.append(ids, EOS) for ids in tgt], tgt_len)
    return PairBatch(pad_ids(src, src_len), tgt_in, tgt_out)


def fits(pair: Pair, *, src_len: int, tgt_len: int) -> bool:
    """Whether `pair` encodes within src_len source and tgt_len target characters (EOS and BOS included)."""
    return len(pair[0]) + 1 <= src_len and len(pair[1]) + 1 <= tgt_len


def length_buckets(batch: PairBatch, count: int) -> list[PairBatch]:
    """Split padded pairs into `count` length classes of (nearly) equal size, by target length (then
    source length: the decoder's side costs the most), each cut to its own longest source and target
    (so a class pads to its own lengths, and a model compiles at most `count` shapes). Pairs keep their
    order within a class; `count=1` gives the pairs as they are, at their full padded lengths."""
    check_positive("length_buckets", "count", count)
    if count == 1:
        return [batch]
    src_len, tgt_len = np.sum(batch.src != PAD, axis=1), np.sum(batch.tgt_out != PAD, axis=1)
    order = np.lexsort((src_len, tgt_len))
    buckets = []
    for index in np.array_split(order, min(count, len(order))):
        index = np.sort(index)
        S, T = int(src_len[index].max()), int(tgt_len[index].max())
        buckets.append(PairBatch(batch.src[index, :S], batch.tgt_in[index, :T], batch.tgt_out[index, :T]))
    return buckets
