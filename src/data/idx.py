"""The IDX file format (LeCun's MNIST layout): parse and validate, write, and a parse cache.

An IDX file is a 4-byte magic number (two zero bytes, a data-type code, the number of
dimensions), one big-endian uint32 per dimension, then the payload in C order. Reading
checks all of it: the magic (in full when the caller says which kind of file it expects),
that the payload is exactly as long as the header says, and the gzip layer around it.

Every problem raises :class:`DataError` with a single self-contained line naming the file,
because the CLI prints ``str(err)`` and exits.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from src.errors import DataError
from src.files import atomic_write

MAGIC_LABELS = 0x00000801  # uint8, 1 dimension
MAGIC_IMAGES = 0x00000803  # uint8, 3 dimensions
_MAGIC_KIND = {MAGIC_LABELS: "labels", MAGIC_IMAGES: "images"}

# IDX type codes (third byte of the magic); multi-byte types are big-endian on disk.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}

CHUNK = 1 << 20  # bytes per read when streaming a file through a hash


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's bytes."""
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e


def _gunzip(path: Path, raw: bytes) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        raise DataError(
            f"{path}: not a gzip file (starts with {raw[:4]!r}); "
            "if it is raw IDX, name it without .gz"
        )
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip stream") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})") from e


def _parse_idx(path: Path, data: bytes, expected_magic: int | None) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    # All four bytes: a labels file typed int32 (0x00000c01) is not a uint8 labels file.
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({_MAGIC_KIND.get(expected_magic, 'IDX')})"
        )
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: bad IDX magic 0x{magic:08x} (not an IDX file)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: IDX header truncated ({len(data)} bytes, needs {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    # Python ints: a corrupt header with huge dims must not overflow into a "match".
    expected = math.prod(dims) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        what = "truncated" if payload < expected else "trailing bytes"
        shape = "x".join(map(str, dims))
        raise DataError(
            f"{path}: payload is {payload} bytes but the header ({shape} {dtype.name}) "
            f"needs {expected} ({what})"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


# Arrays already parsed in this process, by the MD5 of their file's bytes: a worker that
# trains many runs (compare, grid, study) decompresses and parses each file once. Keyed by
# content, never by name or mtime, so an edited file is re-read.
_PARSED: OrderedDict[tuple[str, bool, int | None], np.ndarray] = OrderedDict()
_PARSED_MAX = 8


def read_idx_and_md5(path: Path, expected_magic: int | None = None) -> tuple[np.ndarray, str]:
    """:func:`read_idx`, plus the MD5 of the very bytes that were parsed.

    Hashing what gets parsed means the recorded MD5 cannot describe another version of the
    file (and the file is read once, not twice).
    """
    path = Path(path)
    raw = _read_bytes(path)
    md5 = hashlib.md5(raw).hexdigest()
    gzipped = path.name.endswith(".gz")
    key = (md5, gzipped, expected_magic)
    if key in _PARSED:
        _PARSED.move_to_end(key)
        return _PARSED[key], md5
    array = _parse_idx(path, _gunzip(path, raw) if gzipped else raw, expected_magic)
    array.flags.writeable = False  # shared by every later run of this process
    _PARSED[key] = array
    if len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return array, md5


def read_idx(path: Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``) into a read-only array.

    ``expected_magic`` (e.g. ``MAGIC_LABELS``) turns "some valid IDX file" into "this kind":
    data type and number of dimensions must both match. The payload must match the header's
    size exactly; anything else raises DataError.
    """
    return read_idx_and_md5(Path(path), expected_magic)[0]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as IDX (uint8 for MNIST; other IDX types too), gzipped if ``.gz``.

    Atomic: a reader never sees a half-written file under ``path``.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _DTYPE_CODES or array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{path}: cannot write {array.dtype} array of shape {array.shape} as IDX")
    code = _DTYPE_CODES[native]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()

    def write(f: BinaryIO) -> None:
        if Path(path).name.endswith(".gz"):
            # mtime=0 so the same array always gives the same bytes (and MD5).
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6) as g:
                g.write(header)
                g.write(body)
        else:
            f.write(header)
            f.write(body)

    atomic_write(path, write, binary=True)
