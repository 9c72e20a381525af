"""Where a dataset's files come from: the registry, finding them on disk, downloading them.

Each dataset is a :class:`DatasetSpec`: its four file names, the published MD5s, mirrors and
the folders where a system package installs it. A missing file is fetched from the first
mirror that serves it with the published MD5; it gets its final name only once complete and
verified (through :func:`src.files.atomic_write`), so nothing partial is ever found later.

(Not named ``download.py``: the package re-exports the function :func:`download`, which
would shadow a submodule of the same name.)

The registry is read while the config is validated, so this module imports only what the
registry needs; the network and IDX code is imported when something is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from src.errors import DataError
from src.files import atomic_write

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # what `local_roots` are relative to

ROLES: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")


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
    # Folders relative to the project root where a user may have put a copy next to the
    # checkout (the Makefile's DATA default): also preferred to downloading.
    local_roots: tuple[str, ...] = ()
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
    # An offline copy supplied beside the checkout (see ../shared/data/mnist/README.md).
    local_roots=("../shared/data/mnist",),
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


def find_files(spec: DatasetSpec, root: Path, allow_download: bool = True) -> dict[str, Path]:
    """The four files of ``spec`` in ``root`` by role, downloading missing ones if allowed;
    DataError naming the folder and what to put there otherwise. Cheap (no numpy), so the
    entry point calls it before its heavy imports: a missing folder, the commonest first-run
    mistake, is answered at once."""
    root = Path(root).expanduser().absolute()
    files = locate_files(spec, root)
    if len(files) < len(spec.files):
        if allow_download:
            download(spec, root)
            files = locate_files(spec, root)
        else:
            missing = [n for r, n in spec.files.items() if r not in files]
            where = "no such directory" if not root.is_dir() else f"missing {', '.join(missing)}"
            raise DataError(
                f"no {spec.name} files in {root} ({where}): put "
                f"{', '.join(spec.files.values())} there or set data.download=true"
            )
    return files


def default_root(name: str) -> str:
    """Where dataset `name` is read from when `data.root` is null: the first of its
    `system_roots`, then of its `local_roots` (as an absolute path), that holds all four files,
    else `data/<name>` (downloaded there if missing).
    """
    spec = DATASETS[name]
    local = [str((PROJECT_ROOT / root).resolve()) for root in spec.local_roots]
    for root in (*spec.system_roots, *local):
        if len(locate_files(spec, Path(root))) == len(spec.files):
            return root
    return f"data/{name}"


def _put_files_hint(spec: DatasetSpec, root: Path) -> str:
    return f"put {', '.join(spec.files.values())} into {root}"


def _fetch(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Stream ``url`` into ``dest``, which appears only once complete and matching ``md5``."""
    import urllib.request

    from src.data.idx import CHUNK

    def stream(f: BinaryIO) -> None:
        h = hashlib.md5()
        received = 0
        req = urllib.request.Request(url, headers={"User-Agent": "adam-study/0.1"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
        # http.client returns short reads silently when a server hangs up early.
        if length is not None and length.isdigit() and received != int(length):
            raise OSError(f"got {received} of {length} bytes")
        if md5 is not None and h.hexdigest() != md5:
            raise OSError(f"MD5 {h.hexdigest()} != expected {md5}")

    # Also on KeyboardInterrupt, atomic_write removes its temp file: a partial file must never
    # be found later under any name.
    atomic_write(dest, stream, binary=True)


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
    import http.client

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
                _fetch(url, root / name, spec.md5.get(name), timeout)
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


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the interesting part
    text = str(reason if reason is not None and not hasattr(e, "code") else e)
    return " ".join(text.split()) or type(e).__name__
