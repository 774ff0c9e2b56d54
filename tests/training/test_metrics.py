"""Metrics on small cases whose numbers are worked out by hand; ties; micro F1 == accuracy; jit; errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet.training.metrics import (
    PrecisionRecallF1,
    accuracy,
    confusion_matrix,
    precision_recall_f1,
    top_k_accuracy,
)


def exactly(message):
    return "^" + re.escape(message) + "$"


# Three classes, ten items. Rows = true class, columns = predicted class:
#   true 0: items 0-2 predicted 0, 1, 0      -> [2, 1, 0]
#   true 1: items 3, 4, 9 predicted 1, 2, 0  -> [1, 1, 1]
#   true 2: items 5-8 predicted 2, 2, 0, 2   -> [1, 0, 3]
LABELS = jnp.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
PRED = jnp.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 0])
CONFUSION = [[2, 1, 0], [1, 1, 1], [1, 0, 3]]
# tp = diag = (2, 1, 3); predicted = column sums = (4, 2, 4); actual = row sums = (3, 3, 4).
PRECISION = [2 / 4, 1 / 2, 3 / 4]
RECALL = [2 / 3, 1 / 3, 3 / 4]
F1 = [4 / 7, 2 / 5, 3 / 4]  # 2PR/(P+R): (2/3)/(7/6), (1/3)/(5/6), 0.75


def test_confusion_matrix_rows_true_columns_predicted():
    counts = confusion_matrix(PRED, LABELS, 3)
    np.testing.assert_array_equal(counts, CONFUSION)
    assert counts.shape == (3, 3) and jnp.issubdtype(counts.dtype, jnp.integer)


def test_confusion_matrix_ignores_out_of_range_labels():
    counts = confusion_matrix(jnp.array([0, 1, 2, 1]), jnp.array([0, -1, 3, 1]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_precision_recall_f1_per_class():
    scores = precision_recall_f1(PRED, LABELS, 3, average=None)
    assert isinstance(scores, PrecisionRecallF1)
    np.testing.assert_allclose(scores.precision, PRECISION, rtol=1e-12)
    np.testing.assert_allclose(scores.recall, RECALL, rtol=1e-12)
    np.testing.assert_allclose(scores.f1, F1, rtol=1e-12)


def test_precision_recall_f1_macro():
    precision, recall, f1 = precision_recall_f1(PRED, LABELS, 3)  # macro is the default
    np.testing.assert_allclose(precision, 7 / 12, rtol=1e-12)  # (1/2 + 1/2 + 3/4) / 3
    np.testing.assert_allclose(recall, 7 / 12, rtol=1e-12)  # (2/3 + 1/3 + 3/4) / 3
    np.testing.assert_allclose(f1, 241 / 420, rtol=1e-12)  # (4/7 + 2/5 + 3/4) / 3


def test_precision_recall_f1_micro_is_accuracy():
    scores = precision_recall_f1(PRED, LABELS, 3, average="micro")
    np.testing.assert_allclose(scores, [0.6, 0.6, 0.6], rtol=1e-12)  # 6 of 10 on the diagonal
    np.testing.assert_allclose(accuracy(jax.nn.one_hot(PRED, 3), LABELS), 0.6, rtol=1e-12)


def test_micro_f1_equals_accuracy_on_random_labels():
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.standard_normal((50, 5)))
    labels = jnp.asarray(rng.integers(0, 5, 50))
    micro = precision_recall_f1(jnp.argmax(scores, axis=-1), labels, 5, average="micro")
    np.testing.assert_allclose(micro, [accuracy(scores, labels)] * 3, rtol=1e-12)
    assert 0 < float(micro.f1) < 1


def test_zero_division_gives_zero():
    # labels (0, 1, 1), all predicted 0: counts [[1, 0, 0], [2, 0, 0], [0, 0, 0]].
    # precision (1/3, 0/0 -> 0, 0/0 -> 0); recall (1, 0, 0/0 -> 0); f1 (1/2, 0, 0).
    scores = precision_recall_f1(jnp.array([0, 0, 0]), jnp.array([0, 1, 1]), 3, average=None)
    np.testing.assert_allclose(scores.precision, [1 / 3, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(scores.recall, [1, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(scores.f1, [1 / 2, 0, 0], rtol=1e-12)
    macro = precision_recall_f1(jnp.array([0, 0, 0]), jnp.array([0, 1, 1]), 3)
    np.testing.assert_allclose(macro, [1 / 9, 1 / 3, 1 / 6], rtol=1e-12)  # absent class 2 counts as 0


# Top-k: label ranks (classes ahead: higher score, or equal score with a lower index).
#   row 0: label 2 (0.4), class 1 ahead                 -> rank 1
#   row 1: label 1 (0.3), class 2 higher, class 0 tied  -> rank 2
#   row 2: label 0 (0.2), class 2 higher, class 1 tied but later -> rank 1
#   row 3: label 0 (0.7), none ahead                    -> rank 0
SCORES = jnp.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
TOP_LABELS = jnp.array([2, 1, 0, 0])


@pytest.mark.parametrize("k,expected", [(1, 1 / 4), (2, 3 / 4), (3, 1.0)])
def test_top_k_accuracy_ties_go_to_the_lower_index(k, expected):
    np.testing.assert_allclose(top_k_accuracy(SCORES, TOP_LABELS, k), expected, rtol=1e-12)


def test_top_1_equals_accuracy_with_ties():
    np.testing.assert_allclose(accuracy(SCORES, TOP_LABELS), 1 / 4, rtol=1e-12)  # argmax (1, 2, 2, 0)
    tied = jnp.array([[0.5, 0.5], [0.5, 0.5]])
    assert float(accuracy(tied, jnp.array([0, 1]))) == 0.5  # argmax takes the first of the tie
    assert float(top_k_accuracy(tied, jnp.array([0, 1]), 1)) == 0.5


def test_top_k_out_of_range_label_is_a_miss():
    assert float(top_k_accuracy(SCORES[:2], jnp.array([3, -1]), 3)) == 0.0


def test_metrics_accept_leading_dims():
    scores = SCORES.reshape(2, 2, 3)
    labels = TOP_LABELS.reshape(2, 2)
    np.testing.assert_allclose(top_k_accuracy(scores, labels, 2), 3 / 4, rtol=1e-12)
    np.testing.assert_array_equal(confusion_matrix(PRED.reshape(2, 5), LABELS.reshape(2, 5), 3), CONFUSION)


def test_jit_with_static_arguments():
    @jax.jit
    def all_metrics(scores, labels, pred, truth):
        return (accuracy(scores, labels), top_k_accuracy(scores, labels, 2), confusion_matrix(pred, truth, 3),
                precision_recall_f1(pred, truth, 3), precision_recall_f1(pred, truth, 3, average="micro"))

    acc, top2, counts, macro, micro = all_metrics(SCORES, TOP_LABELS, PRED, LABELS)
    np.testing.assert_allclose([acc, top2], [1 / 4, 3 / 4], rtol=1e-12)
    np.testing.assert_array_equal(counts, CONFUSION)
    np.testing.assert_allclose(macro, [7 / 12, 7 / 12, 241 / 420], rtol=1e-12)
    np.testing.assert_allclose(micro, [0.6, 0.6, 0.6], rtol=1e-12)
    static = jax.jit(precision_recall_f1, static_argnames=("num_classes", "average"))
    np.testing.assert_allclose(static(PRED, LABELS, num_classes=3, average=None).f1, F1, rtol=1e-12)


# -------------------------------------------------------------------------------------- errors


def test_accuracy_labels_shape():
    with pytest.raises(ValueError, match=exactly(
            "accuracy: labels shape must equal scores.shape[:-1] (=(4,)), got labels shape (3,)")):
        accuracy(SCORES, TOP_LABELS[:3])


def test_accuracy_scores_rank():
    with pytest.raises(ValueError, match=exactly(
            "accuracy: expected scores of rank >= 1 (N..., K), got shape ()")):
        accuracy(jnp.zeros(()), jnp.zeros((), jnp.int32))


@pytest.mark.parametrize("k", [0, 4, 1.0, True])
def test_top_k_out_of_range(k):
    with pytest.raises(ValueError, match=exactly(
            f"top_k_accuracy: k must be an integer in [1, 3] (the number of classes), got k={k!r}")):
        top_k_accuracy(SCORES, TOP_LABELS, k)


def test_top_k_labels_shape():
    with pytest.raises(ValueError, match="top_k_accuracy: labels shape must equal scores.shape"):
        top_k_accuracy(SCORES, TOP_LABELS[None], 1)


@pytest.mark.parametrize("num_classes", [0, -2, 2.0])
def test_confusion_matrix_num_classes(num_classes):
    with pytest.raises(ValueError, match=exactly(
            f"confusion_matrix: num_classes must be an integer >= 1, got num_classes={num_classes!r}")):
        confusion_matrix(PRED, LABELS, num_classes)


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match=exactly(
            "confusion_matrix: pred_labels shape must equal labels shape (10,), got pred_labels shape (9,)")):
        confusion_matrix(PRED[:9], LABELS, 3)


def test_confusion_matrix_float_labels():
    with pytest.raises(TypeError, match="confusion_matrix: labels must be integers, got dtype float"):
        confusion_matrix(PRED, LABELS.astype(jnp.float32), 3)


def test_precision_recall_f1_average():
    with pytest.raises(ValueError, match=exactly(
            "precision_recall_f1: average must be 'macro', 'micro' or None, got average='weighted'")):
        precision_recall_f1(PRED, LABELS, 3, average="weighted")
