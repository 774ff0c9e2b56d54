"""Recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional) with handwritten backpropagation through time.

Dimension letters: N batch, T time, F input features, H hidden size, G gates (SimpleRNN 1, GRU 3, LSTM 4).
Inputs are batch-major (N, T, F); inside, time-major (T, N, .) for `lax.scan`. Params of every cell:
{"w_x": (F, G*H), "w_h": (H, G*H), "b": (G*H,)} (the GRU's PyTorch form adds "b_h": (G*H,)), gate blocks
side by side along the last axis in the order each cell documents. The GRU and SimpleRNN compute `x @ w_x
+ b` for every step in one matmul before the scan, the LSTM [x_t, h] @ [w_x; w_h] in each step (see the
cells' comment); the backward scan runs in the opposite direction carrying dh (and dc), and dw_x, dw_h, db,
dx come after it from the stacked per-step pre-activation cotangents, one matmul each. Precision: the
matmuls sum in at least float32 (`purenet.ops.dot`); the carried states (h, c, and dh, dc backward) and the
per-step residuals stay in the input's dtype (bfloat16 under a precision policy), as in JAX's own scan.

Optional initial state: pass `SequenceInput(x, initial)` instead of `x` (and as `in_shape`,
`SequenceInput((N, T, F), (N, H))`), with `initial` h0 (N, H) (LSTM: `LSTMState(h0, c0)` or a pair
`(h0, c0)`). It is a structured input like any other: the pullback's dx mirrors it (dx and d initial).

Decode (layers with reverse=False): the cache is the carried state (h, and c for the LSTM), a step is
one cell step, x_t (N, F) -> h_t (N, H).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from purenet import initializers
from purenet._checks import as_float, check_bool, check_choice, check_params, check_positive, check_rank, fail
from purenet._sharding import vary_like
from purenet.combinators import parallel
from purenet.core import Decode, Layer, is_shape, no_decode, stateless, tree_add
from purenet.ops import bias_add, dot, linear, linear_dw, linear_dx


class SequenceInput(NamedTuple):
    """A sequence with the state to start from: x (N, T, F); initial h0 (N, H), for LSTM (h0, c0)."""

    x: jax.Array
    initial: Any


class LSTMState(NamedTuple):
    """The LSTM's carried state: hidden h (N, H) and cell c (N, H)."""

    h: jax.Array
    c: jax.Array


# ----------------------------------------------------------------------------------------- helpers


def _shift(states, initial, reverse):
    """The state each step started from: states (T, N, H), initial (N, H) -> (T, N, H)."""
    if reverse:
        return jnp.concatenate([states[1:], initial[None]], axis=0)
    return jnp.concatenate([initial[None], states[:-1]], axis=0)


def _blocks(init, key, shape, gates):
    """`gates` independent draws of `init` of `shape` (rows, H), side by side -> (rows, gates * H)."""
    keys = jax.random.split(key, gates)
    return jnp.concatenate([init(k, shape, jnp.float32) for k in keys], axis=1)


# -------------------------------------------------------------------------------------------- cells
# Gates as tanh: sigmoid(a) = (1 + tanh(a / 2)) / 2, so a cell takes one tanh over its whole pre-activation
# row (N, G*H) scaled by `scale` (1/2 on sigmoid blocks, 1 on tanh blocks; exact, a power of two), which
# vectorizes on XLA:CPU where sigmoids on the row's slices do not (docs/performance.md). A scan scales the
# weights and biases once per call (`_scan_weights`), a single step (decoding) its row (`_step_weights`).
# The backward yields da, the cotangent of the unscaled pre-activations a: with t = tanh(scale a) and
# gate = (1 + t) / 2 (sigmoid) or t (tanh), d(gate)/da = scale^2 (1 - t^2) for both kinds of block.
#
# A cell step maps (w: _Weights, carry, x_t) -> (carry, saved_t), carry a tuple of (N, H) states. In its scan
# the LSTM takes x_t (N, F) and one matmul [x_t, h] @ [w_x; w_h] per step (`fused`: no (T, N, 4H) buffer of
# x @ w_x + b); the SimpleRNN, the GRU (its reset gate multiplies the recurrent term alone) and a single
# step take x_t @ w_x + b, computed before. A step's backward maps (w: _BackWeights, dcarry, (dy_t, saved_t,
# prev_t)) -> (dcarry, da_t), da_t (N, G*H); dh_prev gets the recurrent term's cotangent (da_t; GRU:
# `_gru_recurrent_cotangent`) times w_h.T, kept transposed. Residuals per step: h, the tanh row t (and c,
# the GRU's h @ w_hn).


