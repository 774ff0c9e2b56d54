"""purenet.data.mnist1d: MNIST-1D generated with the network blocked, and its cache."""

import random
import socket
import urllib.request

import numpy as np
import pytest

from purenet.data import load_mnist1d
from purenet.data import mnist1d as mnist1d_module


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_mnist1d_generates_offline_and_caches(tmp_path, no_network, monkeypatch):
    np.random.seed(123)
    random.seed(123)
    global_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    data = load_mnist1d(num_train=40, num_test=15, seed=1, data_dir=tmp_path)
    assert (np.random.random(), random.random()) == global_before  # global RNG states restored
    assert data["x_train"].shape == (40, 40) and data["x_test"].shape == (15, 40)
    assert data["x_train"].dtype == np.float32 and data["y_test"].dtype == np.int32
    assert set(np.concatenate([data["y_train"], data["y_test"]]).tolist()) <= set(range(10))
    assert np.isfinite(data["x_train"]).all() and data["x_train"].std() > 0.1
    (cached,) = tmp_path.iterdir()
    assert cached.suffix == ".npz" and "n60-seed1" in cached.name

    monkeypatch.setattr(mnist1d_module, "_generate", lambda *a: pytest.fail("cache not used"))
    again = load_mnist1d(num_train=40, num_test=15, seed=1, data_dir=tmp_path)
    for part in data:
        np.testing.assert_array_equal(again[part], data[part])


def test_mnist1d_seed_and_no_cache(tmp_path, no_network):
    a = load_mnist1d(num_train=20, num_test=10, seed=0, data_dir=tmp_path, cache=False)
    b = load_mnist1d(num_train=20, num_test=10, seed=2, data_dir=tmp_path, cache=False)
    assert not np.array_equal(a["x_train"], b["x_train"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="load_mnist1d: num_train must be an integer >= 0"):
        load_mnist1d(num_train=-1, cache=False)
