"""Layers, one file per family; every one an `(init, apply, vjp)` triple with a handwritten pullback."""

from purenet.layers.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                        Softmax, Softplus, Tanh)
from purenet.layers.conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from purenet.layers.dense import Dense
from purenet.layers.dropout import Dropout
from purenet.layers.embedding import Embedding
from purenet.layers.norm import BatchNorm, LayerNorm
from purenet.layers.pooling import (AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, MaxPool1D, MaxPool2D,
                                    MaxPool3D)
from purenet.layers.recurrent import (GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN, gru_cell,
                                      lstm_cell, simple_rnn_cell)
from purenet.layers.reshape import Flatten, Reshape

__all__ = [
    "GRU", "LSTM", "Activation", "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNorm", "Bidirectional", "Conv1D",
    "Conv2D", "Conv3D", "ConvTranspose1D", "ConvTranspose2D", "ConvTranspose3D", "Dense", "Dropout", "Elu",
    "Embedding", "Flatten", "Gelu", "GlobalAvgPool", "LSTMState", "LayerNorm", "LeakyRelu", "LogSoftmax",
    "MaxPool1D", "MaxPool2D", "MaxPool3D", "Relu", "Reshape", "SequenceInput",
    "Sigmoid", "Silu", "SimpleRNN", "Softmax", "Softplus", "Tanh", "gru_cell", "lstm_cell", "simple_rnn_cell",
]
