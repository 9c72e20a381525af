"""A dataset's four arrays, read from its folder and checked against each other.

Each file on its own is checked by :mod:`src.data.idx`; here the four must also agree: as
many labels as images in each split, every label a class of the dataset, and the same image
size for training and test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.data.idx import MAGIC_IMAGES, MAGIC_LABELS, DataError, read_idx_and_md5
from src.data.sources import DatasetSpec, find_files
from src.notices import first_time

log = logging.getLogger(__name__)


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
    files = find_files(spec, root, download)
    arrays: dict[str, np.ndarray] = {}
    md5: dict[str, str] = {}
    for role, path in files.items():
        magic = MAGIC_IMAGES if role.endswith("images") else MAGIC_LABELS
        arrays[role], md5[role] = read_idx_and_md5(path, magic)
        published = spec.md5.get(spec.files[role])
        if (path.name == spec.files[role] and published and md5[role] != published
                and first_time(root, f"md5 {path.name} {md5[role]}")):
            # Normal for a user-supplied copy (see shared/data/mnist/README.md): logged, not
            # fatal, and once per folder and file content (src.notices), not on every command.
            log.info("%s: MD5 %s differs from the published %s (a local copy; said once)",
                     path, md5[role], published)

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
