"""Tests of src.data.arrays: a dataset folder loaded, every corrupt or inconsistent file named."""

from __future__ import annotations

import gzip
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from src.data import MNIST, DataError, file_md5, load_arrays, read_idx, write_idx
from tests.test_idx import idx_bytes
from tests.test_sources import spec_for

TRAIN_IMAGES = MNIST.files["train_images"]
TRAIN_LABELS = MNIST.files["train_labels"]
TEST_IMAGES = MNIST.files["test_images"]


def test_real_mnist_parses(real_mnist: Path) -> None:
    arrays = load_arrays(MNIST, real_mnist, download=False)
    assert arrays.train_images.shape == (60000, 28, 28)
    assert arrays.test_images.shape == (10000, 28, 28)
    assert arrays.train_labels.shape == (60000,) and arrays.test_labels.shape == (10000,)
    assert arrays.train_images.dtype == np.uint8
    for labels in (arrays.train_labels, arrays.test_labels):
        assert labels.min() == 0 and labels.max() == 9
    assert arrays.train_images.mean(dtype=np.float64) / 255 == pytest.approx(0.1306605, abs=1e-6)
    # The files used and their checksums are recorded; these three are the published bytes.
    assert set(arrays.files) == set(MNIST.files)
    for role in ("train_labels", "test_images", "test_labels"):
        assert arrays.md5[role] == MNIST.md5[MNIST.files[role]]



def _rewrite_gz(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, mtime=0))


def _zero_crc(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-8] + b"\0\0\0\0" + data[-4:])  # trailer: CRC32, then size


def _labels(root: Path) -> np.ndarray:
    return read_idx(root / TRAIN_LABELS)


