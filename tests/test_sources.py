"""Tests of src.data.sources: the dataset registry, finding files, downloads (no network)."""

from __future__ import annotations

import dataclasses
import http.server
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.data import (
    DATASETS,
    FASHION_MNIST,
    MNIST,
    DataError,
    DatasetSpec,
    download,
    file_md5,
    load_arrays,
    locate_files,
    read_idx,
    write_idx,
)

TRAIN_IMAGES = MNIST.files["train_images"]
TRAIN_LABELS = MNIST.files["train_labels"]


def spec_for(source: Path, **changes: object) -> DatasetSpec:
    """MNIST with the MD5s of the files in ``source`` and ``source`` as its only mirror."""
    md5 = {name: file_md5(source / name) for name in MNIST.files.values()}
    fields = {"md5": md5, "mirrors": (source.as_uri() + "/",)} | changes
    return dataclasses.replace(MNIST, **fields)



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



def test_dataset_registry() -> None:
    assert DATASETS == {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}
    for spec in DATASETS.values():
        assert set(spec.files) == {"train_images", "train_labels", "test_images", "test_labels"}
        assert set(spec.md5) == set(spec.files.values())
        assert all(len(h) == 32 for h in spec.md5.values())
        assert all(m.endswith("/") for m in spec.mirrors)



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



