"""purenet: a functional neural-network library on JAX where every gradient is written by hand."""

from purenet import check, initializers, metrics, optim, schedules
from purenet.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu, Softmax,
                                 Softplus, Tanh)
from purenet.checkpoint import Checkpoint, CorruptCheckpointError, load_checkpoint, save_checkpoint
from purenet.conv import Conv1D, Conv2D, ConvTranspose2D
from purenet.core import Layer, Loss, identity, init_model, parallel, residual, serial
from purenet.dense import Dense
from purenet.dropout import Dropout
from purenet.embedding import Embedding
from purenet.losses import (TokenTargets, masked_softmax_cross_entropy, mean_squared_error,
                            sigmoid_binary_cross_entropy, softmax_cross_entropy,
                            softmax_cross_entropy_with_targets)
from purenet.norm import BatchNorm, LayerNorm
from purenet.pooling import AvgPool1D, AvgPool2D, GlobalAvgPool, MaxPool1D, MaxPool2D
from purenet.recurrent import GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN
from purenet.reshape import Flatten, Reshape
from purenet.train import FitResult, fit, grad_step, make_eval_step, make_train_step

__version__ = "0.1.0"
