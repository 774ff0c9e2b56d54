"""The position-wise feed-forward block of a Transformer, plain or gated (GLU variants: SwiGLU, GEGLU).

Dimension letters: N... batch and any leading dims (positions), F in features, H hidden, O out features.
The activation is the `Activation(name)` layer and the dropout the `Dropout(rate)` layer, each used
through its own apply / vjp, so their math lives in one place; the projections are `purenet.ops.affine`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purenet import initializers
from purenet._checks import check_bool, check_positive, check_range, fail, is_int
from purenet.core import Layer, positionwise
from purenet.layers.activations import ACTIVATION_NAMES, Activation
from purenet.layers.dropout import Dropout
from purenet.ops import affine, affine_pullback


def FeedForward(hidden: int, *, out_features: int | None = None, activation: str = "gelu", gated: bool = False,
                use_bias: bool = True, dropout: float = 0.0) -> Layer:
    """Plain: y = drop(act(x @ w_in + b_in)) @ w_out + b_out. Gated (SwiGLU with activation="silu",
    GEGLU with "gelu"): y = drop(act(x @ w_gate + b_gate) * (x @ w_in + b_in)) @ w_out + b_out.

    Shapes: x (N..., F) -> y (N..., O), O = out_features or F; params "w_in" (F, H), "b_in" (H,),
    "w_gate" (F, H), "b_gate" (H,) (gated only), "w_out" (H, O), "b_out" (O,) (biases with use_bias).
    `activation`: a name `Activation` knows ("gelu" is the tanh approximation, "gelu_exact" the erf
    form). `dropout`: the probability of dropping a hidden unit in training (needs a `key`); eval is the
    identity. Default init: LeCun normal weights, zero biases. Decodes position by position (dropout off)."""
    owner = "FeedForward"
    (hidden,) = check_positive(owner, "hidden", hidden)
    if out_features is not None:
        (out_features,) = check_positive(owner, "out_features", out_features)
    if not isinstance(activation, str) or activation not in ACTIVATION_NAMES:
        fail(owner, f"activation must be one of {ACTIVATION_NAMES}, got activation={activation!r}")
    check_bool(owner, "gated", gated)
    check_bool(owner, "use_bias", use_bias)
    rate = check_range(owner, "dropout", dropout, lambda v: 0 <= v < 1, "a number in [0, 1)",
                       what="dropout (the probability of dropping a hidden unit)")
    act, drop = Activation(activation), Dropout(rate)
    projections = ("in", "gate") if gated else ("in",)  # the matmuls of x
    activated = "gate" if gated else "in"  # the one act is applied to

    def init(key, in_shape):
        if len(in_shape) < 2:
            fail(owner, f"expected input of rank >= 2 (N, ..., F), got shape {tuple(in_shape)}")
        features = in_shape[-1]
        if not is_int(features) or features <= 0:
            fail(owner, f"the feature dimension in_shape[-1] must be a positive int, got shape {tuple(in_shape)}")
        out = out_features or features
        params = {}
        for name, k in zip((*projections, "out"), jax.random.split(key, 3)):
            shape = (hidden, out) if name == "out" else (features, hidden)
            params[f"w_{name}"] = initializers.lecun_normal(k, shape, jnp.float32)
            if use_bias:
                params[f"b_{name}"] = initializers.zeros(k, shape[1:], jnp.float32)
        return (*in_shape[:-1], out), params, {}

    def hidden_units(params, x):
        """-> (m, pre): pre = {"in": x @ w_in + b_in, "gate": ...} (N..., H), m = act(h) or act(g) * u."""
        features = params["w_in"].shape[0]
        if x.ndim < 2 or x.shape[-1] != features:
            fail(owner, f"expected input shape (N, ..., {features}), got {tuple(x.shape)}")
        pre = {name: affine(x, params, name) for name in projections}
        a, _ = act.apply({}, {}, pre[activated])
        return (a * pre["in"] if gated else a), pre  # (N..., H)

    def dropping(key, train):
        if train and rate > 0 and key is None:
            fail(owner, f"train=True with dropout={rate} needs a PRNG key, got key=None")
        return train and rate > 0

    def apply(params, state, x, *, key=None, train=False):
        m, _ = hidden_units(params, x)
        if dropping(key, train):
            m, _ = drop.apply({}, {}, m, key=key, train=True)
        return affine(m, params, "out"), state  # (N..., O)

    # Derivation: docs/derivations/feedforward.md
    # dz = dy @ w_out.T, dm = mask * dz / (1 - rate); plain: dh = act'(h) dm; gated: du = act(g) dm,
    # dg = act'(g) u dm; each projection p: dw_p = x.T @ dp, db_p = sum(dp), and dx = sum_p dp @ w_p.T.
    # Residuals: x, the pre-activations (h; gated: u and g) and the dropout mask; act and z are recomputed.
    def vjp(params, state, x, *, key=None, train=False):
        m, pre = hidden_units(params, x)
        drop_pullback = None
        if dropping(key, train):
            m, _, drop_pullback = drop.vjp({}, {}, m, key=key, train=True)
        y = affine(m, params, "out")  # (N..., O)

        def pullback(dy):
            a, _, act_pullback = act.vjp({}, {}, pre[activated])  # act recomputed, (N..., H)
            z = a * pre["in"] if gated else a
            if drop_pullback is not None:  # dropout is diagonal, its own transpose: the pullback redoes z
                z = drop_pullback(z)[1]
            dparams, dz = affine_pullback(dy, z, params, "out")  # {"w_out": (H, O), "b_out": (O,)}, (N..., H)
            dm = dz if drop_pullback is None else drop_pullback(dz)[1]
            if gated:
                dpre = {"in": dm * a, "gate": act_pullback(dm * pre["in"])[1]}
            else:
                dpre = {"in": act_pullback(dm)[1]}
            dx = 0
            for name in projections:
                dparams_p, dx_p = affine_pullback(dpre[name], x, params, name)  # {"w_p": (F, H), "b_p": (H,)}
                dparams, dx = dparams | dparams_p, dx + dx_p  # dx (N..., F)
            return dparams, dx

        return y, state, pullback

    decode = positionwise(lambda params, x_t: apply(params, {}, x_t)[0])
    return Layer(init, apply, vjp, owner, decode)