class _Weights(NamedTuple):
    """What a cell step multiplies by. `fused` (the LSTM's scan): xh_t = [w_x; w_h].T (G*H, F+H), and the
    step takes x_t (N, F); else h = w_h (H, G*H), and the step takes x_t @ w_x + b (N, G*H), made before from
    x = w_x (F, G*H). b (G*H,); b_h (G*H,) the GRU's recurrent bias or None. scale (1, G*H) scales a single
    step's pre-activation row; None in a scan, whose weights and biases were scaled once per call."""

    fused: bool
    b: jax.Array
    x: jax.Array | None = None
    h: jax.Array | None = None
    xh_t: jax.Array | None = None
    b_h: jax.Array | None = None
    scale: jax.Array | None = None


class _BackWeights(NamedTuple):
    """What a step's backward multiplies by: h_t = w_h.T (G*H, H), and scale2 = scale^2 (1, G*H)."""

    h_t: jax.Array
    scale2: jax.Array


def _scale(cell, hidden, dtype):  # (1, G*H): 1/2 on sigmoid blocks, 1 on tanh blocks
    return jnp.repeat(jnp.asarray(cell.scale, dtype), hidden)[None]


def _scan_weights(cell, params) -> _Weights:  # scaled once per call; fused as the cell says
    scale = _scale(cell, params["w_h"].shape[0], params["w_h"].dtype)
    b, b_h = params["b"] * scale[0], params["b_h"] * scale[0] if "b_h" in params else None
    if cell.fused:
        return _Weights(True, b, xh_t=(jnp.concatenate([params["w_x"], params["w_h"]], axis=0) * scale).T)
    return _Weights(False, b, x=params["w_x"] * scale, h=params["w_h"] * scale, b_h=b_h)


def _step_weights(cell, params) -> _Weights:  # the layer's own, unfused, with the row's scale
    scale = _scale(cell, params["w_h"].shape[0], params["w_h"].dtype)
    return _Weights(False, params["b"], x=params["w_x"], h=params["w_h"], b_h=params.get("b_h"), scale=scale)


def _backward_weights(cell, params) -> _BackWeights:
    return _BackWeights(params["w_h"].T, _scale(cell, params["w_h"].shape[0], params["w_h"].dtype) ** 2)


def _scaled(w: _Weights, row):  # a pre-activation row (N, K), K <= G*H, times its scale unless the weights hold it
    return row if w.scale is None else row * w.scale[:, :row.shape[-1]]


def _step_input(w: _Weights, x):  # what the step takes: x itself (fused), or x @ w_x + b: (..., F) -> (..., G*H)
    return x if w.fused else bias_add(linear(x, w.x), w.b)


# x_t @ w_x + h @ w_h + b: (N, G*H). Fused: x_t (N, F) and one matmul [x_t, h] @ [w_x; w_h], computed with
# the long operand first, ([w_x; w_h].T @ [x_t, h].T).T (docs/performance.md); else x_t = x_t @ w_x + b.
def _pre_activation(w: _Weights, x_t, h):
    if not w.fused:
        return x_t + linear(h, w.h)
    u = jnp.concatenate([x_t, h], axis=-1)
    return bias_add(dot(w.xh_t, u, (((1,), (1,)), ((), ()))).T, w.b)


