"""Tests of src.data.idx: the IDX format read and written, and every malformed header refused."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from src.data import MAGIC_IMAGES, MAGIC_LABELS, DataError, file_md5, idx, read_idx, write_idx


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


def test_unreadable_path_says_why_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gz"
    message = rf"^{re.escape(str(missing))}: cannot read: No such file or directory$"
    with pytest.raises(DataError, match=message):
        read_idx(missing)
    with pytest.raises(DataError, match=message):
        file_md5(missing)


def test_raw_idx_named_gz_says_what_it_starts_with(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    expected = (f"{path}: not a gzip file (starts with b'\\x00\\x00\\x08\\x01'); "
                "if it is raw IDX, name it without .gz")
    with pytest.raises(DataError) as refused:
        read_idx(path)
    assert str(refused.value) == expected


@pytest.mark.parametrize(("data", "says"), [
    (b"\0\0\x08", "3 bytes, too short for an IDX header"),
    (b"\0\0\x08\x01", "IDX header truncated (4 bytes, needs 8)"),
    (b"\0\x01\x08\x01" + bytes(4), "bad IDX magic 0x00010801 (not an IDX file)"),
])
def test_headers_cut_short_or_not_starting_with_two_zero_bytes(tmp_path: Path, data: bytes,
                                                               says: str) -> None:
    path = tmp_path / "labels"
    path.write_bytes(data)
    with pytest.raises(DataError) as refused:
        read_idx(path)
    assert str(refused.value) == f"{path}: {says}"


def test_an_expected_magic_of_neither_kind_is_named_idx(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError) as refused:
        read_idx(path, 0x00000C01)
    assert str(refused.value) == f"{path}: bad IDX magic 0x00000801, expected 0x00000c01 (IDX)"


def test_huge_dimensions_are_read_in_full_and_never_overflow(tmp_path: Path) -> None:
    # Every dimension is a whole big-endian uint32: 2**24 + 5 needs all four bytes.
    path = tmp_path / "images"
    dims = (3, 2**24 + 5, 2**32 - 1)
    path.write_bytes(b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(7))
    with pytest.raises(DataError) as refused:
        read_idx(path)
    assert str(refused.value) == (
        f"{path}: payload is 7 bytes but the header (3x16777221x4294967295 uint8) needs "
        f"{3 * (2**24 + 5) * (2**32 - 1)} (truncated)")


def test_parsed_arrays_are_shared_read_only_and_the_oldest_is_forgotten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "_PARSED", OrderedDict())  # this test's own cache
    paths = [tmp_path / f"labels{i}" for i in range(idx._PARSED_MAX + 1)]
    for i, path in enumerate(paths):
        write_idx(path, np.full(3, i, np.uint8))
    first = [read_idx(path) for path in paths[:-1]]  # exactly as many as are kept
    assert not first[0].flags.writeable
    assert read_idx(paths[0]) is first[0]  # still kept, and now the most recent
    last = read_idx(paths[-1])  # one too many: the least recently read (labels1) goes
    assert read_idx(paths[-1]) is last
    assert read_idx(paths[0]) is first[0]
    again = read_idx(paths[1])
    assert again is not first[1]
    np.testing.assert_array_equal(again, first[1])


@pytest.mark.parametrize("array", [np.uint8(7), np.zeros(3, np.uint16), np.zeros(2, bool)],
                         ids=["0-d", "uint16", "bool"])
def test_write_idx_refuses_what_idx_cannot_hold(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "a.gz"
    with pytest.raises(DataError) as refused:
        write_idx(path, array)
    assert str(refused.value) == (
        f"{path}: cannot write {array.dtype} array of shape {array.shape} as IDX")
    assert list(tmp_path.iterdir()) == []


def test_gzip_header_holds_no_name_and_no_time(tmp_path: Path) -> None:
    # What makes the same array give the same bytes: no file name (FNAME), mtime 0, and
    # the extra-flags byte of a default-level stream (2 would be level 9, 4 level 1).
    path = tmp_path / "a.gz"
    write_idx(path, np.arange(100, dtype=np.uint8))
    header = path.read_bytes()[:10]
    assert header[:4] == b"\x1f\x8b\x08\x00"  # deflate, no flags: no FNAME, no comment
    assert header[4:8] == bytes(4)  # mtime
    assert header[8] == 0
