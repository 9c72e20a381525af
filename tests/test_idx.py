"""Tests of src.data.idx: the IDX format read and written, and every malformed header refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from src.data import MAGIC_IMAGES, MAGIC_LABELS, DataError, file_md5, read_idx, write_idx


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Raw uint8 IDX bytes, with an optionally forged magic number."""
    ndim_magic = 0x0800 | array.ndim if magic is None else magic
    header = ndim_magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()



@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte"])
@pytest.mark.parametrize("shape", [(7,), (5, 4, 3)])
def test_write_read_round_trip(tmp_path: Path, name: str, shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    write_idx(tmp_path / name, arr)
    out = read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert list(tmp_path.iterdir()) == [tmp_path / name]  # no temp file left behind
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")


def test_write_idx_is_deterministic_and_supports_other_types(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert file_md5(tmp_path / "a.gz") == file_md5(tmp_path / "b.gz")
    floats = np.linspace(-1, 1, 6, dtype=np.float32)
    write_idx(tmp_path / "f", floats)  # big-endian on disk, native after reading
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), floats)


def test_read_idx_checks_expected_magic(tmp_path: Path) -> None:
    write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    assert read_idx(tmp_path / "l", MAGIC_LABELS).shape == (3,)
    with pytest.raises(DataError, match=r"bad IDX magic 0x00000801, expected 0x00000803 \(images"):
        read_idx(tmp_path / "l", MAGIC_IMAGES)



def test_unreadable_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")



# IDX data types other than uint8 (MNIST's), by their type code: the third byte of the magic.
OTHER_TYPES = {0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
               0x0E: np.float64}


@pytest.mark.parametrize("code", sorted(OTHER_TYPES), ids=hex)
def test_labels_of_another_data_type_are_refused(tmp_path: Path, code: int) -> None:
    # A well-formed IDX file with MNIST's labels shape, typed e.g. int32 (magic 0x00000c01):
    # a valid IDX file, but not a labels file. The whole magic is compared, not only ndim.
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(10).astype(OTHER_TYPES[code]))
    assert read_idx(path).dtype == OTHER_TYPES[code]  # as "some IDX file" it parses
    where = re.escape(str(path))
    message = rf"^{where}: bad IDX magic 0x0000{code:02x}01, expected 0x00000801 \(labels\)$"
    with pytest.raises(DataError, match=message):
        read_idx(path, MAGIC_LABELS)


@pytest.mark.parametrize("code", [0x00, 0x01, 0x07, 0x0A, 0x0F, 0x80, 0xFF], ids=hex)
@pytest.mark.parametrize("expected", [None, MAGIC_LABELS], ids=["any IDX", "labels"])
def test_unknown_data_type_codes_are_refused(tmp_path: Path, code: int,
                                             expected: int | None) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8), magic=code << 8 | 1))
    where = re.escape(str(path))
    with pytest.raises(DataError, match=rf"^{where}: bad IDX magic 0x0000{code:02x}01"):
        read_idx(path, expected)
