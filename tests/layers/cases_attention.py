"""Registry rows: MultiHeadAttention, self and cross, plain and structured inputs (boolean masks have
no cotangent), grouped and multi-query heads, rotary positions, both residual forms, dropout. Eager against jit: the
cross-attention row and the logsumexp row with dropout (the scan, the per-block masks)."""

from purenet.layers.attention import MultiHeadAttention
from tests.registry import Case


def with_mask(rng, in_shape):
    """Standard-normal floats, and a random boolean mask (last leaf) that keeps key 0 for every row."""
    floats = [rng.standard_normal(s) for s in in_shape[:-1]]
    mask = rng.random(in_shape[-1]) < 0.7
    mask[..., 0] = True
    return (*floats, mask)


CASES = [
    Case("mha-causal-gqa-rotary", MultiHeadAttention,
         {"num_heads": 4, "num_kv_heads": 2, "is_causal": True, "rotary": True}, (2, 5, 8), eager=False),
    # causal query blocks of 16, 16 and 8 rows (the keys above the diagonal skipped)
    Case("mha-causal-query-blocks", MultiHeadAttention, {"num_heads": 2, "is_causal": True, "query_block_size": 16},
         (2, 40, 4), eager=False),
    Case("mha-causal-fused-logsumexp-batch1", MultiHeadAttention,
         {"num_heads": 2, "fused_qkv": True, "is_causal": True, "residuals": "logsumexp", "block_size": 2},
         (1, 5, 6), eager=False),
    Case("mha-self-mask-odd-heads", MultiHeadAttention, {"num_heads": 2, "head_dim": 3, "out_features": 5},
         ((2, 4, 6), (2, 4, 4)), make_x=with_mask, eager=False),
    Case("mha-cross-multi-query", MultiHeadAttention, {"num_heads": 2, "num_kv_heads": 1, "cross": True},
         ((2, 3, 6), (2, 7, 5)), stepwise=False),
    Case("mha-cross-mask-rotary-t1", MultiHeadAttention, {"num_heads": 2, "cross": True, "rotary": True},
         ((2, 1, 8), (2, 7, 5), (2, 1, 7)), make_x=with_mask, stepwise=False, eager=False),
    Case("mha-dropout-train-logsumexp", MultiHeadAttention,
         {"num_heads": 2, "dropout": 0.3, "residuals": "logsumexp", "block_size": 3}, (2, 5, 8), train=True),
    # key padding masks (N, S): True at the real keys
    Case("mha-self-key-padding-mask", MultiHeadAttention, {"num_heads": 2}, ((2, 4, 6), (2, 4)), make_x=with_mask,
         eager=False),
    Case("mha-cross-key-padding-logsumexp", MultiHeadAttention,
         {"num_heads": 2, "cross": True, "residuals": "logsumexp", "block_size": 3}, ((2, 3, 6), (2, 7, 5), (2, 7)),
         make_x=with_mask, stepwise=False, eager=False),
]
