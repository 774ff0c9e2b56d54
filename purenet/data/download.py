"""MNIST and Fashion-MNIST: opt-in download into a cache, with SHA-256 checks, and the loader.

Nothing here touches the network unless asked (`download=True` or `download_mnist`). A download streams
into a temporary file in the target directory, is checked against the SHA-256 below, and only then is
moved into place with `os.replace`; any failure removes the temporary file.

Checksums and sizes: as listed in tensorflow/datasets' url_checksums for mnist and fashion_mnist.
MNIST mirror: the one torchvision uses; Fashion-MNIST: its authors' (Zalando Research) S3 site.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.request
from typing import NamedTuple

import numpy as np

from purenet._checks import fail
from purenet._files import atomic_write
from purenet.data.idx import read_idx


class RemoteFile(NamedTuple):
    """One archive of a dataset: its file name on the mirror, size in bytes and SHA-256."""

    filename: str
    size: int
    sha256: str


MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
"""dataset -> the base URL its four files are downloaded from."""

# part -> RemoteFile; both datasets use the same four file names.
FILES = {
    "mnist": {
        "x_train": RemoteFile("train-images-idx3-ubyte.gz", 9912422,
                              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "y_train": RemoteFile("train-labels-idx1-ubyte.gz", 28881,
                              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "x_test": RemoteFile("t10k-images-idx3-ubyte.gz", 1648877,
                             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "y_test": RemoteFile("t10k-labels-idx1-ubyte.gz", 4542,
                             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "x_train": RemoteFile("train-images-idx3-ubyte.gz", 26421880,
                              "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "y_train": RemoteFile("train-labels-idx1-ubyte.gz", 29515,
                              "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "x_test": RemoteFile("t10k-images-idx3-ubyte.gz", 4422102,
                             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "y_test": RemoteFile("t10k-labels-idx1-ubyte.gz", 5148,
                             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
}
"""dataset -> part (`x_train`, `y_train`, `x_test`, `y_test`) -> `RemoteFile(name, size, sha256)`."""

CHUNK_BYTES = 1 << 20


def cache_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache root: `data_dir` if given, else $PURENET_DATA_DIR, else $XDG_CACHE_HOME/purenet,
    else ~/.cache/purenet. Not created here."""
    if data_dir is not None:
        return pathlib.Path(data_dir)
    if os.environ.get("PURENET_DATA_DIR"):
        return pathlib.Path(os.environ["PURENET_DATA_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache") / "purenet"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, path: str | os.PathLike, *, sha256: str, timeout: float = 60.0) -> pathlib.Path:
    """Fetch `url` to `path` atomically: stream into a temporary file beside `path`, check the byte count
    against Content-Length (when sent) and the SHA-256, then `os.replace`. On any failure the temporary
    file is removed and the error raised (ValueError for a short transfer or a checksum mismatch)."""
    path = pathlib.Path(path)
    digest, received = hashlib.sha256(), 0
    with atomic_write(path) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        announced = response.headers.get("Content-Length")
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
        if announced is not None and received != int(announced):
            fail("download", f"{url}: transfer interrupted, got {received} of {announced} bytes")
        if digest.hexdigest() != sha256.lower():
            fail("download", f"{url}: SHA-256 mismatch, expected {sha256}, got {digest.hexdigest()} "
                             f"({received} bytes); nothing was written to {path}")
    return path


def _dataset_dir(name: str, data_dir: str | os.PathLike | None) -> pathlib.Path:
    """Where `name`'s files live: `data_dir` itself if given, else <cache root>/<name>."""
    if name not in FILES:
        fail("load_mnist", f"name must be one of {sorted(FILES)}, got name={name!r}")
    return pathlib.Path(data_dir) if data_dir is not None else cache_dir() / name


def download_mnist(name: str = "mnist", *, data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Download the four archives of `name` ("mnist" or "fashion_mnist") that are missing or fail their
    checksum into `data_dir` (default: <cache root>/<name>); return that directory."""
    directory = _dataset_dir(name, data_dir)
    for remote in FILES[name].values():
        target = directory / remote.filename
        if not (target.exists() and sha256_of(target) == remote.sha256):
            download(MIRRORS[name] + remote.filename, target, sha256=remote.sha256)
    return directory


def _find(directory: pathlib.Path, remote: RemoteFile) -> pathlib.Path | None:
    """The user's copy of `remote` in `directory`: gzipped, or raw with either usual raw name."""
    raw = remote.filename.removesuffix(".gz")  # train-images-idx3-ubyte
    for candidate in (remote.filename, raw, raw.replace("-idx", ".idx")):  # ..., train-images.idx3-ubyte
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def load_mnist(name: str = "mnist", *, data_dir: str | os.PathLike | None = None,
               download: bool = False) -> dict[str, np.ndarray]:
    """MNIST or Fashion-MNIST from `data_dir` (default: <cache root>/<name>), downloading the missing
    files first when `download=True`.

    Returns {"x_train": uint8 (60000, 28, 28), "y_train": int32 (60000,), "x_test": uint8
    (10000, 28, 28), "y_test": int32 (10000,)}. Files may be gzipped or raw (the names with `.gz`
    removed). Raises FileNotFoundError, saying how to get them, when some are missing.
    """
    directory = _dataset_dir(name, data_dir)
    if download:
        download_mnist(name, data_dir=directory)
    found = {part: _find(directory, remote) for part, remote in FILES[name].items()}
    missing = [FILES[name][part].filename for part, path in found.items() if path is None]
    if missing:
        fail("load_mnist", f"{name} files not found in {directory}: {', '.join(missing)} (gzipped or "
                           f"raw). Get them with load_mnist({name!r}, download=True) or "
                           f"purenet.data.download_mnist({name!r}) (fetches from {MIRRORS[name]}, SHA-256 "
                           f"checked), or place the four files there yourself (or pass data_dir=..., or set "
                           f"PURENET_DATA_DIR).", FileNotFoundError)
    data = {part: read_idx(path, ndim=3 if part.startswith("x") else 1) for part, path in found.items()}
    for split in ("train", "test"):
        images, labels = data[f"x_{split}"], data[f"y_{split}"]
        if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or labels.dtype != np.uint8:
            fail("load_mnist", f"{found[f'x_{split}']}: expected uint8 images (N, 28, 28) and uint8 "
                               f"labels, got {images.dtype} {images.shape} and {labels.dtype}")
        if len(images) != len(labels):
            fail("load_mnist", f"{split}: {len(images)} images but {len(labels)} labels in {directory}")
        data[f"y_{split}"] = labels.astype(np.int32)
    return data
