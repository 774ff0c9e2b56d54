"""Mixed precision: a `Policy` of three dtypes, and `with_policy(model, policy)`, the same model run under it.

    policy = Policy(param_dtype=jnp.float32, compute_dtype=jnp.bfloat16, output_dtype=jnp.float32)
    model = with_policy(gpt(config), policy)       # a Layer like any other: init, apply, vjp, decode

The parameters stay in `param_dtype` (the float32 master copy the optimizer updates; its state follows
them). Each call casts them and the input's floating-point leaves to `compute_dtype` once, runs the model's
own `apply` / `vjp` there, and casts the output to `output_dtype` (float32 logits, so the loss is float32).
The pullback casts dy to `compute_dtype`, runs the model's pullbacks there, and returns dparams in the
parameters' dtypes and dx in the input's. State (BatchNorm's running statistics) is not cast: it stays in
its own dtype (float32), and the new state comes back in it. Integer leaves (token ids, masks) pass as
they are.

Inside, every layer keeps its operands' dtype and sums in at least float32 (`purenet.ops.accumulation_dtype`):
products accumulate in float32 (`preferred_element_type`), softmax, logsumexp, normalization statistics,
window sums, scatter-adds and losses run in float32 and are cast back (docs/guides/mixed-precision.md
lists what each layer family does). Loss scaling for float16 is in `purenet.optim` (`dynamic_loss_scale`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purenet._checks import fail
from purenet.combinators import checked_apply, checked_init, checked_vjp
from purenet.core import Decode, Layer, PyTree, can_decode, is_differentiable

__all__ = ["Policy", "with_policy", "cast", "cast_like"]


class Policy(NamedTuple):
    """The dtypes of a mixed-precision run: parameters (and their gradients, and the optimizer's state)
    in `param_dtype`, forward and pullback in `compute_dtype`, the model's output in `output_dtype`.
    The default is float32 throughout (no change); `Policy(compute_dtype=jnp.bfloat16)` is the usual
    mixed policy (float32 parameters and output)."""

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32

    def cast_to_param(self, tree: PyTree) -> PyTree:
        """`tree` with its floating-point leaves in `param_dtype` (integer and boolean leaves kept)."""
        return cast(tree, self.param_dtype)

    def cast_to_compute(self, tree: PyTree) -> PyTree:
        """`tree` with its floating-point leaves in `compute_dtype`."""
        return cast(tree, self.compute_dtype)

    def cast_to_output(self, tree: PyTree) -> PyTree:
        """`tree` with its floating-point leaves in `output_dtype`."""
        return cast(tree, self.output_dtype)


def _check_policy(owner: str, policy: Any) -> Policy:
    """`policy` with its dtypes normalized (`jnp.dtype`), failing as `owner` unless it is a Policy of
    three floating-point dtypes."""
    if not isinstance(policy, Policy):
        fail(owner, f"policy must be a purenet.precision.Policy, got {type(policy).__name__} {policy!r:.60}")
    dtypes = []
    for field, value in zip(Policy._fields, policy):
        try:
            dtype = jnp.dtype(value)
        except TypeError:
            dtype = None
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            fail(owner, f"policy.{field} must be a floating-point dtype, got {field}={value!r}")
        dtypes.append(dtype)
    return Policy(*dtypes)


def cast(tree: PyTree, dtype) -> PyTree:
    """`tree` with every floating-point leaf cast to `dtype`; integer, boolean and None leaves kept."""
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if is_differentiable(a) else a, tree)


def cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """`tree` with each floating-point leaf cast to the dtype of the matching leaf of `like` (same tree;
    None leaves, the cotangents of integer inputs, are kept)."""
    return jax.tree_util.tree_map(lambda a, b: a if a is None or not is_differentiable(b) else a.astype(b.dtype),
                                  tree, like, is_leaf=lambda v: v is None)


def with_policy(model: Layer, policy: Policy) -> Layer:
    """`model` computed under `policy` (module docstring): the same params tree, in `param_dtype`.

    Shapes and trees: those of `model`. init casts the params (and floating-point state) to
    `param_dtype`; apply and vjp cast params and x to `compute_dtype` once per call and y to
    `output_dtype`; the pullback takes dy in any float dtype and returns dparams in the params' dtypes
    and dx in x's. Decodes when `model` does (the cache in `compute_dtype`)."""
    if not isinstance(model, Layer):
        fail("with_policy", f"model must be a Layer, got {type(model).__name__} {model!r:.60}")
    policy = _check_policy("with_policy", policy)
    who = f"model {model.name} under {_describe(policy)}"

    def init(key, in_shape):
        out_shape, params, state = checked_init(model.name, who, model, key, in_shape)
        return out_shape, policy.cast_to_param(params), policy.cast_to_param(state)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = checked_apply(model.name, who, model, policy.cast_to_compute(params), state,
                                     policy.cast_to_compute(x), key=key, train=train)
        return policy.cast_to_output(y), cast_like(new_state, state)

    # dparams and dx are the model's own, cast from compute_dtype back to the params' and x's dtypes.
    # Residuals: the model's own (in compute_dtype).
    def vjp(params, state, x, *, key=None, train=False):
        y, new_state, inner = checked_vjp(model.name, who, model, policy.cast_to_compute(params), state,
                                          policy.cast_to_compute(x), key=key, train=train)

        def pullback(dy):
            dparams, dx = inner(policy.cast_to_compute(dy))
            return cast_like(dparams, params), cast_like(dx, x)

        return policy.cast_to_output(y), cast_like(new_state, state), pullback

    def init_cache(params, batch, max_len):
        return model.decode.init_cache(policy.cast_to_compute(params), batch, max_len)

    def step(params, cache, x_t, *, pos):
        y_t, cache = model.decode.step(policy.cast_to_compute(params), cache, policy.cast_to_compute(x_t), pos=pos)
        return policy.cast_to_output(y_t), cache

    decode = Decode(init_cache, step) if can_decode(model) else model.decode
    return Layer(init, apply, vjp, model.name, decode)


def _describe(policy: Policy) -> str:
    return "Policy(" + ", ".join(f"{f}={d.name}" for f, d in zip(Policy._fields, policy)) + ")"
