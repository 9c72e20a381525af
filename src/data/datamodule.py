"""In-memory batches of a dataset, and the LightningDataModule that serves them to a run.

The whole dataset fits in memory (MNIST is 47 MB of uint8), so instead of a per-item
``DataLoader`` the batches are cut by indexing tensors directly; that keeps the step rate of the
small MLP bound by the model, not by Python-level collation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
import torch

from src.data.arrays import MnistArrays, load_arrays
from src.data.idx import DataError
from src.data.sources import DATASETS, download, locate_files

if TYPE_CHECKING:
    from src.config import DataConfig


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
    set up front would write four times the bytes on every run (every run of a comparison
    pays it) and keep four times the memory.

    The arguments are trusted: their ranges are user input, checked once by
    :class:`src.config.DataConfig` (build from it with :meth:`from_config`). Only what needs
    the files, such as ``val_size`` against the number of training images, is checked here.
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
        assert dataset in DATASETS, f"unknown dataset {dataset!r} (DataConfig checks data.name)"
        assert batch_size >= 1 and eval_batch_size >= 1, "DataConfig checks the batch sizes"
        assert limit_train is None or limit_train >= 1, "DataConfig checks data.limit_train"
        assert steps_per_call >= 1, "TrainerConfig checks trainer.steps_per_call"
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

    @classmethod
    def from_config(cls, data: DataConfig, *, seed: int, steps_per_call: int = 1
                    ) -> MNISTDataModule:
        """The datamodule of a run's `data` section (validated by DataConfig), split by `seed`."""
        return cls(data.location(), dataset=data.name, batch_size=data.batch_size,
                   eval_batch_size=data.eval_batch_size, val_size=data.val_size, seed=seed,
                   download=data.download, limit_train=data.limit_train,
                   steps_per_call=steps_per_call)

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
    # Copies either way: the parsed arrays are read-only and shared (see src.data.idx._PARSED).
    images = images[idx] if idx is not None else images.copy()
    labels = labels[idx] if idx is not None else labels
    return (torch.from_numpy(images.reshape(len(images), -1)),
            torch.from_numpy(labels.astype(np.int64)))
