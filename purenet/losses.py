"""Losses with handwritten VJPs with respect to the prediction.

Each factory returns `Loss(apply, vjp, name)`: `apply(pred, target) -> value` (a scalar),
`vjp(pred, target) -> (value, pullback)`, `pullback(g) -> dpred`. `reduction="mean"` averages the
per-item losses, `"sum"` adds them. Targets are data: they get no gradient.

Dimension letters: N batch (any leading dims), T tokens, K classes. Labels are integers in [0, K);
binary targets are probabilities in [0, 1]. Concrete values outside are refused with an error; under
`jit` (traced values cannot be checked) they make that item's loss NaN, so the mistake shows in the loss
(and stops `fit`), as out-of-range ids do in Embedding; they add nothing unusual to the gradient.
`pred` must be an array (the model's `y`, not apply's `(y, state)`); "mean" over an empty batch fails.
Precision: a bfloat16 or float16 `pred` is cast to float32 first (`accumulation_dtype`), so the value,
its logsumexp and its sums are float32; the cotangent comes back in pred's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import numpy as np

from purenet._checks import check_choice, check_range, describe, fail, is_concrete
from purenet.core import Loss
from purenet.ops import accumulation_dtype, logsumexp


class TokenTargets(NamedTuple):
    """Targets of `masked_softmax_cross_entropy`: labels (N, T) int; mask (N, T) bool or float weights."""

    labels: jax.Array
    mask: jax.Array


# ---------------------------------------------------------------------------------------- helpers


def _make_loss(name: str, reduction: str, vjp, *, empty_ok: bool = False) -> Loss:
    """Validate `reduction` and build the Loss; `apply` is the forward half of `vjp`. Both check that
    `pred` is an array and (unless `empty_ok`) that "mean" has items to average."""
    check_choice(name, "reduction", reduction, ("mean", "sum"))

    def checked_vjp(pred, target):
        if not (hasattr(pred, "shape") and hasattr(pred, "dtype")):
            hint = ": pass the model's y, not apply's (y, state)" if isinstance(pred, tuple) else ""
            fail(name, f"pred must be an array, got {describe(pred)}{hint}", TypeError)
        if reduction == "mean" and pred.size == 0 and not empty_ok:
            fail(name, f"reduction='mean' of an empty batch is undefined (0/0), got pred of shape "
                       f"{tuple(pred.shape)}")
        acc = accumulation_dtype(pred) if jnp.issubdtype(pred.dtype, jnp.inexact) else pred.dtype
        if acc == pred.dtype:
            return vjp(pred, target)
        value, pullback = vjp(pred.astype(acc), target)  # bfloat16 logits: the loss in float32
        return value, lambda g: pullback(g).astype(pred.dtype)

    return Loss(lambda pred, target: checked_vjp(pred, target)[0], checked_vjp, name)


def _check_same_shape(name: str, what: str, pred: jax.Array, target: jax.Array) -> None:
    if tuple(target.shape) != tuple(pred.shape):
        fail(name, f"{what} shape must equal the prediction shape {tuple(pred.shape)}, "
                   f"got {what} shape {tuple(target.shape)}")


def _check_labels(name: str, logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim < 1:
        fail(name, f"expected logits of rank >= 1 (N..., K), got shape {tuple(logits.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        fail(name, f"labels must be integers, got dtype {labels.dtype}", TypeError)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        fail(name, f"labels shape must equal logits.shape[:-1] (={tuple(logits.shape[:-1])}), "
                   f"got labels shape {tuple(labels.shape)}")


def _check_label_values(name: str, labels, classes: int, mask=None) -> None:
    """Concrete labels (where `mask` != 0) must lie in [0, classes); traced ones are left to `_or_nan`."""
    if not (is_concrete(labels) and (mask is None or is_concrete(mask))):
        return
    values = np.asarray(labels) if mask is None else np.asarray(labels)[np.asarray(mask) != 0]
    if values.size and (values.min() < 0 or values.max() >= classes):
        fail(name, f"labels must be in [0, {classes}) (the number of classes, logits.shape[-1]), got labels "
                   f"in [{values.min()}, {values.max()}]")


def _or_nan(per_item: jax.Array, valid: jax.Array) -> jax.Array:
    """per_item where `valid`, NaN elsewhere: a traced out-of-range target shows in the loss."""
    return jnp.where(valid, per_item, jnp.nan)


def _in_range(labels: jax.Array, classes: int) -> jax.Array:
    return (labels >= 0) & (labels < classes)


def _picked(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """z[..., label] by a one-hot select (0 for out-of-range labels, never a NaN gather)."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)  # (N..., K)
    return jnp.sum(jnp.where(onehot, logits, 0), axis=-1)  # (N...)


