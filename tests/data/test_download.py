"""purenet.data.download, offline: downloads from file:// URLs (checksums, interrupted and truncated
transfers leave nothing behind), the cache directory, and load_mnist on files the tests write."""

import hashlib
import os
import pathlib
import re
import urllib.request

import numpy as np
import pytest

import purenet.data
from purenet.data import cache_dir, load_mnist, write_idx
from purenet.data import download as download_module
from purenet.data.download import FILES, RemoteFile, download

DATA_DIR = pathlib.Path(purenet.data.__file__).parent


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
