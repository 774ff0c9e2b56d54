"""Layers, one file per family; every one an `(init, apply, vjp)` triple with a handwritten pullback."""

from purenet.layers.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                        Softmax, Softplus, Tanh)
from purenet.layers.attention import (KeyValues, MultiHeadAttention, dot_product_attention,
                                      dot_product_attention_vjp, project_context)
from purenet.layers.conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from purenet.layers.dense import Dense
from purenet.layers.dropout import Dropout
from purenet.layers.embedding import Embedding
from purenet.layers.feedforward import FeedForward
from purenet.layers.norm import BatchNorm, L2Normalize, LayerNorm, RMSNorm
from purenet.layers.pooling import (AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, MaxPool1D, MaxPool2D,
                                    MaxPool3D)
from purenet.layers.positional import LearnedPositions, SinusoidalPositions, rotary, rotary_pullback
from purenet.layers.recurrent import (GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN, gru_cell,
                                      lstm_cell, simple_rnn_cell)
from purenet.layers.reshape import Flatten, Reshape
from purenet.layers.transformer import DecoderBlock, EncoderBlock
from purenet.layers.tokens import ClassToken, TokenAt
from purenet.layers.augment import RandomShift
from purenet.layers.tensor_parallel import (ColumnParallelDense, ParallelAttention, ParallelFeedForward,
                                            RowParallelDense, attention_rules, feedforward_rules, partition_specs)

__all__ = [
    "GRU", "LSTM", "Activation", "DecoderBlock", "EncoderBlock", "KeyValues", "MultiHeadAttention",
    "dot_product_attention", "project_context",
    "dot_product_attention_vjp", "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNorm", "Bidirectional", "Conv1D",
    "Conv2D", "Conv3D", "ConvTranspose1D", "ConvTranspose2D", "ConvTranspose3D", "Dense", "Dropout", "Elu",
    "Embedding", "FeedForward", "Flatten", "Gelu", "GlobalAvgPool", "LSTMState", "LayerNorm", "LeakyRelu",
    "LearnedPositions", "LogSoftmax", "MaxPool1D", "MaxPool2D", "MaxPool3D", "RMSNorm", "Relu", "Reshape",
    "SequenceInput", "Sigmoid", "Silu", "SimpleRNN", "SinusoidalPositions", "Softmax", "Softplus", "Tanh",
    "gru_cell", "lstm_cell", "rotary", "rotary_pullback", "simple_rnn_cell", "L2Normalize",
    "ColumnParallelDense", "ParallelAttention", "ParallelFeedForward", "RowParallelDense", "attention_rules",
    "feedforward_rules", "partition_specs",
    "ClassToken", "TokenAt", "RandomShift",
]
