"""Digit canvases for detection and segmentation: 1 to 4 MNIST digits placed at random on a blank
64x64 canvas, with each digit's box and class and a per-pixel class mask. Seeded numpy, deterministic.

A digit's ink is its pixels above `INK` (of 255); its box is the ink's bounding box, normalized to the
canvas as (cx, cy, w, h) in [0, 1]; the mask holds the class of the last digit drawn over each inked
pixel and `BACKGROUND` (10) elsewhere. Digits are drawn with a pixelwise maximum, so strokes that cross
stay visible; two digits' boxes may overlap by at most `max_overlap` of the smaller box's area.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from purenet._checks import check_int, check_range, fail
from purenet.data.sample import load_mnist_or_sample

INK = 76  # of 255 (0.3): a pixel above it is ink (boxes, masks)
BACKGROUND = 10  # the mask's class for pixels without ink
TRIES = 50  # placements tried for one digit before the canvas keeps fewer digits


class Canvases(NamedTuple):
    """images float32 (N, S, S, 1) in [0, 1]; boxes float32 (N, D, 4) normalized (cx, cy, w, h), 0 past
    `counts`; classes int32 (N, D), -1 past `counts`; counts int32 (N,) in [1, D]; masks int32 (N, S, S)
    with digit classes 0..9 and BACKGROUND. D = the most digits a canvas may hold."""

    images: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    masks: np.ndarray


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """A digit's ink bounding box in its own pixels: (row0, col0, row1, col1), ends exclusive."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def _overlap(a, b) -> float:
    """Intersection of two (row0, col0, row1, col1) boxes over the smaller one's area."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(h, 0) * max(w, 0) / smaller


def compose_canvases(images: np.ndarray, labels: np.ndarray, count: int, *, size: int = 64,
                     max_digits: int = 4, max_overlap: float = 0.2, seed: int = 0) -> Canvases:
    """`count` canvases of `size` x `size`, each with 1 to `max_digits` digits (uniform) drawn at
    random from `images` (uint8 (M, h, w), inked; `labels` (M,) in 0..9) and placed at random.

    A digit that finds no place within `max_overlap` after a few tries is left out (the canvas keeps
    at least one digit). Shapes in `Canvases`."""
    name = "compose_canvases"
    images, labels = np.asarray(images), np.asarray(labels)
    check_int(name, "count", count, 1)
    check_int(name, "max_digits", max_digits, 1)
    check_range(name, "max_overlap", max_overlap, lambda v: 0 <= v <= 1, "in [0, 1]")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1] or not len(images):
        fail(name, f"expected uint8 images (M, h, w) and labels (M,), got {images.dtype} {images.shape} and "
                   f"{labels.shape}")
    check_int(name, "size", size, max(images.shape[1:]))
    ink = images > INK  # (M, h, w)
    if not ink.any(axis=(1, 2)).all():
        fail(name, f"every digit needs ink (pixels > {INK}); digit {np.flatnonzero(~ink.any(axis=(1, 2)))[0]} "
                   f"has none")
    h, w = images.shape[1:]
    rng = np.random.default_rng(seed)
    canvases = np.zeros((count, size, size), np.uint8)
    masks = np.full((count, size, size), BACKGROUND, np.int32)
    boxes = np.zeros((count, max_digits, 4), np.float32)
    classes = np.full((count, max_digits), -1, np.int32)
    counts = np.zeros(count, np.int32)
    for n in range(count):
        placed = []  # ink boxes on the canvas (row0, col0, row1, col1)
        for _ in range(rng.integers(1, max_digits + 1)):
            i = rng.integers(len(images))
            r0, c0, r1, c1 = _ink_box(ink[i])
            for _ in range(TRIES):
                top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
                box = (top + r0, left + c0, top + r1, left + c1)
                if all(_overlap(box, other) <= max_overlap for other in placed):
                    break
            else:
                continue
            window = (slice(top, top + h), slice(left, left + w))
            canvases[n][window] = np.maximum(canvases[n][window], images[i])
            masks[n][window] = np.where(ink[i], labels[i], masks[n][window])
            k = len(placed)
            boxes[n, k] = [(box[1] + box[3]) / 2, (box[0] + box[2]) / 2, box[3] - box[1], box[2] - box[0]]
            classes[n, k] = labels[i]
            placed.append(box)
        counts[n] = len(placed)
    boxes /= size
    return Canvases((canvases.astype(np.float32) / 255.0)[..., None], boxes, classes, counts, masks)


def mnist_canvases(num_train: int, num_test: int, *, validation: bool = False, seed: int = 0, data_dir=None,
                   **options) -> tuple[Canvases, Canvases, str]:
    """Train canvases from MNIST's training digits and held-out canvases from its test digits
    (`load_mnist_or_sample`: the shipped sample offline); with `validation`, both from the training
    digits, split 90/10 (held-out canvases from the 10%), for choosing hyperparameters. `options` go to
    `compose_canvases`. -> (train, held-out, a description of the data)."""
    data, source = load_mnist_or_sample(data_dir)
    x, y = data["x_train"], data["y_train"]
    if validation:
        order = np.random.default_rng(seed).permutation(len(y))
        cut = len(y) * 9 // 10
        (x, y), (x_held, y_held) = (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])
        held = f"validation canvases from 10% of its training digits ({len(y_held):,})"
    else:
        x_held, y_held = data["x_test"], data["y_test"]
        held = f"test canvases from its test digits ({len(y_held):,})"
    train = compose_canvases(x, y, num_train, seed=seed, **options)
    held_out = compose_canvases(x_held, y_held, num_test, seed=seed + 1, **options)
    return train, held_out, f"{num_train:,} train canvases from {len(y):,} digits of {source}; {num_test:,} {held}"
