"""The model zoo: one file per model family, each a small config and a constructor returning a Layer."""

from purenet.models.char_lm import CharLMConfig, char_lm
from purenet.models.gpt import GPTConfig, gpt
from purenet.models.lenet import CLASSIC, LeNetConfig, lenet5
from purenet.models.mlp import mlp
from purenet.models.sampling import generate, sample_logits
from purenet.models.search import beam_search, greedy_search
from purenet.models.seq2seq import (LSTMSeq2SeqConfig, Seq2Seq, Seq2SeqInput, TransformerConfig, lstm_seq2seq,
                                    transformer_seq2seq)
from purenet.models.tied import tied_lm

__all__ = ["CLASSIC", "CharLMConfig", "GPTConfig", "LeNetConfig", "char_lm", "generate", "gpt", "lenet5", "mlp",
           "sample_logits", "tied_lm", "LSTMSeq2SeqConfig", "Seq2Seq", "Seq2SeqInput", "TransformerConfig",
           "beam_search", "greedy_search", "lstm_seq2seq", "transformer_seq2seq"]
