"""Atomic file writes: the one way this project puts a file where a reader may look.

A reader (a second process, a crashed run's successor, the MLflow UI) must never see half a
file under its final name, and a failed write must leave nothing behind. So every write goes
to a temp file in the target's own directory (``os.replace`` is atomic only within one
filesystem) and is renamed over the target once complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _umask() -> int:
    # Linux shows the umask in /proc; elsewhere os.umask can only be read by setting it, which
    # is racy while another thread creates files, so that fallback is the last resort.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO], object],
                 binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it to ``path``.

    Creates the parent folder. The file gets the mode a plain ``open(path, "w")`` would give
    (0666 under the umask, usually 0644), not mkstemp's private 0600, since outputs are meant
    to be read by other users and tools. Text mode is UTF-8 with ``newline=""`` so the csv
    module controls line endings. On any exception, the temp file is removed and the error
    re-raised; an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text_kw: dict = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text_kw) as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
