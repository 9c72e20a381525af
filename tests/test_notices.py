"""src.notices: a notice is shown once per folder, remembered beside it or else in a cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from src.data import MNIST, load_arrays
from src.notices import MARKER, first_time
from tests.conftest import write_tiny_mnist


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_key_is_new_once_per_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert first_time(a, "k") and not first_time(a, "k")
    assert first_time(a, "other")
    assert first_time(b, "k")  # another folder has not seen it
    assert (a / MARKER).read_text().splitlines() == ["k", "other"]


def test_an_unwritable_folder_is_remembered_in_the_cache(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / MARKER).mkdir()  # the marker cannot be written (even by root)
    assert first_time(folder, "k") and not first_time(folder, "k")
    assert len(list((cache / "adam-study" / "seen").iterdir())) == 1


def test_nowhere_to_write_means_shown_every_time(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / MARKER).mkdir()
    cache.write_text("a file where the cache folder would be")
    assert first_time(folder, "k") and first_time(folder, "k")


def test_the_md5_of_a_local_copy_is_noted_once(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    root = write_tiny_mnist(tmp_path / "mnist")  # not the published bytes
    with caplog.at_level(logging.INFO, logger="src.data.arrays"):
        load_arrays(MNIST, root, download=False)
        first = [r.getMessage() for r in caplog.records if "differs from the published" in
                 r.getMessage()]
        caplog.clear()
        load_arrays(MNIST, root, download=False)
        again = [r.getMessage() for r in caplog.records if "differs" in r.getMessage()]
    assert len(first) == 4 and again == []
    write_tiny_mnist(root, seed=1)  # other bytes: worth saying again
    with caplog.at_level(logging.INFO, logger="src.data.arrays"):
        load_arrays(MNIST, root, download=False)
    assert len([r for r in caplog.records if "differs" in r.getMessage()]) == 4