def _softmax_minus_onehot(logits: jax.Array, lse: jax.Array, labels: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)  # (N..., K)
    return jnp.exp(logits - lse) - onehot  # (N..., K)


# ----------------------------------------------------------------------------------------- losses


def mean_squared_error(*, reduction: str = "mean") -> Loss:
    """sum((p - t)^2), divided by the number of elements for "mean": the mean over every element,
    i.e. jnp.mean((p - t)**2) = 2 * mean(optax.l2_loss(p, t)). Shapes: pred, target (N...) -> ().
    `target` is cast to pred's dtype."""
    name = "MeanSquaredError"

    # dp = 2 (p - t) g / count  (count = 1 for "sum").  Residual: the difference p - t.
    def vjp(pred, target):
        target = jnp.asarray(target)
        _check_same_shape(name, "target", pred, target)
        diff = pred - target.astype(pred.dtype)  # (N...)
        count = diff.size if reduction == "mean" else 1
        value = jnp.sum(diff * diff) / count  # ()

        def pullback(g):
            return diff * (2 * jnp.asarray(g, pred.dtype) / count)  # (N...)

        return value, pullback

    return _make_loss(name, reduction, vjp)


def softmax_cross_entropy(*, reduction: str = "mean") -> Loss:
    """Cross-entropy of softmax(logits) against integer labels: logsumexp(z) - z[label] per item.
    Shapes: logits (N..., K), labels (N...) int -> (); "mean" divides by the number of items N...."""
    name = "SoftmaxCrossEntropy"

    # dz = (softmax(z) - onehot(label)) g / count.
    # Residual: logsumexp (N..., 1); softmax and the one-hot are recomputed from logits and labels.
    def vjp(logits, labels):
        labels = jnp.asarray(labels)
        _check_labels(name, logits, labels)
        _check_label_values(name, labels, logits.shape[-1])
        lse = logsumexp(logits)  # (N..., 1)
        count = labels.size if reduction == "mean" else 1
        per_item = _or_nan(lse[..., 0] - _picked(logits, labels), _in_range(labels, logits.shape[-1]))
        value = jnp.sum(per_item) / count  # ()

        def pullback(g):
            return _softmax_minus_onehot(logits, lse, labels) * (jnp.asarray(g, logits.dtype) / count)

        return value, pullback

    return _make_loss(name, reduction, vjp)


def softmax_cross_entropy_with_targets(*, reduction: str = "mean") -> Loss:
    """Cross-entropy against target probabilities (one-hot or soft): -sum(t * log_softmax(z)) per item,
    as optax.softmax_cross_entropy. Shapes: logits, targets (N..., K) -> (); "mean" divides by N....
    `targets` is cast to logits' dtype; rows need not sum to 1 (the gradient uses sum(t))."""
    name = "SoftmaxCrossEntropyWithTargets"

    # dz = (softmax(z) * sum(t) - t) g / count.
    # Residual: logsumexp (N..., 1); softmax and sum(t) are recomputed.
    def vjp(logits, targets):
        targets = jnp.asarray(targets)
        if logits.ndim < 1:
            fail(name, f"expected logits of rank >= 1 (N..., K), got shape {tuple(logits.shape)}")
        _check_same_shape(name, "targets", logits, targets)
        targets = targets.astype(logits.dtype)  # (N..., K)
        lse = logsumexp(logits)  # (N..., 1)
        count = targets.size // targets.shape[-1] if reduction == "mean" else 1
        value = jnp.sum(targets * (lse - logits)) / count  # ()

        def pullback(g):
            total = jnp.sum(targets, axis=-1, keepdims=True)  # (N..., 1)
            scale = jnp.asarray(g, logits.dtype) / count
            return (jnp.exp(logits - lse) * total - targets) * scale  # (N..., K)

        return value, pullback

    return _make_loss(name, reduction, vjp)


