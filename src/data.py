"""MNIST-format (IDX) datasets: from files on disk (or a mirror) to in-memory batches.

The whole dataset fits in memory (MNIST is 47 MB of uint8), so instead of a per-item
``DataLoader`` the batches are cut by indexing tensors directly; that keeps the step rate of the
small MLP bound by the model, not by Python-level collation.

Every problem with the data raises :class:`DataError` with a single self-contained line naming
the file or directory, because the CLI prints ``str(err)`` and exits.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.request
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytorch_lightning as pl
import torch

from src.files import atomic_write

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")

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

_CHUNK = 1 << 20


class DataError(Exception):
    """A data problem; ``str(err)`` is one line that names the file/dir and what is wrong."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset in the MNIST IDX layout: where its files live and how to verify downloads."""

    name: str
    files: Mapping[str, str]  # role (see ROLES) -> file name, as published (.gz)
    md5: Mapping[str, str]  # file name -> published MD5; checked for downloads only
    mirrors: tuple[str, ...]
    num_classes: int = 10
    # Folders where a system package installs the files (e.g. Debian's dataset-fashion-mnist):
    # `default_root` prefers them to downloading.
    system_roots: tuple[str, ...] = ()
    # role -> MD5 of the uncompressed IDX bytes: identifies a genuine copy that was re-gzipped
    # (Debian's files differ from the published .gz MD5s but not in content).
    raw_md5: Mapping[str, str] = field(default_factory=dict)


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

MNIST = DatasetSpec(
    name="MNIST",
    files=_MNIST_FILES,
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
)

FASHION_MNIST = DatasetSpec(
    name="Fashion-MNIST",
    files=_MNIST_FILES,
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_roots=("/usr/share/datasets/fashion-mnist",),
    raw_md5={
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
)

DATASETS: dict[str, DatasetSpec] = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}


# --------------------------------------------------------------------------- IDX files


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's bytes."""
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
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
# trains many runs (compare, grid, study) decompresses and parses each file once, ~0.2 s a
# run for MNIST. Keyed by content, never by name or mtime, so an edited file is re-read.
_PARSED: OrderedDict[tuple[str, bool, int | None], np.ndarray] = OrderedDict()
_PARSED_MAX = 8


def _read_idx_with_md5(path: Path, expected_magic: int | None) -> tuple[np.ndarray, str]:
    # Hash the very bytes that get parsed, so the recorded MD5 cannot describe another file
    # version (and the file is read once, not twice).
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

    ``expected_magic`` (e.g. ``MAGIC_LABELS``) turns "some valid IDX file" into "this kind".
    The payload must match the header's size exactly; anything else raises DataError.
    """
    return _read_idx_with_md5(Path(path), expected_magic)[0]


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


# --------------------------------------------------------------------------- locating / download


def _raw_name(name: str) -> str:
    return name.removesuffix(".gz")


def locate_files(spec: DatasetSpec, root: Path) -> dict[str, Path]:
    """Map each role to ``root/<name>`` or, failing that, the uncompressed ``root/<name w/o .gz>``.

    Roles with neither file are absent from the result.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    for role, name in spec.files.items():
        for candidate in (root / name, root / _raw_name(name)):
            if candidate.is_file():
                found[role] = candidate
                break
    return found


def default_root(name: str) -> str:
    """Where dataset `name` is read from when `data.root` is null: the first of its
    `system_roots` that holds all four files, else `data/<name>` (downloaded there if missing).
    """
    spec = DATASETS[name]
    for root in spec.system_roots:
        if len(locate_files(spec, Path(root))) == len(spec.files):
            return root
    return f"data/{name}"


def _put_files_hint(spec: DatasetSpec, root: Path) -> str:
    return f"put {', '.join(spec.files.values())} into {root}"


