"""Tensor parallelism (Megatron-style): layers whose weights are split over a mesh axis, run inside
`jax.shard_map`, with the collectives placed by hand in the forward pass and the pullback.

`init` builds the *global* parameters, as the unsharded layer would; inside shard_map each device holds
the block its PartitionSpec gives (`partition_specs(params, rules)`, with `attention_rules` /
`feedforward_rules`), and the input x (N..., F) is replicated over the axis. Megatron's two conjugate
operators: a column-parallel layer's input is copied to every shard (forward: identity; pullback: the
shards' partial dx summed, one psum), a row-parallel layer's partial outputs are summed (forward: one
psum; pullback: identity, dy is already replicated). So a feed-forward block or an attention block costs
one all-reduce forward and one backward. Dimension letters: N batch, F features, n the axis size.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

from purenet._checks import check_positive, fail
from purenet.combinators import serial
from purenet.core import Layer, PyTree, leaf_path, no_decode, stateless
from purenet.layers.activations import Activation
from purenet.layers.attention import MultiHeadAttention
from purenet.layers.dense import Dense
from purenet.ops import bias_add, bias_grad


def _shards(owner: str, axis_name: str, size: int, what: str) -> int:
    """The axis size n (inside shard_map), failing unless it divides `size`."""
    try:
        n = lax.axis_size(axis_name)
    except NameError:
        fail(owner, f"runs inside jax.shard_map over the mesh axis '{axis_name}' (its params sharded by "
                    f"partition_specs), but that axis is not bound here")
    if size % n:
        fail(owner, f"{what} (={size}) must be divisible by the size of axis '{axis_name}' (={n})")
    return n


def ColumnParallelDense(out_features: int, *, axis_name: str, use_bias: bool = True) -> Layer:
    """Dense split by output columns: x (N..., I) replicated -> y (N..., O / n), this shard's columns.

    Params (global) {"w": (I, O), "b": (O,)}, sharded w P(None, axis), b P(axis)."""
    (out_features,) = check_positive("ColumnParallelDense", "out_features", out_features)
    whole = Dense(out_features, use_bias=use_bias)

    def local() -> Layer:
        n = _shards("ColumnParallelDense", axis_name, out_features, "out_features")
        return Dense(out_features // n, use_bias=use_bias)

    def init(key, in_shape):
        shape, params, _ = whole.init(key, in_shape)
        return shape, params

    def apply(params, x):
        return local().apply(params, {}, x)[0]

    # Megatron's f: every shard's x is the same x, so dx = psum over the axis of the shards' dy_s w_s^T.
    def vjp(params, x):
        y, _, pullback = local().vjp(params, {}, x)

        def column_pullback(dy):
            dparams, dx = pullback(dy)
            return dparams, lax.psum(dx, axis_name)

        return y, column_pullback

    return stateless("ColumnParallelDense", init, apply, vjp, decode=no_decode("ColumnParallelDense", "not yet"))


def RowParallelDense(out_features: int, *, axis_name: str, use_bias: bool = True) -> Layer:
    """Dense split by input rows: x (N..., I / n), this shard's features -> y (N..., O) replicated.

    Params (global) {"w": (I, O), "b": (O,)}, sharded w P(axis, None), b replicated (added once, after
    the sum)."""
    (out_features,) = check_positive("RowParallelDense", "out_features", out_features)
    whole, partial = Dense(out_features, use_bias=use_bias), Dense(out_features, use_bias=False)

    def init(key, in_shape):
        shape, params, _ = whole.init(key, in_shape)
        return shape, params

    def apply(params, x):
        y = lax.psum(partial.apply({"w": params["w"]}, {}, x)[0], axis_name)  # (N..., O)
        return bias_add(y, params["b"]) if use_bias else y

    # Megatron's g: y = psum_s(x_s w_s) + b; dy is the same on every shard, so dx_s = dy w_s^T and
    # dw_s = x_s^T dy need no collective; db = sum(dy) over the leading dims.
    def vjp(params, x):
        y_partial, _, pullback = partial.vjp({"w": params["w"]}, {}, x)
        y = lax.psum(y_partial, axis_name)
        y = bias_add(y, params["b"]) if use_bias else y

        def row_pullback(dy):
            dparams, dx = pullback(dy)
            return ({**dparams, "b": bias_grad(dy)} if use_bias else dparams), dx

        return y, row_pullback

    return stateless("RowParallelDense", init, apply, vjp, decode=no_decode("RowParallelDense", "not yet"))


def ParallelFeedForward(hidden: int, *, axis_name: str, activation: str = "gelu") -> Layer:
    """The Transformer's feed-forward block split over `axis_name`: up (column-parallel) -> activation
    -> down (row-parallel): x (N..., F) -> y (N..., F), both replicated; one psum forward, one backward.

    Params {"up": {"w": (F, hidden), "b"}, "down": {"w": (hidden, F), "b"}}; specs: `feedforward_rules`."""
    (hidden,) = check_positive("ParallelFeedForward", "hidden", hidden)

    def build(features: int) -> Layer:
        return serial(up=ColumnParallelDense(hidden, axis_name=axis_name), act=Activation(activation),
                      down=RowParallelDense(features, axis_name=axis_name))

    no_state = {"up": {}, "act": {}, "down": {}}

    def init(key, in_shape):
        shape, params, _ = build(in_shape[-1]).init(key, in_shape)
        return shape, params

    def apply(params, x):
        return build(x.shape[-1]).apply(params, no_state, x)[0]

    def vjp(params, x):
        y, _, pullback = build(x.shape[-1]).vjp(params, no_state, x)
        return y, pullback

    return stateless("ParallelFeedForward", init, apply, vjp, decode=no_decode("ParallelFeedForward", "not yet"))


def ParallelAttention(num_heads: int, *, axis_name: str, num_kv_heads: int | None = None,
                      head_dim: int | None = None, is_causal: bool = False) -> Layer:
    """Self-attention with its heads split over `axis_name`: x (N, T, F) replicated -> y (N, T, F)
    replicated. Each shard projects and attends with H / n query heads (K / n key/value heads) and its
    rows of the output projection; the partial outputs are summed (one psum), then b_o added.

    Params (global) {"w_q": (F, H D), "w_k", "w_v": (F, K D), "w_o": (H D, F), "b_o": (F,)}: those of
    `MultiHeadAttention(H, use_bias=False)` plus an output bias; specs: `attention_rules`."""
    name = "ParallelAttention"
    (heads,) = check_positive(name, "num_heads", num_heads)
    (kv_heads,) = check_positive(name, "num_kv_heads", heads if num_kv_heads is None else num_kv_heads)
    whole = MultiHeadAttention(heads, num_kv_heads=kv_heads, head_dim=head_dim, use_bias=False,
                               is_causal=is_causal)

    def local(x) -> Layer:
        n = _shards(name, axis_name, kv_heads, "num_kv_heads")
        return MultiHeadAttention(heads // n, num_kv_heads=kv_heads // n, head_dim=head_dim or x.shape[-1] // heads,
                                  out_features=x.shape[-1], use_bias=False, is_causal=is_causal)

    def init(key, in_shape):
        shape, params, _ = whole.init(key, in_shape)
        return shape, {**params, "b_o": jnp.zeros((in_shape[-1],), jnp.float32)}

    def weights(params) -> PyTree:
        return {k: v for k, v in params.items() if k != "b_o"}

    def apply(params, x):
        partial_y = local(x).apply(weights(params), {}, x)[0]
        return bias_add(lax.psum(partial_y, axis_name), params["b_o"])

    # The heads are independent, so each shard's pullback is MultiHeadAttention's on its heads; x feeds
    # every shard: dx = psum of the shards' dx. db_o = sum(dy); dy reaches every shard unchanged.
    def vjp(params, x):
        partial_y, _, pullback = local(x).vjp(weights(params), {}, x)
        y = bias_add(lax.psum(partial_y, axis_name), params["b_o"])

        def attention_pullback(dy):
            dweights, dx = pullback(dy)
            return {**dweights, "b_o": bias_grad(dy)}, lax.psum(dx, axis_name)

        return y, attention_pullback

    return stateless(name, init, apply, vjp, decode=no_decode(name, "its key/value cache is not sharded yet"))


# ------------------------------------------------------------------------------ partition specs


def attention_rules(axis_name: str, prefix: str = "") -> list[tuple[str, PartitionSpec]]:
    """`partition_specs` rules for a ParallelAttention whose params sit under `prefix` (a path such as
    "blocks/0/attn"; "" matches it anywhere)."""
    return [(rf"{prefix}.*w_[qkv]$" if prefix else r"w_[qkv]$", PartitionSpec(None, axis_name)),
            (rf"{prefix}.*w_o$" if prefix else r"w_o$", PartitionSpec(axis_name, None))]


def feedforward_rules(axis_name: str, prefix: str = "") -> list[tuple[str, PartitionSpec]]:
    """`partition_specs` rules for a ParallelFeedForward (or serial(up=ColumnParallelDense,
    down=RowParallelDense)) whose params sit under `prefix`."""
    start = rf"{prefix}.*" if prefix else ""
    return [(rf"{start}up/w$", PartitionSpec(None, axis_name)), (rf"{start}up/b$", PartitionSpec(axis_name)),
            (rf"{start}down/w$", PartitionSpec(axis_name, None))]


def partition_specs(params: PyTree, rules: Sequence[tuple[str, PartitionSpec]]) -> PyTree:
    """A PartitionSpec per leaf of `params`: the first rule whose regular expression matches (re.search)
    the leaf's path ("blocks/0/attn/w_q"), else replicated (PartitionSpec())."""
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

    def spec_of(path, leaf):
        text = leaf_path(path)
        for pattern, spec in compiled:
            if pattern.search(text):
                if len(spec) > jnp.ndim(leaf):
                    fail("partition_specs", f"rule {pattern.pattern!r} gives {spec} to {text}, of rank "
                                            f"{jnp.ndim(leaf)}")
                return spec
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec_of, params)
