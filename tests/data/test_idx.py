"""purenet.data.idx: IDX files the tests write (good, corrupt, truncated), by hand and by write_idx."""

import gzip
import re

import numpy as np
import pytest

from purenet.data import read_idx, write_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """Raw uint8 IDX bytes of `array`, built from the format by hand (independently of write_idx)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)


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
