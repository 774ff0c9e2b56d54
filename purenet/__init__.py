"""purenet: a functional neural-network library on JAX where every gradient is written by hand.

`import purenet as pn` gives every public name: layers and combinators, losses, the optimizers
(`pn.optim`), training, checkpoints, data (`pn.data`), the model zoo (`pn.models`), reference weights in
and out (`pn.interop`) and the checker (`pn.check`). The modules group them by role: core (the contract),
ops (paired primitives), layers/, losses, models/, interop/, optim/, training/, data/, check.
"""

from purenet import check, data, debug, initializers, interop, models, ops, optim
from purenet.core import (Decode, Layer, Loss, can_decode, elementwise, identity, init_model, is_differentiable,
                          no_decode, parallel, positionwise, residual, select, serial, stateless, tree_add,
                          zero_cotangent)
from purenet.layers import (GRU, LSTM, Activation, AvgPool1D, AvgPool2D, AvgPool3D, BatchNorm, Bidirectional,
                            Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D, DecoderBlock,
                            Dense, Dropout, Elu, Embedding, EncoderBlock, FeedForward, Flatten, Gelu, GlobalAvgPool,
                            LayerNorm, LeakyRelu, LearnedPositions, LogSoftmax, LSTMState, MaxPool1D, MaxPool2D,
                            MaxPool3D, MultiHeadAttention, Relu, Reshape, RMSNorm, SequenceInput, Sigmoid, Silu,
                            SimpleRNN, SinusoidalPositions, Softmax, Softplus, Tanh, dot_product_attention,
                            dot_product_attention_vjp, rotary, rotary_pullback, L2Normalize, ClassToken, TokenAt,
                            RandomShift)
from purenet.losses import (TokenTargets, masked_softmax_cross_entropy, mean_squared_error,
                            sigmoid_binary_cross_entropy, softmax_cross_entropy,
                            softmax_cross_entropy_with_targets)
from purenet.optim import schedules
from purenet.training import (Checkpoint, CorruptCheckpointError, FitResult, NonFiniteError, checkpoint, fit,
                              grad_step, load_checkpoint, locate_nonfinite, make_eval_step, make_train_step, metrics,
                              save_checkpoint)

__version__ = "0.2.0"
