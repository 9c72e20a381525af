"""Helpers for tests that start a pipeline as a user would, then stop, kill or watch it.

Every process started here carries a marker in its environment, which its descendants
(forkserver, workers, resource tracker) inherit: `descendants` finds them by it, even after
the process that started them is dead and they have been handed to init.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tests.conftest import REPO

MARK = "ADAM_STUDY_TEST_PROCESS"


def start(args: list[str], store: Path, module: str = "src.train",
          env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.Popen[str]:
    """`python -m <module> args` recording into `store/mlflow.db`, in its own process group
    (so that a test can signal the group as a terminal's Ctrl-C does)."""
    marker = uuid.uuid4().hex
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
                "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), MARK: marker, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _markers[proc.pid] = marker
    return proc


_markers: dict[int, str] = {}  # pid of a process started here → its marker


def descendants(proc: subprocess.Popen[str]) -> dict[int, str]:
    """Live (not zombie) processes carrying `proc`'s marker, `proc` itself included: pid →
    command line."""
    marker = f"{MARK}={_markers[proc.pid]}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z" and marker in environ.split(b"\0"):
            found[int(entry)] = command.decode(errors="replace")[:200]
    return found


def wait_for(condition: Callable[[], object], proc: subprocess.Popen[str] | None = None,
             timeout: float = 180, what: str = "the condition") -> None:
    """Poll `condition` (generous deadline: the test machine is shared); fail early, with its
    stderr, if `proc` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def runs_with_metrics(store: Path) -> int:
    """How many runs of `store/mlflow.db` have logged a whole epoch.

    Plain SQL, read-only and closed at once: opening the store through MLflow while the
    child still creates it would race its schema migration, and the poller must neither
    create the file before the child does nor hold a read transaction open meanwhile.
    """
    db_file = store / "mlflow.db"
    if not db_file.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"{db_file.as_uri()}?mode=ro", uri=True, timeout=1)) as db:
            # A whole epoch logged: val/acc comes at validation end, train/loss just after it.
            return db.execute("SELECT COUNT(*) FROM (SELECT run_uuid FROM metrics "
                              "WHERE key IN ('val/acc', 'train/loss') GROUP BY run_uuid "
                              "HAVING COUNT(DISTINCT key) = 2)").fetchall()[0][0]
    except sqlite3.Error:
        return 0


def workers_of(proc: subprocess.Popen[str]) -> list[int]:
    """The worker processes of a pipeline: children of its forkserver."""
    found = descendants(proc)
    parents = {pid: _ppid(pid) for pid in found}
    servers = [pid for pid, ppid in parents.items()
               if ppid == proc.pid and "forkserver" in found[pid]]
    return [pid for pid, ppid in parents.items() if ppid in servers]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])
