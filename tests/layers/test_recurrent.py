"""Recurrent layers beyond the registry: cells against numpy, the scan against a loop of cells, reverse,
initial states (values and the structure of dx), default initialization, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import LOW_PRECISION_FACTOR, check_function
from purenet.layers.dense import Dense
from purenet.layers.recurrent import (
    GRU, LSTM, Bidirectional, LSTMState, SequenceInput, SimpleRNN, gru_cell, lstm_cell, simple_rnn_cell,
)

N, T, F, H = 2, 4, 3, 5
CELLS = {"SimpleRNN": (SimpleRNN, 1), "LSTM": (LSTM, 4), "GRU": (GRU, 3)}


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _numpy_step(name, p, h, c, x):
    """The textbook step in numpy, written independently of purenet. -> (h', c')."""
    w_x, w_h, b = (np.asarray(p[k]) for k in ("w_x", "w_h", "b"))
    if name == "SimpleRNN":
        return np.tanh(x @ w_x + h @ w_h + b), None
    if name == "LSTM":
        i, f, g, o = np.split(x @ w_x + h @ w_h + b, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    x_r, x_z, x_n = np.split(x @ w_x + b, 3, axis=-1)
    h_r, h_z, h_n = np.split(h @ w_h, 3, axis=-1)
    r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, None


def _traced_params(layer, in_shape, seed=0):
    """Standard-normal float64 params of init's shapes, drawn by numpy (init is only traced: no random
    draw or QR is compiled)."""
    shapes = jax.eval_shape(lambda k: layer.init(k, in_shape)[1], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: 0.5 * rng.standard_normal(a.shape), shapes)


def _params(name, key=None, features=F):
    """(params, state) of CELLS[name](H): standard normal, the biases 0.3 standard normal (nonzero)."""
    ctor, gates = CELLS[name]
    params = _traced_params(ctor(H), (N, T, features))
    params["b"] = 0.3 * np.random.default_rng(7).standard_normal(gates * H)
    return params, {}


def _data(key, *shape):
    return np.random.default_rng(len(shape) * 100 + shape[-1]).standard_normal(shape)


@pytest.mark.parametrize("name", CELLS)
def test_one_cell_step_equals_numpy(name, key):
    params, _ = _params(name, key)
    h, c, x = _data(key, N, H), _data(key, N, H) + 1, _data(key, N, F)
    h_ref, c_ref = _numpy_step(name, params, np.asarray(h), np.asarray(c), np.asarray(x))
    if name == "LSTM":
        out = jax.jit(lstm_cell)(params, LSTMState(h, c), x)
        np.testing.assert_allclose(out.c, c_ref, rtol=1e-12)
        out = out.h
    else:
        out = jax.jit({"SimpleRNN": simple_rnn_cell, "GRU": gru_cell}[name])(params, h, x)
    np.testing.assert_allclose(out, h_ref, rtol=1e-12)


@pytest.mark.parametrize("name", CELLS)
def test_sequence_equals_a_loop_of_numpy_steps_from_the_initial_state(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    x, h0, c0 = _data(key, N, T, F), _data(key, N, H), _data(key, N, H)
    initial = LSTMState(h0, c0) if name == "LSTM" else h0
    y, _ = ctor(H).apply(params, state, SequenceInput(x, initial))
    h, c, expected = np.asarray(h0), np.asarray(c0), []
    for t in range(T):
        h, c = _numpy_step(name, params, h, c, np.asarray(x[:, t]))
        expected.append(h)
    np.testing.assert_allclose(y, np.stack(expected, axis=1), rtol=1e-12)


@pytest.mark.parametrize("name", CELLS)
def test_reverse_equals_flipping_the_input(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    x, dy = _data(key, N, T, F), _data(key, N, T, H)

    @jax.jit  # one program: both directions' forward and pullback, and the last state reversed
    def both_directions(params, x, dy):
        y_rev, _, pullback_rev = ctor(H, reverse=True).vjp(params, state, x)
        y_fwd, _, pullback_fwd = ctor(H).vjp(params, state, x[:, ::-1])
        last_rev, _ = ctor(H, reverse=True, return_sequences=False).apply(params, state, x)
        return (y_rev, pullback_rev(dy)), (y_fwd, pullback_fwd(dy[:, ::-1])), last_rev

    (y_rev, (dp_rev, dx_rev)), (y_fwd, (dp_fwd, dx_fwd)), last_rev = both_directions(params, x, dy)
    np.testing.assert_allclose(y_rev, y_fwd[:, ::-1], rtol=1e-12)
    np.testing.assert_allclose(dx_rev, dx_fwd[:, ::-1], rtol=1e-12)
    chex.assert_trees_all_close(dp_rev, dp_fwd, rtol=1e-12)
    np.testing.assert_allclose(last_rev, y_fwd[:, -1], rtol=1e-12)  # last in processing order: t = 0


@pytest.mark.parametrize("name", CELLS)
def test_zero_initial_state_is_the_default(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    x, zeros = _data(key, N, T, F), jnp.zeros((N, H), jnp.float64)
    initial = LSTMState(zeros, zeros) if name == "LSTM" else zeros
    y, _ = ctor(H).apply(params, state, x)
    y_zero, _ = ctor(H).apply(params, state, SequenceInput(x, initial))
    y_none, _ = ctor(H).apply(params, state, SequenceInput(x, None))
    np.testing.assert_array_equal(y, y_zero)
    np.testing.assert_array_equal(y, y_none)


@pytest.mark.parametrize("name", ["SimpleRNN", "GRU"])
def test_initial_state_continues_a_split_sequence(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    x = _data(key, N, T, F)
    whole, _ = ctor(H, return_sequences=False).apply(params, state, x)
    h_mid, _ = ctor(H, return_sequences=False).apply(params, state, x[:, :2])
    rest, _ = ctor(H, return_sequences=False).apply(params, state, SequenceInput(x[:, 2:], h_mid))
    np.testing.assert_allclose(rest, whole, rtol=1e-12)


def test_initial_states_get_their_cotangents_and_dx_mirrors_the_input(key):
    # Forward from h0 (SimpleRNN, GRU: sequences), and the LSTM's initial state given as a plain pair or
    # as None: ours against jax.vjp (float64, 1e-10; the structures must match: a SequenceInput with its
    # initial state's cotangent, or None), in one program per side. (The LSTM from an LSTMState, reversed:
    # the registry's row lstm-initial-state-reverse-last; SimpleRNN and GRU from h0 reversed, the rows
    # simple-rnn-initial-state-reverse-last and gru-initial-state-reverse-last; one initial state per
    # direction of a Bidirectional, the row bidirectional-sum-initial-states.)
    lstm = LSTM(H, return_sequences=False, reverse=True)
    cases = [(SimpleRNN(H), SequenceInput(_data(key, N, T, F), _data(key, N, H)), _data(key, N, T, H)),
             (GRU(H), SequenceInput(_data(key, N, T, F), _data(key, N, H)), _data(key, N, T, H)),
             (lstm, SequenceInput(_data(key, N, T, F), (_data(key, N, H), _data(key, N, H) + 1)), _data(key, N, H)),
             (lstm, SequenceInput(_data(key, N, T, F), None), _data(key, N, H))]
    layers, dys = [layer for layer, _, _ in cases], [dy for _, _, dy in cases]
    params = [_params(name)[0] for name in ("SimpleRNN", "GRU", "LSTM", "LSTM")]

    def ours(params, xs):
        return [(y, pullback(dy)) for (y, _, pullback), dy in
                zip((layer.vjp(p, {}, x) for layer, p, x in zip(layers, params, xs)), dys)]

    def theirs(params, xs):
        results = []
        for layer, p, x, dy in zip(layers, params, xs, dys):
            y, pullback = jax.vjp(lambda p, x, layer=layer: layer.apply(p, {}, x)[0], p, x)
            results.append((y, pullback(dy)))
        return results

    check_function(ours, theirs, params, [x for _, x, _ in cases], what="initial states")


@pytest.mark.parametrize("name", CELLS)
def test_default_init(name, key):
    ctor, gates = CELLS[name]
    _, params, _ = ctor(H).init(key, (-1, T, F))
    shapes = {field: p.shape for field, p in params.items()}
    assert shapes == {"w_x": (F, gates * H), "w_h": (H, gates * H), "b": (gates * H,)}
    blocks = jnp.split(params["w_h"], gates, axis=1)
    for block in blocks:  # float32 Householder QR: orthogonal to within a multiple of H eps (Higham, Thm 19.4)
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=LOW_PRECISION_FACTOR * H * np.finfo(np.float32).eps)
    if gates > 1:
        assert not np.allclose(blocks[0], blocks[1])  # independent draws per gate
    expected_b = np.zeros((gates, H))
    if name == "LSTM":
        expected_b[1] = 1.0  # forget gate
    np.testing.assert_array_equal(params["b"], expected_b.reshape(-1))


@pytest.mark.parametrize("name", CELLS)
def test_out_shapes_with_unknown_batch(name):
    ctor, _ = CELLS[name]
    assert ctor(H).init(jax.random.PRNGKey(0), (-1, T, F))[0] == (-1, T, H)
    assert ctor(H, return_sequences=False).init(jax.random.PRNGKey(0), (-1, T, F))[0] == (-1, H)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("hidden", [0, -2, 2.5, True])
def test_hidden_size_must_be_a_positive_int(name, hidden):
    with pytest.raises(ValueError, match=rf"^{name}: hidden_size must be positive integers, got hidden_size="):
        CELLS[name][0](hidden)


@pytest.mark.parametrize("name", CELLS)
def test_wrong_rank_or_features_at_init(name, key):
    layer = CELLS[name][0](H)
    with pytest.raises(ValueError, match=rf"^{name}: expected input of rank 3 \(N, T, F\), got shape \(2, 3\)"):
        layer.init(key, (2, 3))
    with pytest.raises(ValueError, match=rf"^{name}: expected a positive feature size"):
        layer.init(key, (2, 3, 0))


@pytest.mark.parametrize("name", CELLS)
def test_wrong_input_at_apply(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    with pytest.raises(ValueError, match=rf"^{name}: expected input shape \(N, T, 3\), got \(2, 4, 7\)"):
        ctor(H).apply(params, state, jnp.zeros((2, 4, 7)))
    with pytest.raises(ValueError, match=rf"^{name}: expected input shape \(N, T, 3\), got \(4, 3\)"):
        ctor(H).vjp(params, state, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=rf"^{name}: expected initial state h.* of shape \(2, 5\), got \[\(2, 4\)"):
        ctor(H).apply(params, state, SequenceInput(jnp.zeros((2, 4, 3)), jnp.zeros((2, 4))))


def test_lstm_initial_state_needs_h_and_c(key):
    params, state = _params("LSTM", key)
    with pytest.raises(ValueError, match=r"^LSTM: expected initial state h and c of shape \(2, 5\)"):
        LSTM(H).apply(params, state, SequenceInput(jnp.zeros((2, 4, 3)), jnp.zeros((2, 5))))


def test_bidirectional_errors(key):
    with pytest.raises(ValueError, match=r"^Bidirectional: merge must be one of .*, got merge='max'"):
        Bidirectional(GRU(H), GRU(H, reverse=True), merge="max")
    with pytest.raises(ValueError, match=r"^Bidirectional: expects two Layers"):
        Bidirectional(GRU(H), "GRU")
    with pytest.raises(ValueError, match=r"^Bidirectional: merge='sum' needs equal output shapes"):
        _traced_params(Bidirectional(GRU(H), GRU(H + 1, reverse=True), merge="sum"), (N, T, F))
    with pytest.raises(ValueError, match=r"^Bidirectional: merge='concat' needs equal shapes but the last"):
        _traced_params(Bidirectional(GRU(H), GRU(H, return_sequences=False), merge="concat"), (N, T, F))
    layer = Bidirectional(GRU(H), GRU(H, reverse=True))
    params = _traced_params(layer, (N, T, F))
    with pytest.raises(ValueError, match=r"^Bidirectional: initial state must be a pair"):
        layer.apply(params, {"forward": {}, "backward": {}}, SequenceInput(jnp.zeros((N, T, F)), jnp.zeros((N, H))))


def test_bidirectional_wraps_any_layer(key):
    layer = Bidirectional(Dense(2), Dense(2), merge="mul")
    assert layer.init(key, (N, T, F))[0] == (N, T, 2)


def test_bidirectional_mean_is_half_the_sum(key):
    mean, total = (Bidirectional(GRU(H), GRU(H, reverse=True), merge=m) for m in ("mean", "sum"))
    params, state = _traced_params(total, (N, T, F)), {"forward": {}, "backward": {}}
    x, dy = _data(key, N, T, F), _data(key, N, T, H)

    @jax.jit
    def both(params, x, dy):
        y_mean, _, pullback_mean = mean.vjp(params, state, x)
        y_sum, _, pullback_sum = total.vjp(params, state, x)
        return (y_mean, pullback_mean(dy)), (y_sum, pullback_sum(dy / 2))

    (y_mean, grads_mean), (y_sum, grads_half_sum) = both(params, x, dy)
    np.testing.assert_allclose(y_mean, y_sum / 2, rtol=1e-12)
    chex.assert_trees_all_close(grads_mean, grads_half_sum, rtol=1e-12)


# ----------------------------------------------------------------- PyTorch's GRU (recurrent bias)


def test_gru_recurrent_bias_pullback_matches_jax_with_nonzero_biases():
    # The registry rows start from zero biases; here b_hn is nonzero, so it enters dr through h w_hn + b_hn.
    # Float64 within 1e-10, float32 by the suite's rule: its truth is the float64 program of `theirs`.
    layer = GRU(H, recurrent_bias=True, return_sequences=False)
    params = _traced_params(layer, (N, T, F))  # every bias nonzero (init makes them zero)
    x = SequenceInput(_data(None, N, T, F), _data(None, N, H))
    dy = _data(None, N, H)

    def ours(params, x, dy):
        y, _, pullback = layer.vjp(params, {}, x)
        return y, pullback(dy)

    def theirs(params, x, dy):
        y, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, {}, x)[0], params, x)
        return y, jax_pullback(dy)

    assert np.all(params["b_h"] != 0) and np.all(params["b"] != 0)
    for dtype in (np.float64, np.float32):
        args = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), (params, x, dy))
        report = check_function(ours, theirs, *args, what=f"GRU(recurrent_bias=True) {np.dtype(dtype).name}")
        assert any("['b_h']" in leaf for leaf in report)


def test_gru_recurrent_bias_loads_torch_gru_weights(key):
    """nn.GRU's weights as purenet params: w_x = weight_ih.T, w_h = weight_hh.T, b = bias_ih, b_h = bias_hh
    (the same gate order, r z n). Outputs agree with PyTorch's from an initial state, forward and reversed
    (PyTorch's bidirectional GRU's second direction), float64."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    gru = torch.nn.GRU(F, H, batch_first=True, bidirectional=True, dtype=torch.float64)
    x, h0 = torch.randn(N, T, F, dtype=torch.float64), torch.randn(2, N, H, dtype=torch.float64)
    with torch.no_grad():
        y_torch, h_torch = gru(x, h0)  # (N, T, 2H), (2, N, H)

    def params(suffix):
        def array(name):
            return jnp.asarray(getattr(gru, f"{name}_l0{suffix}").detach().numpy())
        return {"w_x": array("weight_ih").T, "w_h": array("weight_hh").T, "b": array("bias_ih"),
                "b_h": array("bias_hh")}

    layer = Bidirectional(GRU(H, recurrent_bias=True), GRU(H, recurrent_bias=True, reverse=True))
    x_ours = SequenceInput(jnp.asarray(x.numpy()), (jnp.asarray(h0[0].numpy()), jnp.asarray(h0[1].numpy())))
    y, _ = layer.apply({"forward": params(""), "backward": params("_reverse")}, {"forward": {}, "backward": {}},
                       x_ours)
    np.testing.assert_allclose(y, y_torch.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y[:, -1, :H], h_torch[0].numpy(), rtol=1e-12, atol=1e-14)  # last forward state
    np.testing.assert_allclose(y[:, 0, H:], h_torch[1].numpy(), rtol=1e-12, atol=1e-14)  # last backward state


def test_gru_params_from_another_layer_are_refused():
    params = _traced_params(GRU(H), (N, T, F))
    with pytest.raises(ValueError, match=r"GRU: params must be \{'w_x': \(\?, 15\), 'w_h': \(5, 15\), 'b': \(15,\), "
                                         r"'b_h': \(15,\)\} as this layer's init made them, got"):
        GRU(H, recurrent_bias=True).apply(params, {}, jnp.zeros((N, T, F)))
