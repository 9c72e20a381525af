"""Stop signals as exceptions, raised only where unwinding is safe.

SIGTERM (a scheduler's or `kill`'s stop) becomes `Interrupted` and SIGINT (Ctrl-C)
`KeyboardInterrupt`, so that every layer unwinds and each MLflow run ends KILLED. Python
would raise them at whatever line happens to run, including inside an SQLite commit: with two
study workers stopped together, an exception landing there left a write transaction open,
and every process then waited out SQLite's busy timeout and failed to close its run
("database is locked"; runs stayed RUNNING). So while the main thread is inside a database
client the exception is postponed: the signal is sent again a moment later, until it lands
outside one.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# Modules in which an exception could cut a transaction in half.
DATABASE_CLIENTS = ("sqlalchemy", "sqlite3", "psycopg", "alembic", "mlflow.store",
                    "optuna.storages")
RETRY_SECONDS = 0.05


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every layer unwinds and records KILLED."""


class _Stop:
    """Whether this process has already raised its stop (a second one would cut the clean-up)."""

    raised = False
    reason: str | None = None  # what `stop_self` gave, said instead of the signal's name


def acknowledge() -> None:
    """A stop arrived another way (Lightning's own SIGTERM exit): do not raise it again."""
    _Stop.raised = True


def inside_database_call(frame: FrameType | None) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(DATABASE_CLIENTS):
            return True
        frame = frame.f_back
    return False


def _handle(signum: int, frame: FrameType | None) -> None:
    if _Stop.raised:
        return  # already unwinding: let the clean-up finish
    if inside_database_call(frame):
        retry = threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), signum))
        retry.daemon = True
        retry.start()
        return
    _Stop.raised = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(stop_reason(signum))


def stop_reason(signum: int) -> str:
    """What stopped this process: `stop_self`'s reason, else the signal's name."""
    return _Stop.reason or f"received signal {signal.Signals(signum).name}"


def stop_self(reason: str) -> None:
    """Stop this process's main thread as SIGTERM would (from any thread), saying `reason`."""
    _Stop.reason = reason
    # To the main thread itself, so that a blocking call it is in returns (EINTR) at once.
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


@contextmanager
def stop_signals(*signums: int) -> Iterator[None]:
    """SIGTERM and SIGINT (or just `signums`) raise, once, outside database calls, for the
    duration."""
    try:
        previous = {s: signal.signal(s, _handle)
                    for s in (signums or (signal.SIGTERM, signal.SIGINT))}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    _Stop.raised = False
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
