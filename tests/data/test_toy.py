"""purenet.data.toy: the toy sets."""

import numpy as np
import pytest

from purenet.data import four_clusters, regression_1d
from purenet.data.toy import CLUSTER_CENTERS


def test_four_clusters():
    data = four_clusters(101, seed=0, noise=0.1)
    assert data["x"].shape == (101, 2) and data["x"].dtype == np.float32 and data["y"].dtype == np.int32
    assert np.bincount(data["y"]).tolist() == [26, 25, 25, 25]
    centers = np.stack([data["x"][data["y"] == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(centers, CLUSTER_CENTERS, atol=0.1)
    np.testing.assert_array_equal(four_clusters(101, seed=0, noise=0.1)["x"], data["x"])
    assert not np.array_equal(four_clusters(101, seed=1, noise=0.1)["x"], data["x"])


def test_regression_1d():
    data = regression_1d(50, seed=0, noise=0.0)
    assert data["x"].shape == data["y"].shape == (50, 1) and data["y"].dtype == np.float32
    assert np.all(np.abs(data["x"]) <= 1)
    # y = sin(3 x) in float64, then x and y rounded to float32: |error| <= u |y| + 3 u |x| <= 4 u = 2 eps
    np.testing.assert_allclose(data["y"], np.sin(3 * data["x"].astype(np.float64)), rtol=0,
                               atol=2 * np.finfo(np.float32).eps)
    noisy = regression_1d(2000, seed=0, noise=0.1)
    assert 0.08 < np.std(noisy["y"] - np.sin(3 * noisy["x"])) < 0.12


@pytest.mark.parametrize("make", [four_clusters, regression_1d])
def test_toy_sets_validate(make):
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got num_samples=0"):
        make(0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make(10, noise=-1.0)
