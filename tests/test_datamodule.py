"""Tests of src.data.datamodule: in-memory batches, and the splits and tensors of the datamodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from src.data import MNIST, DataError, InMemoryBatches, MNISTDataModule, unit_scale, write_idx


def _orders(batches: InMemoryBatches, epochs: int) -> list[list[int]]:
    return [torch.cat([y for _, y in batches]).tolist() for _ in range(epochs)]


def test_batches_cover_every_index_once_with_partial_last_batch() -> None:
    x = torch.arange(103, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(103)
    batches = InMemoryBatches(x, y, batch_size=10, shuffle=True, seed=3)
    assert len(batches) == 11
    for order in _orders(batches, 3):
        assert sorted(order) == list(range(103))
    sizes = [len(b) for b, _ in batches]
    assert sizes == [10] * 10 + [3]
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb)  # rows stay paired
    assert len(InMemoryBatches(x, y, batch_size=103)) == 1
    assert len(InMemoryBatches(torch.zeros(55000, 1), torch.zeros(55000), 32)) == 1719


def test_shuffle_is_seeded_per_epoch() -> None:
    x, y = torch.zeros(50, 2), torch.arange(50)
    a = _orders(InMemoryBatches(x, y, 8, shuffle=True, seed=7), 2)
    b = _orders(InMemoryBatches(x, y, 8, shuffle=True, seed=7), 2)
    c = _orders(InMemoryBatches(x, y, 8, shuffle=True, seed=8), 1)
    assert a == b  # same seed -> same order, epoch by epoch
    assert a[0] != a[1]  # a new epoch reshuffles
    assert a[0] != c[0]
    rewound = InMemoryBatches(x, y, 8, shuffle=True, seed=7)
    rewound.set_epoch(1)
    assert _orders(rewound, 1) == [a[1]]


def test_iter_without_consuming_does_not_advance_epoch() -> None:
    # Lightning calls iter() once only to check the loader is iterable.
    batches = InMemoryBatches(torch.zeros(20, 1), torch.arange(20), 4, shuffle=True)
    iter(batches)
    assert batches.epoch == 0
    first = _orders(batches, 1)
    assert first == _orders(InMemoryBatches(torch.zeros(20, 1), torch.arange(20), 4, True), 1)


def test_unshuffled_batches_are_ordered_views() -> None:
    x, y = torch.arange(30.0).reshape(10, 3), torch.arange(10)
    batches = list(InMemoryBatches(x, y, 4))
    assert [b.tolist() for _, b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(xb.data_ptr() == x[4 * i].data_ptr() for i, (xb, _) in enumerate(batches))



def test_datamodule_splits_and_tensors(tiny_mnist: Path) -> None:
    dm = MNISTDataModule(tiny_mnist, val_size=100, batch_size=32, eval_batch_size=64)
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 500, "val": 100, "test": 200}
    assert dm.num_features == 784 and dm.num_classes == 10
    x, y = dm.tensors("train")
    assert x.dtype == torch.float32 and x.shape == (500, 784) and x.is_contiguous()
    assert y.dtype == torch.int64 and x.min() >= 0 and x.max() <= 1
    # Exactly x/255 of the file's pixels.
    tx, _ = dm.tensors("test")
    expected = dm.arrays.test_images.reshape(200, 784).astype(np.float32) / np.float32(255)
    assert torch.equal(tx, torch.from_numpy(expected))
    # Train and val partition the training file.
    vx, _ = dm.tensors("val")
    rows = {r.tobytes() for r in dm.arrays.train_images.reshape(600, -1)}
    train_rows = {r.tobytes() for r in (x.numpy() * 255).round().astype(np.uint8)}
    val_rows = {r.tobytes() for r in (vx.numpy() * 255).round().astype(np.uint8)}
    assert not train_rows & val_rows and train_rows | val_rows == rows
    assert len(dm.train_dataloader()) == 16 and len(dm.val_dataloader()) == 2
    assert len(dm.test_dataloader()) == 4
    before = dm.pixels("train")
    dm.setup("test")  # idempotent
    assert dm.pixels("train") is before
    assert before[0].dtype == torch.uint8  # stored as pixels, scaled batch by batch
    xb, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(xb, tx[:64])


def test_unit_scale_is_keras_scaling_for_every_pixel_value() -> None:
    pixels = np.arange(256, dtype=np.uint8)
    keras = pixels.astype(np.float32) / 255
    assert torch.equal(unit_scale(torch.from_numpy(pixels)), torch.from_numpy(keras))


def test_datamodule_split_is_seeded(tiny_mnist: Path) -> None:
    def val_labels(seed: int) -> list[int]:
        dm = MNISTDataModule(tiny_mnist, val_size=100, seed=seed)
        dm.setup()
        return dm.tensors("val")[1].tolist()

    assert val_labels(1) == val_labels(1)
    assert val_labels(1) != val_labels(2)


def test_datamodule_limit_train_and_bad_val_size(tiny_mnist: Path) -> None:
    dm = MNISTDataModule(tiny_mnist, val_size=100, limit_train=50)
    assert dm.split_sizes() == {"train": 50, "val": 100, "test": 200}
    for val_size in (0, 600):
        with pytest.raises(DataError, match=f"val_size={val_size} must be between 1 and 599"):
            MNISTDataModule(tiny_mnist, val_size=val_size).setup()
    # A dataset name is user input, checked by DataConfig (test_config: data.name=cifar); the
    # datamodule asserts it.
    with pytest.raises(AssertionError, match="unknown dataset 'cifar'"):
        MNISTDataModule(tiny_mnist, dataset="cifar")


def test_datamodule_trains_with_lightning(tiny_mnist: Path) -> None:
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(784, 10)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
            x, y = batch
            self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    dm = MNISTDataModule(tiny_mnist, val_size=100, batch_size=50, download=False)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2 * 10
    assert trainer.callback_metrics["val_acc"] > 0.9


def test_real_datamodule_sizes(real_mnist: Path) -> None:
    dm = MNISTDataModule(real_mnist, download=False)
    assert dm.split_sizes() == {"train": 55000, "val": 5000, "test": 10000}
    assert len(dm.train_dataloader()) == 1719 and len(dm.test_dataloader()) == 10




def write_numbered_mnist(root: Path, n_train: int = 600, n_test: int = 50) -> Path:
    """MNIST files whose image i carries its own index i in its first two pixels."""
    for split, n in (("train", n_train), ("test", n_test)):
        index = np.arange(n)
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0], images[:, 0, 1] = index % 256, index // 256
        write_idx(root / MNIST.files[f"{split}_images"], images)
        write_idx(root / MNIST.files[f"{split}_labels"], (index % 10).astype(np.uint8))
    return root


def _rows(dm: MNISTDataModule, split: str) -> list[int]:
    """Which images of its file a split holds (see write_numbered_mnist)."""
    x = dm.pixels(split)[0].long()
    return (x[:, 0] + 256 * x[:, 1]).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_train_and_validation_never_share_an_image(tmp_path: Path, seed: int) -> None:
    root = write_numbered_mnist(tmp_path)
    full = MNISTDataModule(root, val_size=100, seed=seed, download=False)
    train, val = _rows(full, "train"), _rows(full, "val")
    assert len(set(train)) == len(train) == 500 and len(set(val)) == len(val) == 100
    assert not set(train) & set(val) and set(train) | set(val) == set(range(600))
    for limit in (1, 50, 499, 500, 10_000):
        limited = MNISTDataModule(root, val_size=100, seed=seed, download=False,
                                  limit_train=limit)
        limited_train = _rows(limited, "train")
        assert len(set(limited_train)) == len(limited_train) == min(limit, 500)
        assert not set(limited_train) & set(val)
        assert set(limited_train) <= set(train)
        assert _rows(limited, "val") == val  # limit_train never changes the validation set
