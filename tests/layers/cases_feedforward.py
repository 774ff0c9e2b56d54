"""Registry rows: FeedForward, plain and gated (SwiGLU, GEGLU), with and without biases, dropout in training."""

from purenet.layers.feedforward import FeedForward
from tests.registry import Case

CASES = [
    Case("feedforward-gelu-rank3", FeedForward, {}, (2, 3, 4), args=(6,)),
    Case("feedforward-gelu-exact", FeedForward, {"activation": "gelu_exact"}, (2, 3, 4), args=(6,)),
    Case("feedforward-relu-batch1-out3", FeedForward, {"activation": "relu", "out_features": 3}, (1, 4), args=(5,)),
    Case("feedforward-swiglu-rank3", FeedForward, {"activation": "silu", "gated": True}, (2, 3, 4), args=(6,)),
    Case("feedforward-geglu-no-bias", FeedForward, {"gated": True, "use_bias": False}, (3, 4), args=(5,)),
    Case("feedforward-dropout-train", FeedForward, {"dropout": 0.5, "gated": True, "activation": "silu"}, (2, 3, 4),
         train=True, args=(8,)),
]