def _images(root: Path) -> np.ndarray:
    return read_idx(root / TRAIN_IMAGES)


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # case: (file that must be named, how to break it, what the message must say)
    "truncated gzip": (
        TRAIN_LABELS,
        lambda r: (r / TRAIN_LABELS).write_bytes((r / TRAIN_LABELS).read_bytes()[:-100]),
        "truncated gzip stream",
    ),
    "bad gzip crc": (
        TRAIN_LABELS,
        lambda r: _zero_crc(r / TRAIN_LABELS),
        r"corrupt gzip stream \(CRC check failed",
    ),
    "not gzip": (
        TRAIN_LABELS,
        lambda r: (r / TRAIN_LABELS).write_bytes(idx_bytes(_labels(r))),
        "not a gzip file",
    ),
    "bad magic": (
        TRAIN_LABELS,
        lambda r: _rewrite_gz(r / TRAIN_LABELS, idx_bytes(_labels(r), magic=0)),
        r"bad IDX magic 0x00000000, expected 0x00000801 \(labels\)",
    ),
    "wrong dims (2-D images)": (
        TRAIN_IMAGES,
        lambda r: _rewrite_gz(r / TRAIN_IMAGES, idx_bytes(_images(r).reshape(600, 784))),
        r"bad IDX magic 0x00000802, expected 0x00000803 \(images\)",
    ),
    "header cut short": (
        TRAIN_IMAGES,
        lambda r: _rewrite_gz(r / TRAIN_IMAGES, idx_bytes(_images(r))[:10]),
        "IDX header truncated",
    ),
    "payload too short": (
        TRAIN_IMAGES,
        lambda r: _rewrite_gz(r / TRAIN_IMAGES, idx_bytes(_images(r))[:-5]),
        r"payload is 470395 bytes but the header \(600x28x28 uint8\) needs 470400 \(truncated\)",
    ),
    "payload too long": (
        TRAIN_LABELS,
        lambda r: _rewrite_gz(r / TRAIN_LABELS, idx_bytes(_labels(r)) + b"\0"),
        r"\(trailing bytes\)",
    ),
    "labels typed int32": (
        TRAIN_LABELS,
        lambda r: write_idx(r / TRAIN_LABELS, _labels(r).astype(np.int32)),
        r"bad IDX magic 0x00000c01, expected 0x00000801 \(labels\)",
    ),
    "images typed float32": (
        TRAIN_IMAGES,
        lambda r: write_idx(r / TRAIN_IMAGES, _images(r).astype(np.float32)),
        r"bad IDX magic 0x00000d03, expected 0x00000803 \(images\)",
    ),
    "count mismatch": (
        TRAIN_LABELS,
        lambda r: write_idx(r / TRAIN_LABELS, _labels(r)[:599]),
        "599 labels but 600 images",
    ),
    "label out of range": (
        TRAIN_LABELS,
        lambda r: write_idx(r / TRAIN_LABELS, np.where(np.arange(600) == 3, 12, _labels(r))),
        "label 12 outside 0-9",
    ),
    "image size differs between splits": (
        TEST_IMAGES,
        lambda r: write_idx(r / TEST_IMAGES, read_idx(r / TEST_IMAGES)[:, :, :27]),
        "images are 28x27 but training images",
    ),
    "no images": (
        TRAIN_IMAGES,
        lambda r: (
            write_idx(r / TRAIN_IMAGES, np.zeros((0, 28, 28), np.uint8)),
            write_idx(r / TRAIN_LABELS, np.zeros(0, np.uint8)),
        ),
        "contains 0 images",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_files_raise_one_line_naming_the_file(tiny_mnist: Path, case: str) -> None:
    name, corrupt, message = CORRUPTIONS[case]
    corrupt(tiny_mnist)
    with pytest.raises(DataError, match=message) as info:
        load_arrays(MNIST, tiny_mnist, download=False)
    text = str(info.value)
    assert text.startswith(str(tiny_mnist / name) + ": ")
    assert "\n" not in text



def test_no_files_without_download_says_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_arrays(MNIST, tmp_path, download=False)
    text = str(info.value)
    assert f"no MNIST files in {tmp_path}" in text
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in text
    assert text.endswith("or set data.download=true")
    with pytest.raises(DataError, match="no such directory"):
        load_arrays(MNIST, tmp_path / "absent", download=False)





@pytest.mark.parametrize("split", ["train", "test"])
def test_label_nine_is_accepted_and_ten_refused(tiny_mnist: Path, split: str) -> None:
    # The boundary of 0-9: an off-by-one (labels > num_classes) would let 10 through.
    path = tiny_mnist / MNIST.files[f"{split}_labels"]
    labels = read_idx(path).copy()
    labels[5] = 9
    write_idx(path, labels)
    arrays = load_arrays(MNIST, tiny_mnist, download=False)
    assert getattr(arrays, f"{split}_labels")[5] == 9
    labels[5] = 10
    write_idx(path, labels)
    message = rf"^{re.escape(str(path))}: label 10 outside 0-9 \(at index 5, 1 bad in all\)$"
    with pytest.raises(DataError, match=message):
        load_arrays(MNIST, tiny_mnist, download=False)


def test_files_missing_from_a_folder_are_named(tiny_mnist: Path, tmp_path: Path) -> None:
    for role in ("test_images", "test_labels"):
        (tiny_mnist / MNIST.files[role]).unlink()
    put = ", ".join(MNIST.files.values())
    with pytest.raises(DataError) as partial:
        load_arrays(MNIST, tiny_mnist, download=False)
    assert str(partial.value) == (
        f"no MNIST files in {tiny_mnist} (missing t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz): put {put} there or set data.download=true")
    absent = tmp_path / "absent"
    with pytest.raises(DataError) as nowhere:
        load_arrays(MNIST, absent, download=False)
    assert str(nowhere.value) == (
        f"no MNIST files in {absent} (no such directory): put {put} there or set "
        "data.download=true")


def test_image_sizes_are_quoted_height_by_width(tiny_mnist: Path) -> None:
    train = tiny_mnist / TRAIN_IMAGES
    write_idx(train, read_idx(train)[:, :, :27])
    with pytest.raises(DataError) as refused:
        load_arrays(MNIST, tiny_mnist, download=False)
    assert str(refused.value) == (f"{tiny_mnist / TEST_IMAGES}: images are 28x28 but training "
                                  f"images in {TRAIN_IMAGES} are 28x27")


def test_files_and_md5s_are_recorded_and_a_copy_differing_from_the_published_is_logged(
        tiny_mnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="src.data.arrays")
    arrays = load_arrays(MNIST, tiny_mnist, download=False)
    paths = {role: tiny_mnist / name for role, name in MNIST.files.items()}
    assert arrays.files == paths
    assert arrays.md5 == {role: file_md5(path) for role, path in paths.items()}
    assert sorted(caplog.messages) == sorted(
        f"{paths[role]}: MD5 {arrays.md5[role]} differs from the published {MNIST.md5[name]}"
        " (a local copy; said once)"
        for role, name in MNIST.files.items())
    # Said once per folder and content: loading the same copy again logs nothing.
    caplog.clear()
    load_arrays(MNIST, tiny_mnist, download=False)
    assert caplog.messages == []
    # Matching MD5s are not logged, nor files under another name than the published one.
    load_arrays(spec_for(tiny_mnist), tiny_mnist, download=False)
    assert caplog.messages == []
    other = tmp_path / "other"
    shutil.copytree(tiny_mnist, other, ignore=shutil.ignore_patterns(".*"))  # not the memory
    raw = other / TRAIN_IMAGES.removesuffix(".gz")
    write_idx(raw, read_idx(other / TRAIN_IMAGES))
    (other / TRAIN_IMAGES).unlink()
    load_arrays(MNIST, other, download=False)
    assert len(caplog.messages) == 3 and not any(str(raw) in m for m in caplog.messages)
