"""purenet.data.canvas: digit canvases with boxes, classes and per-pixel masks, seeded; train and
held-out canvases from disjoint digits."""

import numpy as np
import pytest

from purenet.data import compose_canvases, mnist_canvases
from purenet.data.canvas import BACKGROUND, INK


def bars(count=6, size=12):
    """Hand-made digits: an inked rectangle of a different size in each (M, 12, 12) uint8 image."""
    images = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        images[i, 2:4 + i, 3:5 + i % 3] = 200 + i
    return images, np.arange(count, dtype=np.int32) % 10


def test_boxes_classes_and_masks_agree():
    images, labels = bars()
    c = compose_canvases(images, labels, 40, size=32, max_digits=3, max_overlap=0.0, seed=3)
    assert c.images.shape == (40, 32, 32, 1) and c.images.dtype == np.float32 and c.images.max() <= 1
    assert c.boxes.shape == (40, 3, 4) and c.classes.shape == (40, 3) and c.masks.shape == (40, 32, 32)
    assert 1 <= c.counts.min() and c.counts.max() == 3 and len(set(c.counts.tolist())) == 3
    for n in range(40):
        k = c.counts[n]
        assert np.all(c.classes[n, k:] == -1) and np.all(c.boxes[n, k:] == 0)
        # Disjoint boxes (max_overlap 0): each box holds exactly its digit's inked pixels in the mask.
        inked = np.zeros((32, 32), bool)
        for j in range(k):
            cx, cy, w, h = c.boxes[n, j] * 32
            rows, cols = slice(round(cy - h / 2), round(cy + h / 2)), slice(round(cx - w / 2), round(cx + w / 2))
            assert np.all(c.masks[n][rows, cols] == c.classes[n, j])  # a full rectangle of ink
            assert np.all(c.images[n, rows, cols, 0] > INK / 255)
            inked[rows, cols] = True
        assert np.all(c.masks[n][~inked] == BACKGROUND) and np.all(c.images[n, ~inked, 0] == 0)


def test_seeded_and_overlap_limited():
    images, labels = bars()
    a = compose_canvases(images, labels, 20, size=32, seed=1)
    b = compose_canvases(images, labels, 20, size=32, seed=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, compose_canvases(images, labels, 20, size=32, seed=2).images)
    for n in range(20):  # intersection over the smaller box <= max_overlap (0.2)
        boxes = a.boxes[n, :a.counts[n]] * 32
        lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
        for i in range(len(boxes)):
            for j in range(i):
                inter = np.prod(np.clip(np.minimum(hi[i], hi[j]) - np.maximum(lo[i], lo[j]), 0, None))
                assert inter <= 0.2 * min(np.prod(boxes[i, 2:]), np.prod(boxes[j, 2:])) + 1e-6


def test_mnist_canvases_draw_train_and_held_out_from_disjoint_digits():
    train, test, about = mnist_canvases(6, 4, seed=0)
    assert train.images.shape == (6, 64, 64, 1) and test.masks.shape == (4, 64, 64)
    assert "test digits" in about and "shipped offline MNIST sample" in about
    val_train, val, about = mnist_canvases(6, 4, validation=True, seed=0)
    assert "validation canvases from 10% of its training digits (400)" in about and "3,600 digits" in about
    assert not np.array_equal(val.images, test.images)


def test_errors_name_the_argument():
    images, labels = bars()
    with pytest.raises(ValueError, match=r"compose_canvases: count must be an integer >= 1, got count=0"):
        compose_canvases(images, labels, 0)
    with pytest.raises(ValueError, match=r"compose_canvases: size must be an integer >= 12, got size=8"):
        compose_canvases(images, labels, 2, size=8)
    with pytest.raises(ValueError, match=r"compose_canvases: max_overlap must be in \[0, 1\]"):
        compose_canvases(images, labels, 2, max_overlap=2)
    with pytest.raises(ValueError, match=r"expected uint8 images \(M, h, w\) and labels \(M,\)"):
        compose_canvases(images.astype(np.float32), labels, 2)
    blank = images.copy()
    blank[2] = 0
    with pytest.raises(ValueError, match=r"every digit needs ink \(pixels > 76\); digit 2 has none"):
        compose_canvases(blank, labels, 2)
