"""Registry rows: BatchNorm (train and eval), LayerNorm, and Embedding (integer ids, repeated)."""

import jax
from registry import Case

from purenet.embedding import Embedding
from purenet.norm import BatchNorm, LayerNorm


def _ids(vocab_size):
    # Fewer distinct ids than positions: rows repeat, so dw must sum their cotangents.
    return lambda key, shape: jax.random.randint(key, shape, 0, vocab_size)


CASES = [
    # Batch 2 with default eps maps each channel to about +-1 whatever x is: dx is O(eps), all rounding
    # noise in float32. A larger eps keeps the row well conditioned.
    Case("batchnorm-train-rank2", BatchNorm, {"eps": 0.5}, (2, 3), train=True),
    Case("batchnorm-train-rank3", BatchNorm, {"momentum": 0.5}, (3, 5, 2), train=True),
    Case("batchnorm-train-rank4", BatchNorm, {}, (2, 3, 5, 4), train=True),
    Case("batchnorm-eval-rank2", BatchNorm, {}, (2, 3)),
    Case("batchnorm-eval-rank4", BatchNorm, {}, (2, 3, 5, 4)),
    Case("batchnorm-train-no-affine", BatchNorm, {"use_scale": False, "use_bias": False}, (2, 3, 3), train=True),
    Case("layernorm-rank2", LayerNorm, {}, (3, 5)),
    Case("layernorm-rank3", LayerNorm, {}, (2, 3, 5)),
    Case("layernorm-no-bias", LayerNorm, {"use_bias": False}, (2, 3, 4)),
    Case("embedding-rank2", Embedding, {}, (3, 7), make_x=_ids(4), args=(4, 5)),
    Case("embedding-rank1", Embedding, {}, (9,), make_x=_ids(3), args=(3, 2)),
]
