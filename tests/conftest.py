"""Shared fixtures: a tiny learnable MNIST-format dataset, and the real MNIST when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.data import MNIST, write_idx

# The user-supplied offline copy next to the repository (see its README.md).
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared/data/mnist"


def write_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write the four MNIST files (gzipped IDX, 28x28 uint8) with a trivially learnable signal.

    Class c lights the 7x7 block number c of a 4x4 grid over noise, so a small MLP reaches
    high accuracy in a few steps; labels are balanced and shuffled.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            r, k = divmod(int(c), 4)
            images[i, 7 * r : 7 * r + 7, 7 * k : 7 * k + 7] = rng.integers(180, 256, (7, 7))
        write_idx(root / MNIST.files[f"{split}_images"], images)
        write_idx(root / MNIST.files[f"{split}_labels"], labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A directory holding 600 train / 200 test synthetic images under the MNIST file names."""
    return write_tiny_mnist(tmp_path / "mnist")


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST directory; skips the test where it is absent."""
    if not all((SHARED_MNIST / name).is_file() for name in MNIST.files.values()):
        pytest.skip(f"real MNIST not found in {SHARED_MNIST}")
    return SHARED_MNIST
