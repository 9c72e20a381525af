"""Tests of src.data: IDX parsing, corruption reports, downloads (no network), batching, splits."""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data import (
    DATASETS,
    FASHION_MNIST,
    MAGIC_IMAGES,
    MAGIC_LABELS,
    MNIST,
    DataError,
    DatasetSpec,
    InMemoryBatches,
    MNISTDataModule,
    download,
    file_md5,
    load_arrays,
    locate_files,
    read_idx,
    unit_scale,
    write_idx,
)

TRAIN_IMAGES = MNIST.files["train_images"]
TRAIN_LABELS = MNIST.files["train_labels"]
TEST_IMAGES = MNIST.files["test_images"]


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Raw uint8 IDX bytes, with an optionally forged magic number."""
    ndim_magic = 0x0800 | array.ndim if magic is None else magic
    header = ndim_magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def spec_for(source: Path, **changes: object) -> DatasetSpec:
    """MNIST with the MD5s of the files in ``source`` and ``source`` as its only mirror."""
    md5 = {name: file_md5(source / name) for name in MNIST.files.values()}
    fields = {"md5": md5, "mirrors": (source.as_uri() + "/",)} | changes
    return dataclasses.replace(MNIST, **fields)


# --------------------------------------------------------------------------- IDX round trip


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


# --------------------------------------------------------------------------- corrupt files


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


def test_unreadable_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


# --------------------------------------------------------------------------- locating files


def test_locate_files_accepts_uncompressed_names(tiny_mnist: Path) -> None:
    raw = tiny_mnist / "train-images-idx3-ubyte"
    write_idx(raw, read_idx(tiny_mnist / TRAIN_IMAGES))
    (tiny_mnist / TRAIN_IMAGES).unlink()
    files = locate_files(MNIST, tiny_mnist)
    assert files["train_images"] == raw and files["train_labels"] == tiny_mnist / TRAIN_LABELS
    arrays = load_arrays(MNIST, tiny_mnist, download=False)
    assert arrays.files["train_images"] == raw
    assert arrays.md5["train_images"] == file_md5(raw)
    assert locate_files(MNIST, tiny_mnist / "nowhere") == {}


def test_no_files_without_download_says_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_arrays(MNIST, tmp_path, download=False)
    text = str(info.value)
    assert f"no MNIST files in {tmp_path}" in text
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in text
    assert text.endswith("or set data.download=true")
    with pytest.raises(DataError, match="no such directory"):
        load_arrays(MNIST, tmp_path / "absent", download=False)


def test_dataset_registry() -> None:
    assert DATASETS == {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}
    for spec in DATASETS.values():
        assert set(spec.files) == {"train_images", "train_labels", "test_images", "test_labels"}
        assert set(spec.md5) == set(spec.files.values())
        assert all(len(h) == 32 for h in spec.md5.values())
        assert all(m.endswith("/") for m in spec.mirrors)


# --------------------------------------------------------------------------- download


def test_download_from_file_mirror_verifies_md5(tiny_mnist: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_mnist)
    dest = tmp_path / "dest" / "nested"
    download(spec, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(spec.files.values())
    for name in spec.files.values():
        assert (dest / name).read_bytes() == (tiny_mnist / name).read_bytes()
    arrays = load_arrays(spec, dest, download=False)
    assert arrays.md5 == {role: spec.md5[name] for role, name in spec.files.items()}


def test_load_arrays_downloads_only_missing_files(tiny_mnist: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_mnist)
    dest = tmp_path / "dest"
    dest.mkdir()
    kept = dest / TRAIN_IMAGES
    kept.write_bytes((tiny_mnist / TRAIN_IMAGES).read_bytes())
    before = kept.stat().st_mtime_ns
    arrays = load_arrays(spec, dest)  # download=True by default
    assert len(arrays.train_images) == 600 and kept.stat().st_mtime_ns == before


def test_md5_mismatch_leaves_nothing(tiny_mnist: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_mnist)
    spec = dataclasses.replace(spec, md5=dict(spec.md5) | {TRAIN_IMAGES: "0" * 32})
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=f"MD5 .* != expected {'0' * 32}"):
        download(spec, dest)
    assert list(dest.iterdir()) == []


def test_first_mirror_failing_falls_back_to_second(tiny_mnist: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_mnist)
    broken = (tmp_path / "no-such-mirror").as_uri() + "/"
    download(spec, tmp_path / "dest", mirrors=[broken, spec.mirrors[0]])
    assert len(locate_files(spec, tmp_path / "dest")) == 4


def test_all_mirrors_failing_says_where_to_put_files(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    mirrors = [(tmp_path / "m1").as_uri() + "/", "notascheme://x/"]
    with pytest.raises(DataError) as info:
        download(MNIST, dest, mirrors=mirrors)
    text = str(info.value)
    assert "every mirror failed" in text and "offline" in text and "\n" not in text
    assert f"put {', '.join(MNIST.files.values())} into {dest} or pass data.root=PATH" in text
    assert list(dest.iterdir()) == []


@pytest.fixture
def truncating_server(tiny_mnist: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that announces the full length but hangs up halfway."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = (tiny_mnist / Path(self.path).name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_truncated_http_download_leaves_nothing(truncating_server: str, tmp_path: Path) -> None:
    # No MD5 known, so only the Content-Length check stands between us and a half file.
    spec = dataclasses.replace(MNIST, md5={}, mirrors=(truncating_server,))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"got \d+ of \d+ bytes"):
        download(spec, dest, timeout=5)
    assert list(dest.iterdir()) == []


def test_interrupted_download_removes_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupting:
        headers: dict[str, str] = {}
        reads = 0

        def __enter__(self) -> Interrupting:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise KeyboardInterrupt
            return b"x" * 100

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupting())
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):
        download(MNIST, dest)
    assert list(dest.iterdir()) == []


# --------------------------------------------------------------------------- InMemoryBatches


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


# --------------------------------------------------------------------------- datamodule


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
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
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
