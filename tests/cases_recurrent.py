"""Registry rows: SimpleRNN, LSTM, GRU and Bidirectional.

The registry feeds plain arrays, so rows with an initial state go through `_packed`, a test adapter whose
input (N, T*F + S*H) holds the sequence and the S initial states side by side: it unpacks them into a
`SequenceInput`, and packs the layer's structured dx back the same way (so the initial-state cotangents
are checked against jax.vjp too).
"""

import jax
import jax.numpy as jnp
import numpy as np
from registry import Case

from purenet.core import Layer
from purenet.recurrent import GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN

F, H = 3, 4  # features, hidden size


def _packed(layer, steps, widths, make_initial):
    """`layer` fed SequenceInput(x (N, steps, F), make_initial(states)) unpacked from one flat array."""
    offsets = list(np.cumsum([steps * F, *widths])[:-1])

    def unpack(flat):
        seq, *states = jnp.split(flat, offsets, axis=1)
        return SequenceInput(seq.reshape(-1, steps, F), make_initial(states))

    def pack(tree):  # leaves in the order unpack made them: sequence first, then the states
        return jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree_util.tree_leaves(tree)], axis=1)

    def init(key, in_shape):
        return layer.init(key, (in_shape[0], steps, F))

    def apply(params, state, flat, *, key=None, train=False):
        return layer.apply(params, state, unpack(flat), key=key, train=train)

    def vjp(params, state, flat, *, key=None, train=False):
        y, new_state, pullback = layer.vjp(params, state, unpack(flat), key=key, train=train)

        def packed_pullback(dy):
            dparams, dx = pullback(dy)
            return dparams, pack(dx)

        return y, new_state, packed_pullback

    return Layer(init, apply, vjp, layer.name)


def _with_h0(ctor, steps, **kwargs):
    return _packed(ctor(H, **kwargs), steps, [H], lambda states: states[0])


def _lstm_with_state(steps, **kwargs):
    return _packed(LSTM(H, **kwargs), steps, [H, H], lambda states: LSTMState(*states))


def _cell_rows(prefix, ctor, with_state, state_width):
    """A covering set: T 1, 5, 50; batch 1, 2, 3; sequences and last state; both directions; h0."""
    return [
        Case(f"{prefix}-t5", ctor, {"hidden_size": H}, (3, 5, F)),
        Case(f"{prefix}-t1-batch1-last", ctor, {"hidden_size": 2, "return_sequences": False}, (1, 1, F)),
        Case(f"{prefix}-t50-reverse", ctor, {"hidden_size": H, "reverse": True}, (2, 50, F)),
        Case(f"{prefix}-initial-state-reverse-last",
             lambda: with_state(5, reverse=True, return_sequences=False), {}, (3, 5 * F + state_width)),
    ]


def _bidirectional_with_states():  # forward LSTM from (h0, c0), backward GRU from h0
    layer = Bidirectional(LSTM(H), GRU(H, reverse=True), merge="sum")
    return _packed(layer, 4, [H, H, H], lambda s: (LSTMState(s[0], s[1]), s[2]))


CASES = [
    *_cell_rows("simple-rnn", SimpleRNN, lambda steps, **kw: _with_h0(SimpleRNN, steps, **kw), H),
    *_cell_rows("lstm", LSTM, _lstm_with_state, 2 * H),
    *_cell_rows("gru", GRU, lambda steps, **kw: _with_h0(GRU, steps, **kw), H),
    Case("bidirectional-simple-rnn-concat",
         lambda: Bidirectional(SimpleRNN(H), SimpleRNN(H + 1, reverse=True)), {}, (2, 5, F)),
    Case("bidirectional-sum-initial-states", _bidirectional_with_states, {}, (2, 4 * F + 3 * H)),
    Case("bidirectional-gru-mul-last",
         lambda: Bidirectional(GRU(H, return_sequences=False), GRU(H, return_sequences=False, reverse=True),
                               merge="mul"), {}, (1, 3, F)),
]
