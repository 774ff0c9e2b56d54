"""purenet.data.sample: the shipped MNIST sample, its provenance and its seeded split."""

import hashlib
import pathlib
import re

import numpy as np
import pytest

import purenet.data
from purenet.data import load_mnist_sample

DATA_DIR = pathlib.Path(purenet.data.__file__).parent


def test_shipped_sample_matches_its_provenance_note():
    npz_path, note = DATA_DIR / "mnist_sample.npz", (DATA_DIR / "MNIST_SAMPLE.md").read_text()
    recorded = re.search(r"SHA-256 \| `([0-9a-f]{64})`", note).group(1)
    assert hashlib.sha256(npz_path.read_bytes()).hexdigest() == recorded
    assert npz_path.stat().st_size <= 2 * 1024 * 1024
    with np.load(npz_path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["images", "labels"]
        images, labels = npz["images"], npz["labels"]
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0 and 20 < images.mean() < 60  # MNIST's mean is ~33


def test_load_mnist_sample_split():
    data = load_mnist_sample()
    assert data["x_train"].shape == (4000, 28, 28) and data["x_test"].shape == (1000, 28, 28)
    assert data["x_train"].dtype == np.uint8 and data["y_train"].dtype == np.int32
    assert np.bincount(data["y_train"]).tolist() == [400] * 10
    assert np.bincount(data["y_test"]).tolist() == [100] * 10
    train_rows = {row.tobytes() for row in data["x_train"]}
    assert not train_rows & {row.tobytes() for row in data["x_test"]}
    assert len(set(data["y_train"][:20].tolist())) > 1  # shuffled, not sorted by class


def test_load_mnist_sample_is_seeded():
    a, b, c = (load_mnist_sample(num_train=100, num_test=50, seed=s) for s in (3, 3, 4))
    assert np.bincount(a["y_test"]).tolist() == [5] * 10
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    assert not np.array_equal(a["x_train"], c["x_train"])


@pytest.mark.parametrize("kwargs", [{"num_train": 4001}, {"num_test": -10},
                                    {"num_train": 4500, "num_test": 600}])
def test_load_mnist_sample_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="load_mnist_sample: num_"):
        load_mnist_sample(**kwargs)


def test_a_data_dir_that_does_not_exist_fails_instead_of_falling_back(tmp_path):
    from purenet.data import load_mnist_or_sample

    with pytest.raises(FileNotFoundError, match=r"load_mnist_or_sample: data_dir='.*typo' is not a directory"):
        load_mnist_or_sample(tmp_path / "typo")
    data, source = load_mnist_or_sample(tmp_path)  # a directory without the files: the sample, and it says so
    assert source.startswith("the shipped offline MNIST sample") and len(data["y_train"]) == 4000
