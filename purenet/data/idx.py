"""IDX files (the MNIST / Fashion-MNIST format), gzipped or raw.

Layout: 2 zero bytes, a type code (0x08 = uint8, ...), the number of dimensions D, then D big-endian
uint32 sizes, then the payload in C order, big-endian. The reader checks every part of that and names the
file in each error; `write_idx` exists so tests can make good and broken files.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from purenet._checks import fail

TYPE_CODES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 8


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        fail("read_idx", f"{os.fspath(path)}: gzip stream is truncated (ends before its end marker)")
    except (OSError, zlib.error) as err:
        fail("read_idx", f"{os.fspath(path)}: corrupt gzip stream ({err})")


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip detected from its first bytes) into a native-endian numpy array.

    Raises ValueError naming `path` for a bad magic number or type code, a wrong number of dimensions
    (when `ndim` is given), a header or payload shorter or longer than the header says, or broken gzip.
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        fail("read_idx", f"{name}: file too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in TYPE_CODES:
        fail("read_idx", f"{name}: bad magic number 0x{data[:4].hex()} (expected 0x0000TTDD, e.g. "
                         f"0x00000803 for uint8 images)")
    dims = data[3]
    if not 1 <= dims <= MAX_DIMS or (ndim is not None and dims != ndim):
        expected = ndim if ndim is not None else f"1..{MAX_DIMS}"
        fail("read_idx", f"{name}: header declares {dims} dimensions, expected {expected}")
    header_len = 4 + 4 * dims
    if len(data) < header_len:
        fail("read_idx", f"{name}: truncated header ({len(data)} of {header_len} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=dims, offset=4))
    dtype = TYPE_CODES[data[2]]
    expected_len = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected_len:
        fail("read_idx", f"{name}: truncated payload: shape {shape} needs {expected_len} bytes, "
                         f"file has {len(data)}")
    if len(data) > expected_len:
        fail("read_idx", f"{name}: {len(data) - expected_len} unexpected trailing bytes after the "
                         f"payload of shape {shape}")
    array = np.frombuffer(data, dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped (reproducibly, mtime 0) when `path` ends in `.gz`."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in TYPE_CODES.items()}
    if array.dtype not in codes or not 1 <= array.ndim <= MAX_DIMS:
        fail("write_idx", f"unsupported array dtype={array.dtype} / ndim={array.ndim}")
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(TYPE_CODES[code]).tobytes()
    if os.fspath(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
