"""A worker's tie to the process that started it: when that process dies, the worker stops.

The parent keeps the write end of a pipe (`Lifeline`) and gives each worker the read end;
nothing is ever written. The kernel closes the write end when the parent dies, however it
dies (SIGKILL included), and the worker's watch thread reads end-of-file at once. Then:

    between jobs   the worker exits
    in a job       the job is stopped as SIGTERM would stop it (its MLflow run ends KILLED,
                   a study trial FAIL), and the worker exits as soon as it has unwound

A pipe rather than PR_SET_PDEATHSIG: workers are forked by the forkserver, so their parent
is the forkserver, not the pipeline's process, and the forkserver itself lives on as long
as any worker holds its "alive" pipe. Once the workers are gone, the forkserver and the
resource tracker see their own pipes close and exit too.
"""

from __future__ import annotations

import multiprocessing.context
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection

from src.cli import EXIT_INTERRUPTED
from src.interrupts import stop_self

PARENT_GONE = "the pipeline's parent process is gone"


class Lifeline:
    """The parent's side: a pipe whose read end (`reader`) goes to every worker."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        # Both ends are close-on-exec: no other program started from here holds the writer.
        self.reader, self._writer = context.Pipe(duplex=False)

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class _Worker:
    """This worker's state: whether the parent is gone, and whether a job is under way."""

    orphaned = threading.Event()
    busy = threading.Lock()


def _exit() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)  # no clean-up left: the parent that would collect it is gone


def _watch(reader: Connection) -> None:
    with suppress(EOFError, OSError):
        reader.recv_bytes()  # nothing is ever sent: this returns only at end-of-file
    _Worker.orphaned.set()
    if _Worker.busy.acquire(blocking=False):
        _exit()  # between jobs
    stop_self(PARENT_GONE)  # the job unwinds; `job` exits once it has


def watch_parent(reader: Connection) -> None:
    """In a worker, at its start: watch the parent's pipe from a daemon thread."""
    threading.Thread(target=_watch, args=(reader,), name="lifeline", daemon=True).start()


@contextmanager
def job() -> Iterator[None]:
    """Around one job of a worker: the worker exits instead of starting it if the parent is
    gone, and after it if the parent died during it."""
    with _Worker.busy:
        if _Worker.orphaned.is_set():
            _exit()
        try:
            yield
        finally:
            if _Worker.orphaned.is_set():
                _exit()


__all__ = ["PARENT_GONE", "Lifeline", "job", "watch_parent"]
