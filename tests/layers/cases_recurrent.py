"""Registry rows: SimpleRNN, LSTM, GRU and Bidirectional.

Rows with an initial state are structured inputs like any other: `in_shape` is `SequenceInput((N, T, F),
initial)`, so the initial-state cotangents are checked against jax.vjp too.
"""

from purenet.layers.recurrent import GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN
from tests.registry import Case

F, H = 3, 4  # features, hidden size


def _cell_rows(prefix, ctor, initial):
    """A covering set: T 1, 5, 50; batch 1, 2, 3; sequences and last state; both directions; h0."""
    return [
        Case(f"{prefix}-t5", ctor, {"hidden_size": H}, (3, 5, F)),
        Case(f"{prefix}-t1-batch1-last", ctor, {"hidden_size": 2, "return_sequences": False}, (1, 1, F)),
        Case(f"{prefix}-t50-reverse", ctor, {"hidden_size": H, "reverse": True}, (2, 50, F)),
        Case(f"{prefix}-initial-state-reverse-last", ctor,
             {"hidden_size": H, "reverse": True, "return_sequences": False}, SequenceInput((3, 5, F), initial)),
    ]


CASES = [
    *_cell_rows("simple-rnn", SimpleRNN, (3, H)),
    *_cell_rows("lstm", LSTM, LSTMState((3, H), (3, H))),
    *_cell_rows("gru", GRU, (3, H)),
    # PyTorch's GRU: a recurrent bias b_h, whose n block sits inside the reset gate's product (nonzero
    # biases, an initial state and reverse: test_recurrent.py).
    Case("gru-recurrent-bias-t5", GRU, {"hidden_size": H, "recurrent_bias": True}, (3, 5, F)),
    Case("bidirectional-simple-rnn-concat",
         lambda: Bidirectional(SimpleRNN(H), SimpleRNN(H + 1, reverse=True)), {}, (2, 5, F)),
    Case("bidirectional-sum-initial-states",  # forward LSTM from (h0, c0), backward GRU from h0
         lambda: Bidirectional(LSTM(H), GRU(H, reverse=True), merge="sum"), {},
         SequenceInput((2, 4, F), (LSTMState((2, H), (2, H)), (2, H)))),
    Case("bidirectional-gru-mul-last",
         lambda: Bidirectional(GRU(H, return_sequences=False), GRU(H, return_sequences=False, reverse=True),
                               merge="mul"), {}, (1, 3, F)),
]
