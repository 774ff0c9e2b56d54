"""Registry rows: the encoder block (a GPT block when causal) and the decoder block, pre-LN and post-LN,
with and without masks, LayerNorm and RMSNorm, dropout in training. (The decoder block in pre-LN form,
and stacked, is checked in tests/layers/test_transformer.py.) Eager against jit: the post-LN encoder row."""

from purenet.layers.transformer import DecoderBlock, EncoderBlock
from tests.layers.cases_attention import with_mask
from tests.registry import Case

CASES = [
    Case("encoder-block-pre-ln-causal-dropout-train", EncoderBlock,
         {"num_heads": 2, "hidden": 12, "is_causal": True, "dropout": 0.2, "attention_dropout": 0.1}, (2, 4, 8),
         train=True, adjoint=False, eager=False),
    Case("encoder-block-post-ln-mask-rms-swiglu", EncoderBlock,
         {"num_heads": 2, "hidden": 6, "pre_ln": False, "norm": "rms", "activation": "silu", "gated": True},
         ((2, 4, 8), (2, 4, 4)), make_x=with_mask, adjoint=False),
    Case("encoder-block-post-ln-bert", EncoderBlock,  # BERT's block: exact GELU, LayerNorm eps 1e-12
         {"num_heads": 2, "hidden": 12, "pre_ln": False, "activation": "gelu_exact", "eps": 1e-12},
         ((2, 4, 8), (2, 1, 4, 4)), make_x=with_mask, adjoint=False, eager=False),
    Case("decoder-block-post-ln-mask", DecoderBlock, {"num_heads": 2, "hidden": 6, "pre_ln": False},
         ((2, 3, 8), (2, 5, 6), (2, 3, 5)), make_x=with_mask, stepwise=False, adjoint=False, eager=False),
]
