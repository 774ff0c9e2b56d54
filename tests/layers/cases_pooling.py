"""Registry rows: max, average and global pooling."""

import numpy as np

from tests.registry import Case

from purenet.layers.pooling import (AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, MaskedMeanPool, MaxPool1D,
                                    MaxPool2D, MaxPool3D)


def with_lengths(rng, in_shape):
    """Standard-normal x and a padding mask of random lengths, one row with no position kept (output 0)."""
    (n, t, f), _ = in_shape
    lengths = rng.integers(1, t + 1, (n,))
    lengths[-1] = 0
    return rng.standard_normal((n, t, f)), np.arange(t)[None, :] < lengths[:, None]

CASES = [
    # max pooling
    Case("maxpool2d", MaxPool2D, {}, (2, 6, 8, 3), args=(2,)),
    Case("maxpool2d-batch1-odd", MaxPool2D, {"window": (2, 3)}, (1, 7, 9, 2)),
    Case("maxpool2d-overlap", MaxPool2D, {"window": 3, "strides": 2}, (2, 7, 9, 2)),
    Case("maxpool2d-stride-gt-window", MaxPool2D, {"window": 2, "strides": 3}, (2, 7, 8, 1)),
    Case("maxpool2d-same", MaxPool2D, {"window": 3, "strides": 2, "padding": "SAME"}, (2, 7, 9, 2)),
    Case("maxpool2d-explicit", MaxPool2D, {"window": (3, 2), "padding": ((1, 2), (0, 1))}, (2, 5, 6, 2)),
    Case("maxpool1d-overlap", MaxPool1D, {"window": 3, "strides": 2}, (2, 9, 3)),
    Case("maxpool1d-tiled-ragged", MaxPool1D, {"window": 3}, (2, 10, 3)),
    Case("maxpool1d-same", MaxPool1D, {"window": 4, "strides": 3, "padding": "SAME"}, (1, 10, 2)),
    Case("maxpool3d-batch1-overlap-same", MaxPool3D, {"window": (2, 3, 2), "strides": (1, 2, 2), "padding": "SAME"},
         (1, 3, 4, 5, 2)),
    Case("maxpool3d-tiled-ragged", MaxPool3D, {"window": 2}, (2, 3, 4, 5, 1)),
    # average pooling
    Case("avgpool2d", AvgPool2D, {"window": 2}, (2, 6, 8, 3)),
    Case("avgpool2d-overlap-odd", AvgPool2D, {"window": 3, "strides": 2}, (1, 7, 9, 2)),
    Case("avgpool2d-stride-gt-window", AvgPool2D, {"window": (2, 1), "strides": (3, 2)}, (2, 8, 7, 1)),
    Case("avgpool2d-same-incl", AvgPool2D, {"window": 3, "strides": 2, "padding": "SAME"}, (2, 7, 9, 2)),
    Case("avgpool2d-same-excl", AvgPool2D,
         {"window": 3, "strides": 2, "padding": "SAME", "count_include_pad": False}, (2, 7, 9, 2)),
    Case("avgpool2d-explicit-excl", AvgPool2D,
         {"window": (3, 2), "padding": ((2, 1), (1, 0)), "count_include_pad": False}, (2, 5, 6, 2)),
    Case("avgpool1d-same-excl", AvgPool1D,
         {"window": 4, "strides": 3, "padding": "SAME", "count_include_pad": False}, (2, 10, 2)),
    Case("avgpool1d-explicit-incl", AvgPool1D, {"window": 3, "strides": 2, "padding": ((1, 2),)}, (1, 8, 3)),
    Case("avgpool3d-explicit-excl", AvgPool3D,
         {"window": (2, 3, 2), "strides": (1, 2, 1), "padding": ((1, 0), (1, 1), (0, 1)), "count_include_pad": False},
         (1, 3, 4, 5, 2)),
    # global
    Case("globalavgpool-1d", GlobalAvgPool, {}, (2, 7, 3)),
    Case("globalavgpool-2d", GlobalAvgPool, {}, (2, 5, 7, 3)),
    Case("globalavgpool-3d", GlobalAvgPool, {}, (2, 3, 4, 5, 2)),
    # masked mean over a padded sequence
    Case("maskedmeanpool", MaskedMeanPool, {}, ((3, 5, 4), (3, 5)), make_x=with_lengths),
    Case("maskedmeanpool-batch1-t1", MaskedMeanPool, {}, ((1, 1, 2), (1, 1)), make_x=with_lengths),
]
