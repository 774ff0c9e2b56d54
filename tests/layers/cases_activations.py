"""Registry rows: activations (standard-normal inputs, so negatives included)."""

from tests.registry import Case

from purenet.layers.activations import (Activation, Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu,
                                        Softmax, Softplus, Tanh)

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
]
