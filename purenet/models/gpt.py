"""GPT: a decoder-only Transformer language model (token and learned position embeddings, causal
encoder blocks, a final LayerNorm in the pre-LN form, a head tied to the token embedding by default).

Shapes: ids (N, T) with T <= context -> logits (N, T, vocab_size). Named children: tied,
params["embed"]["w"] (V, F), params["body"]["pos"]["w"] (context, F), params["body"]["blocks"][i]
["attn"]["w_q"], ..., params["body"]["norm"], params["head"]["b"] (none with head_bias=False); untied,
params["head"]["w"] too. `purenet.interop.load_gpt2` reads Hugging Face's GPT-2 into this model.
Decodes step by step with a key/value cache per block: ids (N,) -> logits (N, V).
"""

from __future__ import annotations

from typing import NamedTuple

from purenet import initializers
from purenet._checks import check_bool, check_positive, fail
from purenet.combinators import serial
from purenet.core import Layer
from purenet.layers import Dense, Dropout, Embedding, EncoderBlock, LayerNorm, LearnedPositions
from purenet.models.tied import tied_lm


class GPTConfig(NamedTuple):
    """The hyperparameters of `gpt` (the defaults are nanoGPT's CPU shakespeare_char recipe)."""

    vocab_size: int
    context: int = 64  # the most positions a sequence may have (the learned position table)
    layers: int = 4
    d_model: int = 128
    heads: int = 4
    hidden: int | None = None  # feed-forward width; None: 4 * d_model
    dropout: float = 0.0
    tie_weights: bool = True
    pre_ln: bool = True
    activation: str = "gelu"  # the tanh approximation, as GPT-2
    residuals: str = "probs"  # attention's: "probs" or "logsumexp" (see dot_product_attention_vjp)
    fused_qkv: bool = True  # one (F, 3F) projection for q, k and v
    head_bias: bool = True  # False: logits = h @ w.T without a bias (GPT-2's lm_head; tied heads only)


def gpt(config: GPTConfig) -> Layer:
    """The model `config` describes: ids (N, T) -> logits (N, T, vocab_size)."""
    for name in ("vocab_size", "context", "layers", "d_model", "heads"):
        check_positive("gpt", name, getattr(config, name))
    check_bool("gpt", "tie_weights", config.tie_weights)
    check_bool("gpt", "head_bias", config.head_bias)
    if config.d_model % config.heads:
        fail("gpt", f"d_model (={config.d_model}) must be divisible by heads (={config.heads})")
    hidden = config.hidden or 4 * config.d_model
    blocks = [EncoderBlock(config.heads, hidden, is_causal=True, pre_ln=config.pre_ln, dropout=config.dropout,
                           activation=config.activation, residuals=config.residuals, fused_qkv=config.fused_qkv)
              for _ in range(config.layers)]
    parts = dict(pos=LearnedPositions(config.context), drop=Dropout(config.dropout), blocks=serial(*blocks))
    body = serial(**parts, norm=LayerNorm()) if config.pre_ln else serial(**parts)
    if config.tie_weights:
        return tied_lm(config.vocab_size, config.d_model, body, use_bias=config.head_bias)
    return serial(embed=Embedding(config.vocab_size, config.d_model, w_init=initializers.normal(0.02)), body=body,
                  head=Dense(config.vocab_size, use_bias=config.head_bias))
