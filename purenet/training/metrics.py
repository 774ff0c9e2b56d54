"""Classification metrics: plain jnp functions, jit-compatible with `k`, `num_classes`, `average` static.

Dimension letters: N items (any leading dims), K classes. Scores are logits or probabilities (N..., K);
labels are integers (N...). Ties in scores go to the lower class index, as `jnp.argmax` does. Rates are
in JAX's default float dtype (float32, or float64 with x64 enabled).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet._checks import check_int, fail, is_int


class PrecisionRecallF1(NamedTuple):
    """Scalars for average "macro"/"micro"; per-class (K,) arrays for average None."""

    precision: jax.Array
    recall: jax.Array
    f1: jax.Array


def _check_scores(name: str, scores: jax.Array, labels: jax.Array) -> None:
    if scores.ndim < 1:
        fail(name, f"expected scores of rank >= 1 (N..., K), got shape {tuple(scores.shape)}")
    if tuple(labels.shape) != tuple(scores.shape[:-1]):
        fail(name, f"labels shape must equal scores.shape[:-1] (={tuple(scores.shape[:-1])}), "
                   f"got labels shape {tuple(labels.shape)}")


def _check_num_classes(name: str, num_classes) -> None:
    check_int(name, "num_classes", num_classes, 1)


def _divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, numerator / safe, 0.0)


def accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of items whose argmax score (lowest index among ties) equals the label.
    Shapes: scores (N..., K), labels (N...) -> ().

    Examples:
        >>> float(accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]), jnp.array([1, 1, 0])))
        0.6666666...
    """
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    _check_scores("accuracy", scores, labels)
    hits = jnp.argmax(scores, axis=-1) == labels
    return jnp.mean(hits.astype(jnp.result_type(scores.dtype, jnp.float32)))  # scores' precision, at least f32


def top_k_accuracy(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Fraction of items whose label is among the k best classes. Ties rank the lower index first (as
    `lax.top_k`): the label's rank is the number of classes scoring higher, or equal with a lower index,
    and it is a hit when rank < k; k=1 equals `accuracy`. Shapes: scores (N..., K), labels (N...) -> ()."""
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    _check_scores("top_k_accuracy", scores, labels)
    num_classes = scores.shape[-1]
    if not is_int(k) or not 1 <= k <= num_classes:
        fail("top_k_accuracy", f"k must be an integer in [1, {num_classes}] (the number of classes), "
                               f"got k={k!r}")
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)  # (N..., K)
    label_score = jnp.sum(jnp.where(onehot, scores, 0), axis=-1, keepdims=True)  # (N..., 1)
    classes = jnp.arange(num_classes).reshape((1,) * labels.ndim + (num_classes,))  # (1..., K)
    ahead = (scores > label_score) | ((scores == label_score) & (classes < labels[..., None]))  # (N..., K)
    in_range = (labels >= 0) & (labels < num_classes)  # (N...)
    return jnp.mean(((jnp.sum(ahead, axis=-1) < k) & in_range).astype(float))


def confusion_matrix(pred_labels: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """Counts: entry [i, j] is the number of items of true class i predicted as class j (rows = true,
    columns = predicted, as sklearn). Labels outside [0, num_classes) are not counted.
    Shapes: pred_labels, labels (N...) int -> (num_classes, num_classes) int32."""
    pred_labels, labels = jnp.asarray(pred_labels), jnp.asarray(labels)
    _check_num_classes("confusion_matrix", num_classes)
    if tuple(pred_labels.shape) != tuple(labels.shape):
        fail("confusion_matrix", f"pred_labels shape must equal labels shape {tuple(labels.shape)}, "
                                 f"got pred_labels shape {tuple(pred_labels.shape)}")
    for what, array in (("pred_labels", pred_labels), ("labels", labels)):
        if not jnp.issubdtype(array.dtype, jnp.integer):
            fail("confusion_matrix", f"{what} must be integers, got dtype {array.dtype}", TypeError)
    true_onehot = jax.nn.one_hot(labels.reshape(-1), num_classes, dtype=jnp.int32)  # (N, K)
    pred_onehot = jax.nn.one_hot(pred_labels.reshape(-1), num_classes, dtype=jnp.int32)  # (N, K)
    return jnp.einsum("ni,nj->ij", true_onehot, pred_onehot)  # (K, K)


def precision_recall_f1(pred_labels: jax.Array, labels: jax.Array, num_classes: int,
                        average: str | None = "macro") -> PrecisionRecallF1:
    """Precision tp/(tp+fp), recall tp/(tp+fn), F1 2PR/(P+R), each 0 where its denominator is 0
    (sklearn's zero_division=0). "macro": unweighted mean of the per-class values over all num_classes
    classes (absent classes count as 0); "micro": from the summed tp, fp, fn (for single-label
    multiclass all three equal the accuracy); None: per-class (K,) arrays.
    Shapes: pred_labels, labels (N...) int -> PrecisionRecallF1 of scalars (or (K,) arrays)."""
    if average not in ("macro", "micro", None):
        fail("precision_recall_f1", f"average must be 'macro', 'micro' or None, got average={average!r}")
    counts = confusion_matrix(pred_labels, labels, num_classes)  # (K, K)
    true_positive = jnp.diagonal(counts)  # (K,)
    predicted = jnp.sum(counts, axis=0)  # (K,) tp + fp
    actual = jnp.sum(counts, axis=1)  # (K,) tp + fn
    if average == "micro":
        true_positive, predicted, actual = jnp.sum(true_positive), jnp.sum(predicted), jnp.sum(actual)
    precision = _divide(true_positive, predicted)
    recall = _divide(true_positive, actual)
    f1 = _divide(2 * precision * recall, precision + recall)
    if average == "macro":
        return PrecisionRecallF1(jnp.mean(precision), jnp.mean(recall), jnp.mean(f1))
    return PrecisionRecallF1(precision, recall, f1)
