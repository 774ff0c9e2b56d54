"""Character-level recurrent language models: embedding, stacked recurrent layers, a dense head.

Shapes: ids (N, T) -> logits (N, T, V). Named children: params["embed"]["w"], params["rnn"][i] (one per
recurrent layer), params["head"]["w"] and ["b"]. With `tie_weights`, the head is the embedding table
transposed (`purenet.models.tied.tied_lm`: params["embed"]["w"], params["body"][i], params["head"]["b"];
the hidden size must equal the embedding size). Both forms decode step by step: ids (N,) -> logits
(N, V), the cache holding each layer's recurrent state.
"""

from __future__ import annotations

from typing import NamedTuple

from purenet._checks import check_bool, check_choice, check_positive, fail
from purenet.combinators import serial
from purenet.core import Layer
from purenet.layers import GRU, LSTM, Dense, Embedding, SimpleRNN
from purenet.models.tied import tied_lm

CELLS = {"rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}


class CharLMConfig(NamedTuple):
    """The hyperparameters of `char_lm`: vocabulary, cell, hidden width, depth, embedding width, tying."""

    vocab_size: int
    cell: str = "lstm"  # "rnn", "lstm" or "gru"
    hidden: int = 256
    layers: int = 1
    embedding: int = 64
    tie_weights: bool = False


def char_lm(config: CharLMConfig) -> Layer:
    """The model `config` describes: ids (N, T) -> logits (N, T, vocab_size)."""
    check_choice("char_lm", "cell", config.cell, tuple(CELLS))
    for name in ("vocab_size", "hidden", "layers", "embedding"):
        check_positive("char_lm", name, getattr(config, name))
    check_bool("char_lm", "tie_weights", config.tie_weights)
    rnn = serial(*[CELLS[config.cell](config.hidden) for _ in range(config.layers)])
    if not config.tie_weights:
        return serial(embed=Embedding(config.vocab_size, config.embedding), rnn=rnn,
                      head=Dense(config.vocab_size))
    if config.hidden != config.embedding:
        fail("char_lm", f"tie_weights needs hidden == embedding, got hidden={config.hidden}, "
                        f"embedding={config.embedding}")
    return tied_lm(config.vocab_size, config.embedding, rnn)
