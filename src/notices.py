"""Notices worth reading once, not on every command: remembered per folder in a small file.

A notice about a folder (e.g. "this local copy's MD5 differs from the published one") is shown
the first time a key is seen for that folder and then remembered: in `<folder>/.adam-study-seen`
when the folder is writable, else (a read-only data folder, as a shared copy often is) in
`$XDG_CACHE_HOME/adam-study/seen/` (default `~/.cache`). Where neither can be written, the
notice is simply shown every time; remembering never fails a run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from src.files import atomic_write

MARKER = ".adam-study-seen"


def _cache_file(folder: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "adam-study" / "seen" / hashlib.sha1(str(folder).encode()).hexdigest()


def _read(path: Path) -> set[str]:
    try:
        return set(path.read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        return set()


def first_time(folder: Path, key: str) -> bool:
    """Whether `key` is new for `folder` (it is remembered from now on).

    Concurrent first calls (the workers of a comparison) may each answer True: a notice is
    then shown twice, never lost.
    """
    folder = Path(folder).expanduser().absolute()
    places = (folder / MARKER, _cache_file(folder))
    if any(key in _read(place) for place in places):
        return False
    for place in places:
        try:
            keys = sorted(_read(place) | {key})
            atomic_write(place, lambda fh, keys=keys: fh.write("".join(f"{k}\n" for k in keys)))
            break
        except OSError:
            continue  # read-only: try the next place
    return True


__all__ = ["MARKER", "first_time"]
