"""Registry rows: activations (standard-normal inputs, so negatives included) and Dropout."""

from registry import Case

from purenet.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                 Softmax, Softplus, Tanh)
from purenet.dropout import Dropout

CASES = [
    Case("relu", Relu, {}, (3, 5)),
    Case("leaky-relu", LeakyRelu, {"negative_slope": 0.2}, (3, 5)),
    Case("elu", Elu, {"alpha": 0.5}, (2, 3, 4)),
    Case("gelu-tanh", Gelu, {}, (3, 5)),
    Case("gelu-erf", Gelu, {"approximate": False}, (3, 5)),
    Case("sigmoid", Sigmoid, {}, (3, 5)),
    Case("tanh", Tanh, {}, (3, 5)),
    Case("softplus", Softplus, {}, (3, 5)),
    Case("silu", Silu, {}, (2, 3, 4)),
    Case("softmax", Softmax, {}, (3, 5)),
    Case("softmax-axis1", Softmax, {"axis": 1}, (2, 4, 3)),
    Case("log-softmax", LogSoftmax, {}, (3, 5)),
    Case("log-softmax-axis1", LogSoftmax, {"axis": 1}, (2, 4, 3)),
    Case("activation-by-name", Activation, {}, (2, 4), args=("silu",)),
    Case("dropout-train", Dropout, {"rate": 0.5}, (4, 6), train=True),
    Case("dropout-train-rank4", Dropout, {"rate": 0.25}, (2, 3, 3, 2), train=True),
    Case("dropout-eval", Dropout, {"rate": 0.5}, (4, 6)),
    Case("dropout-rate0-train", Dropout, {"rate": 0.0}, (3, 4), train=True),
]
