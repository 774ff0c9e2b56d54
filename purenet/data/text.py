"""Plain text for character-level language models: the shipped Shakespeare plays (see SHAKESPEARE.md),
a character vocabulary, encoding to integer ids, and (N, T) training windows.

Dimension letters: N windows, T characters per window, V vocabulary size. A vocabulary is a string of
the distinct characters in code-point order; a character's id is its index in that string. A window's
targets are its inputs shifted by one character: y[n, t] = x[n, t + 1] in the underlying text.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np

from purenet._checks import check_positive, fail

SHAKESPEARE_PATH = pathlib.Path(__file__).with_name("shakespeare.txt")
SHAKESPEARE_SHA256 = "2fc811eef9913779beca6d2c512b5e0e2a07b6fa852aeba9f41aae6b41f94233"


def load_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file at `path`, failing on an empty file or one that is not UTF-8."""
    data = pathlib.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        fail("load_text", f"{path} is not UTF-8 text ({error.reason} at byte {error.start})")
    if not text:
        fail("load_text", f"{path} is empty")
    return text


def load_shakespeare() -> str:
    """The shipped plays (1,036,496 ASCII characters), checked against their SHA-256."""
    data = SHAKESPEARE_PATH.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        fail("load_shakespeare", f"{SHAKESPEARE_PATH} does not match its SHA-256 (damaged install?)")
    return data.decode("ascii")


def char_vocabulary(text: str) -> str:
    """The distinct characters of `text` in code-point order (a string of length V)."""
    if not text:
        fail("char_vocabulary", "text is empty")
    return "".join(sorted(set(text)))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (len(text),)


def encode(text: str, vocabulary: str) -> np.ndarray:
    """Character ids of `text`: int32 (len(text),). Fails naming the characters not in `vocabulary`."""
    table = _code_points(vocabulary)  # (V,) sorted
    codes = _code_points(text)
    ids = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    unknown = table[ids] != codes
    if np.any(unknown):
        missing = sorted({chr(c) for c in codes[unknown]})
        fail("encode", f"characters not in the vocabulary: {''.join(missing)!r}")
    return ids.astype(np.int32)


def decode(ids, vocabulary: str) -> str:
    """The text of character ids (any integer array-like of rank 1) under `vocabulary`."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= len(vocabulary))):
        fail("decode", f"expected ids of rank 1 in [0, {len(vocabulary)}), got shape {ids.shape}")
    return "".join(vocabulary[i] for i in ids.tolist())


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous (train, validation) parts: the last `val_fraction` of the ids is validation."""
    if not 0.0 < val_fraction < 1.0:
        fail("split", f"val_fraction must be in (0, 1), got val_fraction={val_fraction!r}")
    cut = int(round(len(ids) * (1.0 - val_fraction)))
    return ids[:cut], ids[cut:]


def _check_length(name: str, ids: np.ndarray, length: int) -> None:
    check_positive(name, "length", length)
    if np.ndim(ids) != 1 or len(ids) < length + 1:
        fail(name, f"need rank-1 ids of at least length + 1 (={length + 1}) characters, "
                   f"got shape {np.shape(ids)}")


def windows(ids: np.ndarray, length: int, *, num_windows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`num_windows` windows at uniformly drawn offsets, seeded by `seed` (same seed, same windows).

    Shapes: ids (L,) -> (x (N, T), y (N, T)) with y the next character of each x."""
    _check_length("windows", ids, length)
    check_positive("windows", "num_windows", num_windows)
    starts = np.random.default_rng(seed).integers(0, len(ids) - length, size=num_windows)  # (N,)
    index = starts[:, None] + np.arange(length)[None, :]  # (N, T)
    return ids[index], ids[index + 1]


def consecutive_windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every whole, non-overlapping window from the start (for evaluation): N = (L - 1) // T.

    Shapes: ids (L,) -> (x (N, T), y (N, T))."""
    _check_length("consecutive_windows", ids, length)
    count = (len(ids) - 1) // length
    x = ids[:count * length].reshape(count, length)  # (N, T)
    y = ids[1:count * length + 1].reshape(count, length)  # (N, T)
    return x, y
