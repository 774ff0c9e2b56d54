"""Layers, one file per family; every one an `(init, apply, vjp)` triple with a handwritten pullback.

Each public name is written once, in its import below; `__all__` (and `import purenet as pn`, which
re-exports it) is every name imported here."""

from types import ModuleType as _ModuleType

from purenet.layers.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                        Softmax, Softplus, Tanh)
from purenet.layers.attention import (KeyValues, MultiHeadAttention, dot_product_attention,
                                      dot_product_attention_vjp, project_context)
from purenet.layers.augment import RandomShift
from purenet.layers.conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from purenet.layers.dense import Dense
from purenet.layers.dropout import Dropout
from purenet.layers.embedding import Embedding
from purenet.layers.feedforward import FeedForward
from purenet.layers.norm import BatchNorm, L2Normalize, LayerNorm, RMSNorm
from purenet.layers.pooling import (AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, MaskedMeanPool, MaxPool1D,
                                    MaxPool2D, MaxPool3D)
from purenet.layers.positional import LearnedPositions, SinusoidalPositions, rotary, rotary_pullback
from purenet.layers.recurrent import (GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN, gru_cell,
                                      lstm_cell, simple_rnn_cell)
from purenet.layers.reshape import Flatten, Reshape
from purenet.layers.tensor_parallel import (ColumnParallelDense, ParallelAttention, ParallelFeedForward,
                                            RowParallelDense, attention_rules, feedforward_rules, partition_specs)
from purenet.layers.tokens import ClassToken, TokenAt
from purenet.layers.transformer import DecoderBlock, EncoderBlock

__all__ = sorted(name for name, value in globals().items()
                 if not name.startswith("_") and not isinstance(value, _ModuleType))
