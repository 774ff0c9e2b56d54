"""Recurrent layers beyond the registry: cells against numpy, the scan against a loop of cells, reverse,
initial states (values and the structure of dx), default initialization, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.check import LOW_PRECISION_FACTOR, check_function
from purenet.core import init_model
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


def _params(name, key, features=F):
    ctor, gates = CELLS[name]
    _, params, state = init_model(ctor(H), key, (N, T, features), dtype=jnp.float64)
    params["b"] = 0.3 * jax.random.normal(jax.random.fold_in(key, 7), (gates * H,), jnp.float64)
    return params, state


def _data(key, *shape):
    return jax.random.normal(jax.random.fold_in(key, len(shape) * 100 + shape[-1]), shape, jnp.float64)


@pytest.mark.parametrize("name", CELLS)
def test_one_cell_step_equals_numpy(name, key):
    params, _ = _params(name, key)
    h, c, x = _data(key, N, H), _data(key, N, H) + 1, _data(key, N, F)
    h_ref, c_ref = _numpy_step(name, params, np.asarray(h), np.asarray(c), np.asarray(x))
    if name == "LSTM":
        out = lstm_cell(params, LSTMState(h, c), x)
        np.testing.assert_allclose(out.c, c_ref, rtol=1e-12)
        out = out.h
    else:
        out = {"SimpleRNN": simple_rnn_cell, "GRU": gru_cell}[name](params, h, x)
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
    y_rev, _, pullback_rev = ctor(H, reverse=True).vjp(params, state, x)
    y_fwd, _, pullback_fwd = ctor(H).vjp(params, state, x[:, ::-1])
    np.testing.assert_allclose(y_rev, y_fwd[:, ::-1], rtol=1e-12)
    (dp_rev, dx_rev), (dp_fwd, dx_fwd) = pullback_rev(dy), pullback_fwd(dy[:, ::-1])
    np.testing.assert_allclose(dx_rev, dx_fwd[:, ::-1], rtol=1e-12)
    chex.assert_trees_all_close(dp_rev, dp_fwd, rtol=1e-12)
    last_rev, _ = ctor(H, reverse=True, return_sequences=False).apply(params, state, x)
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


def _lstm_initial(kind, h0, c0):
    return {"LSTMState": LSTMState(h0, c0), "tuple": (h0, c0), "none": None}[kind]


@pytest.mark.parametrize("kind", ["LSTMState", "tuple", "none"])
def test_lstm_dx_mirrors_the_input_structure(kind, key):
    params, state = _params("LSTM", key)
    layer = LSTM(H, return_sequences=False, reverse=True)
    x = SequenceInput(_data(key, N, T, F), _lstm_initial(kind, _data(key, N, H), _data(key, N, H) + 1))
    y, _, pullback = layer.vjp(params, state, x)
    _, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, state, x)[0], params, x)
    dy = _data(key, N, H)
    ours, reference = pullback(dy), jax_pullback(dy)
    chex.assert_trees_all_equal_structs(ours, reference)
    chex.assert_trees_all_close(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["SimpleRNN", "GRU"])
def test_h0_gets_its_cotangent(name, key):
    ctor, _ = CELLS[name]
    params, state = _params(name, key)
    layer = ctor(H)
    x = SequenceInput(_data(key, N, T, F), _data(key, N, H))
    y, _, pullback = layer.vjp(params, state, x)
    _, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, state, x)[0], params, x)
    dy = _data(key, N, T, H)
    (dparams, dx), reference = pullback(dy), jax_pullback(dy)
    assert isinstance(dx, SequenceInput) and dx.initial.shape == (N, H)
    chex.assert_trees_all_close((dparams, dx), reference, rtol=1e-10, atol=1e-12)


def test_bidirectional_takes_one_initial_state_per_direction(key):
    layer = Bidirectional(LSTM(H), GRU(H - 1, reverse=True))
    _, params, state = init_model(layer, key, (N, T, F), dtype=jnp.float64)
    x = SequenceInput(_data(key, N, T, F), (LSTMState(_data(key, N, H), _data(key, N, H)), _data(key, N, H - 1)))
    y, _, pullback = layer.vjp(params, state, x)
    assert y.shape == (N, T, 2 * H - 1)
    _, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, state, x)[0], params, x)
    dy = _data(key, N, T, 2 * H - 1)
    ours, reference = pullback(dy), jax_pullback(dy)
    chex.assert_trees_all_equal_structs(ours, reference)
    chex.assert_trees_all_close(ours, reference, rtol=1e-10, atol=1e-12)


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
        Bidirectional(GRU(H), GRU(H + 1, reverse=True), merge="sum").init(key, (N, T, F))
    with pytest.raises(ValueError, match=r"^Bidirectional: merge='concat' needs equal shapes but the last"):
        Bidirectional(GRU(H), GRU(H, return_sequences=False), merge="concat").init(key, (N, T, F))
    layer = Bidirectional(GRU(H), GRU(H, reverse=True))
    _, params, state = layer.init(key, (N, T, F))
    with pytest.raises(ValueError, match=r"^Bidirectional: initial state must be a pair"):
        layer.apply(params, state, SequenceInput(jnp.zeros((N, T, F)), jnp.zeros((N, H))))


def test_bidirectional_wraps_any_layer(key):
    layer = Bidirectional(Dense(2), Dense(2), merge="mul")
    assert layer.init(key, (N, T, F))[0] == (N, T, 2)


def test_bidirectional_mean_is_half_the_sum(key):
    mean, total = (Bidirectional(GRU(H), GRU(H, reverse=True), merge=m) for m in ("mean", "sum"))
    _, params, state = init_model(total, key, (N, T, F), dtype=jnp.float64)
    x, dy = _data(key, N, T, F), _data(key, N, T, H)
    y_mean, _, pullback_mean = mean.vjp(params, state, x)
    y_sum, _, pullback_sum = total.vjp(params, state, x)
    np.testing.assert_allclose(y_mean, y_sum / 2, rtol=1e-12)
    chex.assert_trees_all_close(pullback_mean(dy), pullback_sum(dy / 2), rtol=1e-12)


# ----------------------------------------------------------------- PyTorch's GRU (recurrent bias)


def _torch_style_gru_params(key, dtype):
    """GRU(H, recurrent_bias=True) params with every bias nonzero (init makes them zero)."""
    _, params, _ = init_model(GRU(H, recurrent_bias=True), key, (N, T, F), dtype=dtype)
    params["b"] = 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (3 * H,), dtype)
    params["b_h"] = 0.5 * jax.random.normal(jax.random.fold_in(key, 2), (3 * H,), dtype)
    return params


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_gru_recurrent_bias_pullback_matches_jax_with_nonzero_biases(dtype, key):
    # The registry rows start from zero biases; here b_hn is nonzero, so it enters dr through h w_hn + b_hn.
    layer = GRU(H, recurrent_bias=True, return_sequences=False)
    params = _torch_style_gru_params(key, dtype)
    x = SequenceInput(_data(key, N, T, F).astype(dtype), _data(key, N, H).astype(dtype))
    dy = _data(key, N, H).astype(dtype)

    @jax.jit
    def ours(params, x, dy):
        y, _, pullback = layer.vjp(params, {}, x)
        return y, pullback(dy)

    @jax.jit
    def theirs(params, x, dy):
        y, jax_pullback = jax.vjp(lambda p, x: layer.apply(p, {}, x)[0], params, x)
        return y, jax_pullback(dy)

    check_function(ours, theirs, params, x, dy, what="GRU(recurrent_bias=True)")
    assert float(jnp.max(jnp.abs(ours(params, x, dy)[1][0]["b_h"]))) > 0


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


def test_gru_params_from_another_layer_are_refused(key):
    _, params, _ = init_model(GRU(H), key, (N, T, F))
    with pytest.raises(ValueError, match=r"GRU: params must be \{'w_x': \(\?, 15\), 'w_h': \(5, 15\), 'b': \(15,\), "
                                         r"'b_h': \(15,\)\} as this layer's init made them, got"):
        GRU(H, recurrent_bias=True).apply(params, {}, jnp.zeros((N, T, F)))
