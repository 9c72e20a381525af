"""How entry points answer the user: one line for a problem they can fix, and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from src.config import ConfigError
from src.data import DataError
from src.tracking import Interrupted, TrackingError, mask_secrets

# Problems in what the user asked for, not bugs: no traceback helps with them.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, TrackingError)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {mask_secrets(message)}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report user errors and interrupts as one line and an exit code (tracebacks stay for bugs)."""
    try:
        yield
    except USER_ERRORS as err:
        fail(str(err))
    except (KeyboardInterrupt, Interrupted) as err:
        fail(f"interrupted ({err or 'Ctrl-C'}); runs so far are recorded in MLflow",
             EXIT_INTERRUPTED)