# h = tanh(a).
def _rnn_step(w, carry, x_t):
    (h_prev,) = carry
    h = jnp.tanh(_pre_activation(w, x_t, h_prev))  # (N, H)
    return (h,), {"h": h}


# da = dh (1 - h^2);  dh_prev = da @ w_h.T.
def _rnn_step_back(w, dcarry, inputs):
    (dh,) = dcarry
    dy_t, saved, _ = inputs
    dh = dh if dy_t is None else dh + dy_t  # (N, H)
    da = dh * (1 - saved["h"] ** 2)  # (N, H)
    return (linear(da, w.h_t),), da


# Sigmoid form: [i, f, o] = s(a_i, a_f, a_o), g = tanh(a_g);  c = f c_prev + i g;  h = o tanh(c).
# As run: t = tanh(scale a) over the row [i, f, g, o];  i = (1 + t_i) / 2 (f, o alike), g = t_g.
def _lstm_step(w, carry, x_t):
    h_prev, c_prev = carry
    t = jnp.tanh(_scaled(w, _pre_activation(w, x_t, h_prev)))  # (N, 4H): [i, f, g, o] as tanh
    t_i, t_f, g, t_o = jnp.split(t, 4, axis=-1)
    c = (1 + t_f) / 2 * c_prev + (1 + t_i) / 2 * g  # (N, H)
    h = (1 + t_o) / 2 * jnp.tanh(c)  # (N, H)
    return (h, c), {"h": h, "c": c, "t": t}


# dc = dc_next + dh o (1 - tanh(c)^2);  d[i, f, g, o] = [dc g, dc c_prev, dc i, dh tanh(c)];  dc_prev = dc f;
# sigmoid form: da = d[i, f, g, o] [i(1 - i), f(1 - f), 1 - g^2, o(1 - o)]; as run: d[...] scale^2 (1 - t^2);
# dh_prev = da @ w_h.T.
def _lstm_step_back(w, dcarry, inputs):
    dh, dc = dcarry
    dy_t, saved, (_, c_prev) = inputs
    dh = dh if dy_t is None else dh + dy_t  # (N, H)
    t = saved["t"]
    t_i, t_f, g, t_o = jnp.split(t, 4, axis=-1)  # 4 x (N, H)
    tanh_c = jnp.tanh(saved["c"])  # (N, H)
    dc = dc + dh * (1 + t_o) / 2 * (1 - tanh_c**2)  # (N, H)
    # built as two concatenations and one product over the whole row (vectorizes, see above)
    dgates = jnp.concatenate([dc, dc, dc, dh], -1) * jnp.concatenate([g, c_prev, (1 + t_i) / 2, tanh_c], -1)
    da = dgates * w.scale2 * (1 - t * t)  # (N, 4H)
    return (linear(da, w.h_t), dc * (1 + t_f) / 2), da


# Sigmoid form: [r, z] = s(a_r + u_r, a_z + u_z), u = h_prev @ w_h (+ b_h);  n = tanh(a_n + r u_n);
# h = (1 - z) n + z h_prev. As run: t_rz = tanh(scale (a_rz + u_rz)), [r, z] = (1 + t_rz) / 2.
def _gru_step(w, carry, xw_t):
    (h_prev,) = carry
    u = linear(h_prev, w.h)  # (N, 3H)
    u = u if w.b_h is None else bias_add(u, w.b_h)
    hidden = h_prev.shape[-1]
    a_rz, a_n = jnp.split(xw_t, [2 * hidden], axis=-1)
    u_rz, u_n = jnp.split(u, [2 * hidden], axis=-1)  # u_n includes b_hn
    t_rz = jnp.tanh(_scaled(w, a_rz + u_rz))  # (N, 2H): [r, z] as tanh
    r, z = jnp.split((1 + t_rz) / 2, 2, axis=-1)
    n = jnp.tanh(a_n + r * u_n)  # (N, H)
    h = n + z * (h_prev - n)  # (1 - z) * n + z * h_prev
    return (h,), {"h": h, "t": jnp.concatenate([t_rz, n], axis=-1), "u_n": u_n}