def _fetch(url: str, dest_dir: Path, name: str, md5: str | None, timeout: float) -> None:
    """Stream ``url`` to a temp file in ``dest_dir``; verify, then rename it to ``name``."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
    ok = False
    try:
        h = hashlib.md5()
        received = 0
        req = urllib.request.Request(url, headers={"User-Agent": "adam-study/0.1"})
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
        # http.client returns short reads silently when a server hangs up early.
        if length is not None and length.isdigit() and received != int(length):
            raise OSError(f"got {received} of {length} bytes")
        if md5 is not None and h.hexdigest() != md5:
            raise OSError(f"MD5 {h.hexdigest()} != expected {md5}")
        os.replace(tmp, dest_dir / name)
        ok = True
    finally:
        # Also on KeyboardInterrupt: a leftover partial file must never be found later.
        if not ok:
            Path(tmp).unlink(missing_ok=True)


def download(
    spec: DatasetSpec,
    root: Path,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30,
) -> None:
    """Download the files of ``spec`` missing from ``root``, trying each mirror in order.

    Downloads are checked against ``spec.md5`` before they get their final name; nothing
    partial or unverified is left behind. Raises DataError if a file is on no mirror.
    """
    root = Path(root).expanduser().absolute()
    mirrors = spec.mirrors if mirrors is None else tuple(mirrors)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{root}: cannot create data directory: {e.strerror or e}") from e
    present = locate_files(spec, root)
    for role, name in spec.files.items():
        if role in present:
            continue
        errors: list[str] = []
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else mirror + "/"
            url += name
            log.info("downloading %s", url)
            try:
                _fetch(url, root, name, spec.md5.get(name), timeout)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                # URLError, HTTPError and timeouts are OSErrors; ValueError is a malformed URL;
                # HTTPException covers protocol errors such as IncompleteRead.
                errors.append(f"{url}: {_reason(e)}")
        else:
            raise DataError(
                f"cannot download {spec.name} file {name}, every mirror failed "
                f"({'; '.join(errors) or 'no mirrors given'}); if offline or the mirrors are "
                f"unreachable, {_put_files_hint(spec, root)} or pass data.root=PATH"
            )


# load_arrays has a `download` flag that shadows the function.
_download = download


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the interesting part
    text = str(reason if reason is not None and not hasattr(e, "code") else e)
    return " ".join(text.split()) or type(e).__name__


# --------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class MnistArrays:
    """The four arrays of a dataset plus which files (and bytes, by MD5) they came from.

    Arrays are read-only views of the file contents.
    """

    train_images: np.ndarray  # (N, H, W) uint8
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray  # (M, H, W) uint8
    test_labels: np.ndarray  # (M,) uint8
    files: dict[str, Path] = field(default_factory=dict)  # role -> path used
    md5: dict[str, str] = field(default_factory=dict)  # role -> MD5 of that file


def load_arrays(spec: DatasetSpec, root: Path, download: bool = True) -> MnistArrays:
    """Load and check the four arrays of ``spec`` from ``root``, downloading missing files."""
    root = Path(root).expanduser().absolute()
    files = locate_files(spec, root)
    if len(files) < len(spec.files):
        if download:
            _download(spec, root)
            files = locate_files(spec, root)
        else:
            missing = [n for r, n in spec.files.items() if r not in files]
            where = "no such directory" if not root.is_dir() else f"missing {', '.join(missing)}"
            raise DataError(
                f"no {spec.name} files in {root} ({where}): put "
                f"{', '.join(spec.files.values())} there or set data.download=true"
            )

    arrays: dict[str, np.ndarray] = {}
    md5: dict[str, str] = {}
    for role, path in files.items():
        magic = MAGIC_IMAGES if role.endswith("images") else MAGIC_LABELS
        arrays[role], md5[role] = _read_idx_with_md5(path, magic)
        published = spec.md5.get(spec.files[role])
        if path.name == spec.files[role] and published and md5[role] != published:
            # Normal for a user-supplied copy (see shared/data/mnist/README.md); logged, not fatal.
            log.info("%s: MD5 %s differs from the published %s", path, md5[role], published)

    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_path, lbl_path = files[f"{split}_images"], files[f"{split}_labels"]
        if len(images) == 0:
            raise DataError(f"{img_path}: contains 0 images")
        if len(labels) != len(images):
            raise DataError(
                f"{lbl_path}: {len(labels)} labels but {len(images)} images in {img_path.name}"
            )
        bad = np.flatnonzero(labels >= spec.num_classes)
        if bad.size:
            raise DataError(
                f"{lbl_path}: label {int(labels[bad[0]])} outside 0-{spec.num_classes - 1} "
                f"(at index {int(bad[0])}, {bad.size} bad in all)"
            )
    train_hw = arrays["train_images"].shape[1:]
    test_hw = arrays["test_images"].shape[1:]
    if train_hw != test_hw:
        raise DataError(
            f"{files['test_images']}: images are {test_hw[0]}x{test_hw[1]} but training images "
            f"in {files['train_images'].name} are {train_hw[0]}x{train_hw[1]}"
        )
    return MnistArrays(**arrays, files=dict(files), md5=md5)


# --------------------------------------------------------------------------- batches


class InMemoryBatches:
    """Batches ``(x[idx], y[idx])`` cut from tensors in memory; an iterable with ``__len__``.

    Shuffling uses its own generator seeded with ``seed + epoch``, so a run's batch order
    depends only on the seed and the epoch, not on global RNG state or what ran before. The
    epoch advances each time an iteration starts (or is set with :meth:`set_epoch`). The last
    partial batch is kept, as in Keras.

    ``transform``, if given, maps each x batch (e.g. uint8 pixels to floats). Otherwise,
    unshuffled batches are views into the stored tensors: do not modify them in place.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator, so the epoch only advances when iteration actually starts: Lightning
        # calls iter() once just to check that the loader is iterable.
        epoch = self.epoch
        self.epoch += 1
        n, bs = len(self.x), self.batch_size
        transform = self.transform or _identity
        if not self.shuffle:
            for start in range(0, n, bs):
                yield transform(self.x[start : start + bs]), self.y[start : start + bs]
            return
        gen = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            yield transform(self.x[idx]), self.y[idx]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def unit_scale(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float32 in [0, 1], bit for bit Keras's ``x.astype("float32") / 255``."""
    return pixels.to(torch.float32).div_(255)


class MNISTDataModule(pl.LightningDataModule):
    """An IDX dataset as float32 (N, H*W) batches in [0, 1] (x/255, no mean/std, as in Keras),
    with a seeded validation split carved out of the training set.

    Pixels stay uint8 in memory and each batch is scaled as it is cut: converting the whole
    set up front wrote 220 MB of floats per run (0.4 s of page faults here, paid by every
    run of a comparison) and kept four times the memory.
    """

    def __init__(
        self,
        root: str | Path,
        dataset: str = "mnist",
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = True,
        limit_train: int | None = None,
        steps_per_call: int = 1,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
        if batch_size < 1 or eval_batch_size < 1:
            raise DataError(
                f"batch sizes must be >= 1 (batch_size={batch_size}, "
                f"eval_batch_size={eval_batch_size})"
            )
        if steps_per_call < 1:
            raise DataError(f"steps_per_call must be >= 1, got {steps_per_call}")
        if limit_train is not None and limit_train < 1:
            raise DataError(f"limit_train must be >= 1 or None, got {limit_train}")
        self.root = Path(root).expanduser()
        self.dataset = dataset
        self.spec = DATASETS[dataset]
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.limit_train = limit_train
        # Training batches come as chunks of this many consecutive minibatches (one gather);
        # the shuffled order of minibatches is the same whatever the chunk size.
        self.steps_per_call = steps_per_call
        self._arrays: MnistArrays | None = None
        self._pixels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        # Lightning's hook for once-per-machine downloads; setup() would do it too if skipped.
        if self.download and len(locate_files(self.spec, self.root)) < len(self.spec.files):
            download(self.spec, self.root)

    def setup(self, stage: str | None = None) -> None:
        if self._arrays is not None:
            return
        arrays = load_arrays(self.spec, self.root, download=self.download)
        n = len(arrays.train_images)
        if not 0 < self.val_size < n:
            raise DataError(
                f"{arrays.files['train_images']}: val_size={self.val_size} must be between 1 "
                f"and {n - 1} (the training file has {n} images)"
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        if self.limit_train is not None:
            train_idx = train_idx[: self.limit_train]
        # Sorted, so the split is a subset in file order (val batches are then file-ordered).
        val_idx, train_idx = np.sort(val_idx), np.sort(train_idx)
        self._pixels = {
            "train": _to_pixels(arrays.train_images, arrays.train_labels, train_idx),
            "val": _to_pixels(arrays.train_images, arrays.train_labels, val_idx),
            "test": _to_pixels(arrays.test_images, arrays.test_labels, None),
        }
        self._arrays = arrays

    @property
    def arrays(self) -> MnistArrays:
        self.setup()
        assert self._arrays is not None
        return self._arrays

    @property
    def num_features(self) -> int:
        h, w = self.arrays.train_images.shape[1:]
        return int(h * w)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def split_sizes(self) -> dict[str, int]:
        self.setup()
        return {k: len(x) for k, (x, _) in self._pixels.items()}

    def pixels(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"`` as stored: uint8 (N, H*W), int64."""
        self.setup()
        return self._pixels[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a split as the model sees it: float32 (N, H*W) in [0, 1], int64 (N,).

        A new float copy of the whole split on every call.
        """
        x, y = self.pixels(split)
        return unit_scale(x), y

    def _batches(self, split: str, batch_size: int, shuffle: bool = False) -> InMemoryBatches:
        x, y = self.pixels(split)
        return InMemoryBatches(x, y, batch_size, shuffle=shuffle, seed=self.seed,
                               transform=unit_scale)

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", self.batch_size * self.steps_per_call, shuffle=True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", self.eval_batch_size)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", self.eval_batch_size)


def _to_pixels(
    images: np.ndarray, labels: np.ndarray, idx: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    # Copies either way: the parsed arrays are read-only and shared (see _PARSED).
    images = images[idx] if idx is not None else images.copy()
    labels = labels[idx] if idx is not None else labels
    return (torch.from_numpy(images.reshape(len(images), -1)),
            torch.from_numpy(labels.astype(np.int64)))
