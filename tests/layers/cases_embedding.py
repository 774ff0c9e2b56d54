"""Registry rows: Embedding (integer ids, repeated, so dw must sum the cotangents of a row used twice)."""

from purenet.layers.embedding import Embedding
from tests.registry import Case


def _ids(vocab_size):
    # Fewer distinct ids than positions: rows repeat.
    return lambda rng, shape: rng.integers(0, vocab_size, shape)


CASES = [
    Case("embedding-rank2", Embedding, {}, (3, 7), make_x=_ids(4), args=(4, 5)),
    Case("embedding-rank1", Embedding, {}, (9,), make_x=_ids(3), args=(3, 2)),
]
