"""purenet.data, offline: IDX files the tests write (good, corrupt, truncated), downloads from file://
URLs, the shipped MNIST sample, MNIST-1D generated with the network blocked, toy sets and batching."""

import gzip
import hashlib
import os
import pathlib
import random
import re
import socket
import urllib.request

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purenet.data
from purenet.data import (batches, cache_dir, four_clusters, load_mnist, load_mnist1d, load_mnist_sample,
                          num_batches, read_idx, regression_1d, write_idx)
from purenet.data import download as download_module
from purenet.data import mnist1d as mnist1d_module
from purenet.data.download import FILES, RemoteFile, download

DATA_DIR = pathlib.Path(purenet.data.__file__).parent


def idx_bytes(array: np.ndarray) -> bytes:
    """Raw uint8 IDX bytes of `array`, built from the format by hand (independently of write_idx)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- IDX


ROUND_TRIP = {"u8-1d": np.arange(7, dtype=np.uint8), "u8-3d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
              "i32": np.arange(-3, 3, dtype=np.int32), "f64": np.linspace(0, 1, 6).reshape(2, 3)}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_idx_round_trip(tmp_path, array, suffix):
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_matches_the_format(tmp_path, images):
    write_idx(tmp_path / "x", images)
    assert (tmp_path / "x").read_bytes() == idx_bytes(images)
    assert (tmp_path / "x").read_bytes()[:8] == bytes.fromhex("00000803 00000005")


def test_idx_gzip_is_detected_by_content_not_name(tmp_path, images):
    (tmp_path / "named-raw").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "named-raw"), images)


BROKEN = {  # name -> (how to break the raw bytes of the 5 x 28 x 28 images, words the error must contain)
    "bad_magic_first_byte": (lambda b: b"\x01" + b[1:], "bad magic number"),
    "bad_type_code": (lambda b: b[:2] + b"\x07" + b[3:], "bad magic number 0x00000703"),
    "zero_dims": (lambda b: b[:3] + b"\x00" + b[4:], "declares 0 dimensions"),
    "truncated_header": (lambda b: b[:10], "truncated header"),
    "truncated_payload": (lambda b: b[:-1], "truncated payload"),
    "oversized": (lambda b: b + b"\x00\x00", "2 unexpected trailing bytes"),
    "dims_disagree_with_payload": (lambda b: b[:4] + np.asarray([5, 28, 27], ">u4").tobytes() + b[16:],
                                   "trailing bytes"),
    "too_short": (lambda b: b[:3], "too short"),
}


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_idx_rejects_broken_files_naming_them(tmp_path, images, case, gzipped):
    breaker, words = BROKEN[case]
    data = breaker(idx_bytes(images))
    path = tmp_path / ("broken.gz" if gzipped else "broken")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(ValueError, match=re.escape(words)) as error:
        read_idx(path)
    assert str(path) in str(error.value) and str(error.value).startswith("read_idx: ")


def test_idx_expected_ndim(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="declares 1 dimensions, expected 3"):
        read_idx(tmp_path / "labels", ndim=3)


def test_idx_rejects_truncated_and_corrupt_gzip(tmp_path, images):
    packed = gzip.compress(idx_bytes(images))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="gzip stream is truncated"):
        read_idx(tmp_path / "cut.gz")
    corrupt = packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:]
    (tmp_path / "corrupt.gz").write_bytes(corrupt)
    with pytest.raises(ValueError, match=r"corrupt.gz: (corrupt gzip stream|gzip stream is truncated)"):
        read_idx(tmp_path / "corrupt.gz")


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="write_idx: unsupported array dtype=complex64"):
        write_idx(tmp_path / "z", np.zeros(2, np.complex64))


# -------------------------------------------------------------------------------------- download


def listing(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def source(tmp_path):
    """A local 'remote' file (bytes, path, file:// URL, sha256)."""
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    path = tmp_path / "remote" / "blob.gz"
    path.parent.mkdir()
    path.write_bytes(data)
    return data, path, path.as_uri(), hashlib.sha256(data).hexdigest()


def test_download_success_creates_directories(tmp_path, source):
    data, _, url, sha = source
    target = tmp_path / "cache" / "deep" / "blob.gz"
    assert download(url, target, sha256=sha) == target
    assert target.read_bytes() == data
    assert listing(target.parent) == ["blob.gz"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, source):
    _, _, url, sha = source
    target = tmp_path / "cache" / "blob.gz"
    wrong = sha[::-1]
    with pytest.raises(ValueError, match=f"SHA-256 mismatch, expected {wrong}"):
        download(url, target, sha256=wrong)
    assert listing(target.parent) == []


def test_download_truncated_source_leaves_nothing_and_keeps_old_file(tmp_path, source):
    data, path, url, sha = source
    path.write_bytes(data[:1000])  # the mirror serves a cut file
    assert len(data) > 1000
    target = tmp_path / "cache" / "blob.gz"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        download(url, target, sha256=sha)
    assert listing(target.parent) == ["blob.gz"] and target.read_bytes() == b"previous"


class CutResponse:
    """A response announcing more bytes than it sends, optionally failing mid-stream."""

    def __init__(self, data, announced, error=None):
        self.chunks, self.error = [data[:100], data[100:200]], error
        self.headers = {"Content-Length": str(announced)}

    def read(self, size):
        if self.chunks:
            return self.chunks.pop(0)
        if self.error:
            raise self.error
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("error", [None, ConnectionResetError("peer reset")])
def test_download_interrupted_transfer_leaves_nothing(tmp_path, source, monkeypatch, error):
    data, _, url, sha = source
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: CutResponse(data, len(data), error))
    target = tmp_path / "cache" / "blob.gz"
    raised, words = (ConnectionResetError, "peer reset") if error else (ValueError, "interrupted, got 200 of")
    with pytest.raises(raised, match=words):
        download(url, target, sha256=sha)
    assert listing(target.parent) == []


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("PURENET_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == pathlib.Path.home() / ".cache" / "purenet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "purenet"
    monkeypatch.setenv("PURENET_DATA_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_checksum_table_is_complete():
    for name in ("mnist", "fashion_mnist"):
        assert set(FILES[name]) == {"x_train", "y_train", "x_test", "y_test"}
        assert all(re.fullmatch("[0-9a-f]{64}", f.sha256) and f.size > 0 for f in FILES[name].values())
        assert purenet.data.MIRRORS[name].endswith("/")


# ------------------------------------------------------------------------------------ load_mnist


def write_mnist(directory: pathlib.Path, *, n_train=6, n_test=4, raw=("y_test",)):
    """Small MNIST-shaped IDX files under the usual names (gzipped, or raw for the parts in `raw`)."""
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    directory.mkdir(parents=True, exist_ok=True)
    for part, array in arrays.items():
        name = FILES["mnist"][part].filename
        write_idx(directory / (name.removesuffix(".gz") if part in raw else name), array)
    return arrays


def test_load_mnist_from_user_files_gz_and_raw(tmp_path):
    arrays = write_mnist(tmp_path, raw=("y_test", "x_test"))
    os.rename(tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-images.idx3-ubyte")  # dotted raw name
    data = load_mnist("mnist", data_dir=tmp_path)
    assert set(data) == {"x_train", "y_train", "x_test", "y_test"}
    for part, array in arrays.items():
        np.testing.assert_array_equal(data[part], array)
    assert data["x_train"].dtype == np.uint8 and data["y_train"].dtype == np.int32


def test_load_mnist_uses_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PURENET_DATA_DIR", str(tmp_path))
    write_mnist(tmp_path / "fashion_mnist")
    assert load_mnist("fashion_mnist")["x_test"].shape == (4, 28, 28)


def test_load_mnist_missing_files_say_how_to_get_them(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz") as error:
        load_mnist("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "download=True" in message and "download_mnist" in message and str(tmp_path) in message


def test_load_mnist_rejects_bad_name_and_inconsistent_files(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        load_mnist("cifar10", data_dir=tmp_path)
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="train: 6 images but 5 labels"):
        load_mnist("mnist", data_dir=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 27, 28), np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 images \(N, 28, 28\)"):
        load_mnist("mnist", data_dir=tmp_path)


def test_load_mnist_download_from_file_mirror(tmp_path, monkeypatch):
    """download=True fetches every file from a (local, file://) mirror, checks it, then loads."""
    arrays = write_mnist(tmp_path / "mirror", raw=())
    table = {part: RemoteFile(f.filename, 0, download_module.sha256_of(tmp_path / "mirror" / f.filename))
             for part, f in FILES["mnist"].items()}
    monkeypatch.setitem(download_module.FILES, "mnist", table)
    monkeypatch.setitem(download_module.MIRRORS, "mnist", (tmp_path / "mirror").as_uri() + "/")
    data = load_mnist("mnist", data_dir=tmp_path / "cache", download=True)
    np.testing.assert_array_equal(data["x_train"], arrays["x_train"])
    assert listing(tmp_path / "cache") == sorted(f.filename for f in table.values())
    # A corrupted cached file is fetched again; a bad mirror file raises and leaves nothing behind.
    (tmp_path / "cache" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    load_mnist("mnist", data_dir=tmp_path / "cache", download=True)
    (tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    (tmp_path / "cache" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        load_mnist("mnist", data_dir=tmp_path / "cache", download=True)
    others = {f.filename for f in table.values()} - {"t10k-labels-idx1-ubyte.gz"}
    assert listing(tmp_path / "cache") == sorted(others)


# ---------------------------------------------------------------------------------- MNIST sample


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


# -------------------------------------------------------------------------------------- MNIST-1D


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
    with pytest.raises(ValueError, match="load_mnist1d: num_train must be a non-negative integer"):
        load_mnist1d(num_train=-1, cache=False)


# ------------------------------------------------------------------------------------------- toy


def test_four_clusters():
    data = four_clusters(101, seed=0, noise=0.1)
    assert data["x"].shape == (101, 2) and data["x"].dtype == np.float32 and data["y"].dtype == np.int32
    assert np.bincount(data["y"]).tolist() == [26, 25, 25, 25]
    centers = np.stack([data["x"][data["y"] == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(centers, purenet.data.toy.CLUSTER_CENTERS, atol=0.1)
    np.testing.assert_array_equal(four_clusters(101, seed=0, noise=0.1)["x"], data["x"])
    assert not np.array_equal(four_clusters(101, seed=1, noise=0.1)["x"], data["x"])


def test_regression_1d():
    data = regression_1d(50, seed=0, noise=0.0)
    assert data["x"].shape == data["y"].shape == (50, 1) and data["y"].dtype == np.float32
    assert np.all(np.abs(data["x"]) <= 1)
    np.testing.assert_allclose(data["y"], np.sin(3 * data["x"]), rtol=1e-6, atol=1e-6)
    noisy = regression_1d(2000, seed=0, noise=0.1)
    assert 0.08 < np.std(noisy["y"] - np.sin(3 * noisy["x"])) < 0.12


@pytest.mark.parametrize("make", [four_clusters, regression_1d])
def test_toy_sets_validate(make):
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got num_samples=0"):
        make(0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make(10, noise=-1.0)


# -------------------------------------------------------------------------------------- batching


def arrays(n):
    return {"x": np.arange(n * 2).reshape(n, 2), "y": np.arange(n)}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 12), drop=st.booleans(),
       shuffle=st.booleans())
def test_batches_cover_every_sample_once(n, batch_size, drop, shuffle):
    out = list(batches(arrays(n), batch_size, seed=5, shuffle=shuffle, drop_remainder=drop))
    assert len(out) == num_batches(n, batch_size, drop_remainder=drop)
    sizes = [len(b["y"]) for b in out]
    assert all(s == batch_size for s in sizes[:-1]) and (not out or 0 < sizes[-1] <= batch_size)
    seen = np.concatenate([b["y"] for b in out]) if out else np.zeros(0, int)
    for b in out:
        np.testing.assert_array_equal(b["x"][:, 0], 2 * b["y"])  # rows stay aligned across keys
    if drop:
        assert len(seen) == n - n % batch_size and len(set(seen.tolist())) == len(seen)
    else:
        assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_batches_remainder():
    assert [len(b["y"]) for b in batches(arrays(10), 4)] == [4, 4, 2]
    assert [len(b["y"]) for b in batches(arrays(10), 4, drop_remainder=True)] == [4, 4]
    assert list(batches(arrays(3), 4, drop_remainder=True)) == []


def test_batches_seeded_per_epoch():
    def order(**kwargs):
        return np.concatenate([b["y"] for b in batches(arrays(50), 7, **kwargs)])

    np.testing.assert_array_equal(order(seed=1, epoch=2), order(seed=1, epoch=2))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=3))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=2, epoch=2))
    assert not np.array_equal(order(seed=1), np.arange(50))


def test_batches_accept_jax_arrays():
    (first, second) = batches({"x": jnp.arange(8.0).reshape(4, 2), "y": jnp.arange(4)}, 2, seed=0)
    np.testing.assert_array_equal(np.asarray(first["x"])[:, 0], 2 * np.asarray(first["y"]))
    assert sorted(np.concatenate([first["y"], second["y"]]).tolist()) == [0, 1, 2, 3]


def test_batches_validate():
    with pytest.raises(ValueError, match="batches: arrays must share their leading length"):
        batches({"x": np.zeros((3, 2)), "y": np.zeros(4)}, 2)  # raises when called, not when iterated
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got batch_size=0"):
        batches(arrays(4), 0)
    with pytest.raises(ValueError, match="non-empty dict"):
        batches({}, 2)