def sigmoid_binary_cross_entropy(*, reduction: str = "mean") -> Loss:
    """Binary cross-entropy of sigmoid(z) against targets t in [0, 1], in the stable form
    max(z, 0) - z t + log1p(exp(-|z|)), as optax.sigmoid_binary_cross_entropy.
    Shapes: logits, targets (N...) -> (); "mean" divides by the number of elements. Targets in
    {-1, +1} are refused (map them with (t + 1) / 2)."""
    name = "SigmoidBinaryCrossEntropy"

    # dz = (sigmoid(z) - t) g / count.  Residuals: none beyond the inputs (sigmoid is recomputed).
    def vjp(logits, targets):
        targets = jnp.asarray(targets)
        _check_same_shape(name, "targets", logits, targets)
        if is_concrete(targets) and targets.size and not (0 <= np.min(targets) and np.max(targets) <= 1):
            fail(name, f"targets must be probabilities in [0, 1], got targets in [{np.min(targets)}, "
                       f"{np.max(targets)}] (labels in {{-1, +1}}: pass (t + 1) / 2)")
        targets = targets.astype(logits.dtype)  # (N...)
        count = logits.size if reduction == "mean" else 1
        per_item = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
        value = jnp.sum(_or_nan(per_item, (targets >= 0) & (targets <= 1))) / count  # ()

        def pullback(g):
            return (jax.nn.sigmoid(logits) - targets) * (jnp.asarray(g, logits.dtype) / count)

        return value, pullback

    return _make_loss(name, reduction, vjp)


def masked_softmax_cross_entropy(*, reduction: str = "mean", label_smoothing: float = 0.0) -> Loss:
    """Per-token softmax cross-entropy for sequence models, counting only tokens where mask != 0.
    Shapes: logits (N, T, K), target TokenTargets(labels (N, T) int, mask (N, T) bool/float) -> ().
    "mean": sum(mask * ce) / sum(mask) (a float mask weights tokens); a fully masked batch gives 0
    (and a zero gradient), not 0/0. "sum": sum(mask * ce). Labels under mask 0 are ignored (any int).
    `label_smoothing` e in [0, 1): the target is q = (1 - e) onehot(label) + e / K (optax's
    `smooth_labels`), so ce = logsumexp(z) - (1 - e) z[label] - e mean_k(z)."""
    name = "MaskedSoftmaxCrossEntropy"
    smoothing = check_range(name, "label_smoothing", label_smoothing, lambda e: 0 <= e < 1, "in [0, 1)")

    # dz = (softmax(z) - q) mask g / count  (count: sum(mask), 1 if that is 0 or for "sum"), with
    # q = (1 - e) onehot(label) + e / K: d logsumexp = softmax, d(q . z) = q.
    # Residuals: logsumexp (N, T, 1) and the token weights (N, T); softmax and one-hot recomputed.
    def vjp(logits, target):
        if not isinstance(target, TokenTargets):
            fail(name, f"target must be a TokenTargets(labels, mask), got {type(target).__name__}",
                 TypeError)
        if logits.ndim != 3:
            fail(name, f"expected logits of rank 3 (N, T, K), got shape {tuple(logits.shape)}")
        labels, mask = jnp.asarray(target.labels), jnp.asarray(target.mask)
        _check_labels(name, logits, labels)
        if tuple(mask.shape) != tuple(labels.shape):
            fail(name, f"mask shape must equal labels shape {tuple(labels.shape)}, "
                       f"got mask shape {tuple(mask.shape)}")
        _check_label_values(name, labels, logits.shape[-1], mask)
        weights = mask.astype(logits.dtype)  # (N, T)
        lse = logsumexp(logits)  # (N, T, 1)
        picked = _picked(logits, labels)  # (N, T)
        if smoothing:
            picked = (1 - smoothing) * picked + smoothing * jnp.mean(logits, axis=-1)  # q . z
        per_token = _or_nan(lse[..., 0] - picked, _in_range(labels, logits.shape[-1]))  # (N, T)
        total = jnp.sum(jnp.where(weights != 0, weights * per_token, 0))  # ()
        if reduction == "mean":
            mask_sum = jnp.sum(weights)
            count = jnp.where(mask_sum > 0, mask_sum, 1)  # 0/0 guard: total is 0 then, so value is 0
        else:
            count = 1
        value = total / count  # ()

        def pullback(g):
            scale = jnp.asarray(g, logits.dtype) / count
            if smoothing:
                onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)  # (N, T, K)
                q = (1 - smoothing) * onehot + smoothing / logits.shape[-1]
                return (jnp.exp(logits - lse) - q) * (weights * scale)[..., None]
            return _softmax_minus_onehot(logits, lse, labels) * (weights * scale)[..., None]  # (N, T, K)

        return value, pullback

    return _make_loss(name, reduction, vjp, empty_ok=True)  # an empty batch is fully masked: 0