# da_n = dh (1 - z)(1 - n^2);  da_r = da_n u_n r (1 - r);  da_z = dh (h_prev - n) z (1 - z), where as run
# s(1 - s) = (1 - t^2) / 4; the recurrent matmul's cotangent is du = [da_r, da_z, r da_n];
# dh_prev = dh z + du @ w_h.T; with the recurrent bias b_h, db_h = du summed over N and T (after the scan).
def _gru_step_back(w, dcarry, inputs):
    (dh,) = dcarry
    dy_t, saved, (h_prev,) = inputs
    dh = dh if dy_t is None else dh + dy_t  # (N, H)
    t_rz, n = jnp.split(saved["t"], [2 * dh.shape[-1]], axis=-1)
    r, z = jnp.split((1 + t_rz) / 2, 2, axis=-1)  # 2 x (N, H)
    da_n = dh * (1 - z) * (1 - n**2)
    da_rz = jnp.concatenate([da_n * saved["u_n"], dh * (h_prev - n)], axis=-1) * (1 - t_rz * t_rz) / 4
    du = jnp.concatenate([da_rz, r * da_n], axis=-1)  # (N, 3H)
    return (dh * z + linear(du, w.h_t),), jnp.concatenate([da_rz, da_n], axis=-1)


def _gru_recurrent_cotangent(da, saved):  # (T, N, 3H) -> (T, N, 3H): the n block scaled by r
    da_rz, da_n = jnp.split(da, [2 * (da.shape[-1] // 3)], axis=-1)
    r = (1 + jnp.split(saved["t"], 3, axis=-1)[0]) / 2
    return jnp.concatenate([da_rz, r * da_n], axis=-1)


class _Cell(NamedTuple):
    name: str
    gates: int
    states: tuple[str, ...]  # the carried states, also keys of `saved`; h first
    scale: tuple[float, ...]  # per gate block: 1/2 for a sigmoid, 1 for a tanh
    fused: bool  # in the scan, the step takes x_t and one matmul [x_t, h] @ [w_x; w_h]; else x_t @ w_x + b
    step: Callable
    step_back: Callable
    recurrent_cotangent: Callable  # (da, saved) -> cotangent of h_prev @ w_h (+ b_h), stacked (T, N, G*H)


_RNN = _Cell("SimpleRNN", 1, ("h",), (1.0,), False, _rnn_step, _rnn_step_back, lambda da, saved: da)
_LSTM = _Cell("LSTM", 4, ("h", "c"), (0.5, 0.5, 1.0, 0.5), True, _lstm_step, _lstm_step_back,
              lambda da, saved: da)
_GRU = _Cell("GRU", 3, ("h",), (0.5, 0.5, 1.0), False, _gru_step, _gru_step_back, _gru_recurrent_cotangent)


def _cell_step(cell, params, carry, x):  # one step of `cell` from the layer's params: x (N, F)
    w = _step_weights(cell, params)
    return cell.step(w, carry, _step_input(w, x))[0]


def simple_rnn_cell(params, h, x):
    """One SimpleRNN step: h' = tanh(x @ w_x + h @ w_h + b). Shapes: h (N, H), x (N, F) -> h' (N, H)."""
    return _cell_step(_RNN, params, (h,), x)[0]


def lstm_cell(params, state, x):
    """One LSTM step, gates `[i, f, g, o] = [s, s, tanh, s](x @ w_x + h @ w_h + b)` (s: sigmoid);
    c' = f * c + i * g;  h' = o * tanh(c'). Shapes: state LSTMState(h, c) each (N, H), x (N, F) -> LSTMState."""
    h, c = state
    return LSTMState(*_cell_step(_LSTM, params, (h, c), x))


def gru_cell(params, h, x):
    """One GRU step, reset applied after the recurrent matmul (cuDNN form), gate blocks [r, z, n]:
    r, z = s(x w_xr + h w_hr + b_r), s(x w_xz + h w_hz + b_z);  n = tanh(x w_xn + b_n + r * (h w_hn));
    h' = (1 - z) * n + z * h. With params["b_h"] (PyTorch's b_hh, `GRU(recurrent_bias=True)`), h @ w_h
    becomes h @ w_h + b_h, so b_hn sits inside the reset gate's product: n = tanh(x w_xn + b_n +
    r * (h w_hn + b_hn)). Shapes: h (N, H), x (N, F) -> h' (N, H)."""
    return _cell_step(_GRU, params, (h,), x)[0]


# ------------------------------------------------------------------------------- sequence layers


def _split_input(cell, params, x, recurrent_bias):
    """-> (sequence (N, T, F) in floating point, initial states as a tuple or None), validated against
    params."""
    hidden = params["w_h"].shape[0] if isinstance(params, dict) and "w_h" in params else None
    gh = None if hidden is None else cell.gates * hidden
    check_params(cell.name, params, {"w_x": (None, gh), "w_h": (hidden, gh), "b": (gh,),
                                     **({"b_h": (gh,)} if recurrent_bias else {})})
    seq, initial = (x.x, x.initial) if isinstance(x, SequenceInput) else (x, None)
    features = params["w_x"].shape[0]
    if seq.ndim != 3 or seq.shape[-1] != features:
        fail(cell.name, f"expected input shape (N, T, {features}), got {tuple(seq.shape)}")
    states = jax.tree_util.tree_leaves(initial)
    expected = (seq.shape[0], hidden)
    if states and (len(states) != len(cell.states) or any(s.shape != expected for s in states)):
        got = [tuple(s.shape) for s in states]
        fail(cell.name, f"expected initial state {' and '.join(cell.states)} of shape {expected}, got {got}")
    seq = as_float(seq, params["w_x"])  # integers as floats; float16 / bfloat16 computed in the weights' dtype:
    seq = seq.astype(jnp.promote_types(seq.dtype, params["w_x"].dtype))  # the scan's carry has one dtype
    return seq, (tuple(states) if states else None)


# The scan cores are jitted once per (cell, options, shapes, dtypes): eager calls (the checker's) reuse the
# compiled scans instead of recompiling them on every call; under a caller's jit they are inlined.
@partial(jax.jit, static_argnames=("cell", "return_sequences", "reverse", "residuals"))
def _forward(params, x, initial, *, cell, return_sequences, reverse, residuals=True):
    """-> (y, carry0, saved): the initial states and the per-step residuals stacked (T, N, .); only y
    without `residuals`."""
    w = _scan_weights(cell, params)
    xs = _step_input(w, jnp.swapaxes(x, 0, 1))  # (T, N, F) fused, else (T, N, G*H)
    shape = (x.shape[0], params["w_h"].shape[0])  # (N, H)
    carry0 = tuple(jnp.zeros(shape, x.dtype) for _ in cell.states) if initial is None else initial
    carry0 = tuple(c.astype(x.dtype) for c in carry0)
    carry0 = vary_like(carry0, xs, params)  # under shard_map: typed like the per-step output
    carry, saved = lax.scan(partial(cell.step, w), carry0, xs, reverse=reverse)
    y = jnp.swapaxes(saved["h"], 0, 1) if return_sequences else carry[0]  # (N, T, H) or (N, H)
    return (y, carry0, saved) if residuals else y


# Backward scan in the opposite direction carrying d(carry); dy enters per step (return_sequences) or as
# the last step's dh. dw_x, dw_h, db, dx come from the stacked da afterwards, one matmul each (the LSTM's
# dw_x and dw_h as one, [x, h_prev].T @ da).
@partial(jax.jit, static_argnames=("cell", "return_sequences", "reverse"))
def _backward(params, x, carry0, saved, dy, *, cell, return_sequences, reverse):
    """-> (dparams, dx (N, T, F), d carry0)."""
    dys = jnp.swapaxes(dy, 0, 1) if return_sequences else None  # (T, N, H)
    dcarry = tuple(jnp.zeros_like(c) for c in carry0)
    if not return_sequences:
        dcarry = (dy, *dcarry[1:])
    prev = tuple(_shift(saved[s], c0, reverse) for s, c0 in zip(cell.states, carry0))  # (T, N, H) each
    dcarry = vary_like(dcarry, dy, saved, params)
    step_back = partial(cell.step_back, _backward_weights(cell, params))
    dcarry0, da = lax.scan(step_back, dcarry, (dys, saved, prev), reverse=not reverse)  # da (T, N, G*H)
    xs = jnp.swapaxes(x, 0, 1)  # (T, N, F)
    if cell.fused:  # the recurrent cotangent is da itself
        dw_x, dw_h = jnp.split(linear_dw(jnp.concatenate([xs, prev[0]], axis=-1), da), [x.shape[-1]])
    else:
        du = cell.recurrent_cotangent(da, saved)  # (T, N, G*H)
        dw_x, dw_h = linear_dw(xs, da), linear_dw(prev[0], du)  # (F, G*H), (H, G*H)
    dparams = {"w_x": dw_x, "w_h": dw_h, "b": jnp.sum(da, axis=(0, 1))}  # b: (G*H,)
    if "b_h" in params:
        dparams["b_h"] = jnp.sum(du, axis=(0, 1))  # (G*H,)
    dx = jnp.swapaxes(linear_dx(da, params["w_x"]), 0, 1)  # (N, T, F)
    return dparams, dx, dcarry0


def _recurrent(cell, hidden_size, return_sequences, reverse, w_x_init, w_h_init, b_init,
               recurrent_bias=False) -> Layer:
    (hidden,) = check_positive(cell.name, "hidden_size", hidden_size)
    check_bool(cell.name, "return_sequences", return_sequences)
    check_bool(cell.name, "reverse", reverse)
    check_bool(cell.name, "recurrent_bias", recurrent_bias)
    options = dict(cell=cell, return_sequences=return_sequences, reverse=reverse)

    def init(key, in_shape):
        seq_shape = in_shape.x if isinstance(in_shape, SequenceInput) else in_shape
        check_rank(cell.name, seq_shape, 3, "(N, T, F)")
        batch, steps, features = seq_shape
        if features <= 0:
            fail(cell.name, f"expected a positive feature size in_shape[-1], got shape {tuple(seq_shape)}")
        if isinstance(in_shape, SequenceInput) and in_shape.initial is not None:
            states = jax.tree_util.tree_leaves(in_shape.initial, is_leaf=is_shape)
            if len(states) != len(cell.states) or any(tuple(s) != (batch, hidden) for s in states):
                fail(cell.name, f"expected initial state {' and '.join(cell.states)} of shape {(batch, hidden)}, "
                                f"got {in_shape.initial}")
        k_x, k_h = jax.random.split(key)
        params = {
            "w_x": _blocks(w_x_init, k_x, (features, hidden), cell.gates),
            "w_h": _blocks(w_h_init, k_h, (hidden, hidden), cell.gates),
            "b": b_init(hidden),
        }
        if recurrent_bias:
            params["b_h"] = _zeros_bias(hidden, cell.gates)
        return ((batch, steps, hidden) if return_sequences else (batch, hidden)), params

    def apply(params, x):
        seq, initial = _split_input(cell, params, x, recurrent_bias)
        return _forward(params, seq, initial, **options, residuals=False)

    # Residuals: x, the initial states and `saved` (see the cells' comment); dx mirrors x's structure.
    def vjp(params, x):
        seq, initial = _split_input(cell, params, x, recurrent_bias)
        y, carry0, saved = _forward(params, seq, initial, **options)

        def pullback(dy):
            dparams, dseq, dcarry0 = _backward(params, seq, carry0, saved, dy, **options)
            given = x.x if isinstance(x, SequenceInput) else x
            if jnp.issubdtype(given.dtype, jnp.floating):
                dseq = dseq.astype(given.dtype)  # dx in the input's dtype
            if not isinstance(x, SequenceInput):
                return dparams, dseq
            dinitial = [] if initial is None else [d.astype(s.dtype) for d, s in zip(dcarry0, initial)]
            return dparams, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x), [dseq, *dinitial])

        return y, pullback

    # Decode: the cache is the carried state, zeros at the start (h, and c for the LSTM), each (N, H);
    # a step is one cell step on x_t (N, F) and returns h (N, H).
    def init_cache(params, batch, max_len):
        del max_len
        return tuple(jnp.zeros((batch, params["w_h"].shape[0]), params["w_h"].dtype) for _ in cell.states)

    def step(params, cache, x_t, *, pos):
        del pos
        features = params["w_x"].shape[0]
        if x_t.ndim != 2 or x_t.shape[-1] != features:
            fail(cell.name, f"expected a decode step input of shape (N, {features}), got {tuple(x_t.shape)}")
        carry = _cell_step(cell, params, cache, as_float(x_t, params["w_x"]))
        return carry[0], carry

    decode = (no_decode(cell.name, "reverse=True runs from the end of the sequence") if reverse
              else Decode(init_cache, step))
    return stateless(cell.name, init, apply, vjp, decode=decode)


def _zeros_bias(hidden, gates):
    return jnp.zeros((gates * hidden,), jnp.float32)


def SimpleRNN(hidden_size: int, *, return_sequences: bool = True, reverse: bool = False,
              w_x_init=initializers.glorot_uniform, w_h_init=initializers.orthogonal) -> Layer:
    """Elman RNN, h_t = tanh(x_t @ w_x + h_{t-1} @ w_h + b) (see `simple_rnn_cell`), over a sequence.

    Shapes: x (N, T, F) or SequenceInput(x, h0 (N, H)) -> (N, T, H) if return_sequences, else (N, H), the
    last state in processing order. reverse=True runs from t = T-1 to 0; outputs stay aligned with x.
    Params {"w_x": (F, H), "w_h": (H, H), "b": (H,)}. Default init: w_x Glorot uniform, w_h orthogonal,
    b zeros. The initial state defaults to zeros."""
    return _recurrent(_RNN, hidden_size, return_sequences, reverse, w_x_init, w_h_init,
                      partial(_zeros_bias, gates=1))


def LSTM(hidden_size: int, *, return_sequences: bool = True, reverse: bool = False,
         forget_bias: float = 1.0, w_x_init=initializers.glorot_uniform,
         w_h_init=initializers.orthogonal) -> Layer:
    """LSTM without peepholes (see `lstm_cell`) over a sequence; gate blocks in the order [i, f, g, o].

    Shapes: x (N, T, F) or SequenceInput(x, LSTMState(h0, c0) or (h0, c0), each (N, H)) -> (N, T, H) if
    return_sequences, else (N, H), the last h in processing order. reverse=True runs from t = T-1 to 0;
    outputs stay aligned with x. Params {"w_x": (F, 4H), "w_h": (H, 4H), "b": (4H,)}. Default init, per
    gate block: w_x Glorot uniform (fans F, H), w_h orthogonal; b zeros except the forget gate's block,
    `forget_bias` (1.0). The initial state defaults to zeros."""

    def b_init(hidden):
        return jnp.zeros((4, hidden), jnp.float32).at[1].set(forget_bias).reshape(-1)

    return _recurrent(_LSTM, hidden_size, return_sequences, reverse, w_x_init, w_h_init, b_init)


def GRU(hidden_size: int, *, return_sequences: bool = True, reverse: bool = False,
        recurrent_bias: bool = False, w_x_init=initializers.glorot_uniform,
        w_h_init=initializers.orthogonal) -> Layer:
    """GRU over a sequence in the cuDNN "reset after the recurrent matmul" form (see `gru_cell`), gate
    blocks [r, z, n]; one bias on the input side, or with `recurrent_bias=True` a second one on the
    recurrent side, b_h, whose n block sits inside the reset gate's product: PyTorch's nn.GRU
    (b = bias_ih, b_h = bias_hh; README, "Moving weights from PyTorch").

    Shapes: x (N, T, F) or SequenceInput(x, h0 (N, H)) -> (N, T, H) if return_sequences, else (N, H), the
    last state in processing order. reverse=True runs from t = T-1 to 0; outputs stay aligned with x.
    Params {"w_x": (F, 3H), "w_h": (H, 3H), "b": (3H,)}, and "b_h": (3H,) with recurrent_bias. Default
    init, per gate block: w_x Glorot uniform (fans F, H), w_h orthogonal; b and b_h zeros. The initial
    state defaults to zeros."""
    return _recurrent(_GRU, hidden_size, return_sequences, reverse, w_x_init, w_h_init,
                      partial(_zeros_bias, gates=3), recurrent_bias)


# --------------------------------------------------------------------------------- bidirectional


def Bidirectional(forward_layer: Layer, backward_layer: Layer, *, merge: str = "concat") -> Layer:
    """Run both layers over the same input and merge their outputs; build `backward_layer` with
    reverse=True (this wrapper flips nothing). merge: "concat" (last axis), "sum", "mean" or "mul".

    Shapes: x (N, T, F) or SequenceInput(x, (forward_initial, backward_initial)) -> merged outputs, e.g.
    (N, T, H_f + H_b) for concat. Params and state {"forward": ..., "backward": ...}; dx sums both dx.
    A `parallel` of the two, with an input router that gives each direction its own initial state."""
    check_choice("Bidirectional", "merge", merge, ("concat", "sum", "mean", "mul"))
    if not isinstance(forward_layer, Layer) or not isinstance(backward_layer, Layer):
        fail("Bidirectional", f"expects two Layers, got {type(forward_layer)} and {type(backward_layer)}")
    return parallel(forward=forward_layer, backward=backward_layer, merge=merge, route=_directions())


def _directions() -> Layer:
    """The input router of `Bidirectional`: x -> {"forward": x, "backward": x}, with SequenceInput(x,
    (initial_f, initial_b)) split into each direction's SequenceInput. dx: the sequence's cotangents
    summed, each initial state's its own direction's."""

    def route(x):
        if isinstance(x, SequenceInput) and x.initial is not None:
            if not isinstance(x.initial, (tuple, list)) or len(x.initial) != 2:
                fail("Bidirectional", "initial state must be a pair (forward_initial, backward_initial)")
            return {"forward": SequenceInput(x.x, x.initial[0]), "backward": SequenceInput(x.x, x.initial[1])}
        return {"forward": x, "backward": x}

    def init(key, in_shape):
        del key
        return route(in_shape), {}

    def apply(params, x):
        del params
        return route(x)

    def vjp(params, x):
        del params

        def pullback(dxs):
            d_f, d_b = dxs["forward"], dxs["backward"]
            if isinstance(x, SequenceInput) and x.initial is not None:
                return {}, SequenceInput(d_f.x + d_b.x, type(x.initial)((d_f.initial, d_b.initial)))
            return {}, tree_add(d_f, d_b)

        return route(x), pullback

    return stateless("Bidirectional", init, apply, vjp)
