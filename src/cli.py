"""How entry points answer the user: one line for a problem they can fix, and an exit code.

Imported before the config is validated, so nothing heavy here (see src.errors): a refusal
answers without waiting for torch, Lightning or MLflow.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from src.config import ConfigError
from src.errors import DataError, DivergedError, TrackingError, mask_secrets
from src.interrupts import Interrupted, stop_signals

# Problems in what the user asked for, not bugs: no traceback helps with them.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, TrackingError,
                                            DivergedError)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_real_stderr = sys.stderr


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {mask_secrets(message)}", file=_real_stderr, flush=True)
    raise SystemExit(code)


def _restore_stderr() -> None:
    held = sys.stderr
    sys.stderr = _real_stderr
    if isinstance(held, io.StringIO) and held.getvalue():
        _real_stderr.write(held.getvalue())


@contextmanager
def user_errors() -> Iterator[None]:
    """Report user errors and interrupts as one line and an exit code (tracebacks stay for bugs)."""
    _restore_stderr()
    try:
        with stop_signals():
            yield
    except USER_ERRORS as err:
        fail(str(err))
    except (KeyboardInterrupt, Interrupted) as err:
        fail(f"interrupted ({str(err) or 'Ctrl-C'}); runs so far are recorded in MLflow",
             EXIT_INTERRUPTED)


def condense_hydra_error(text: str) -> str:
    """Hydra's composition errors span many lines (+ a HYDRA_FULL_ERROR hint): keep the facts."""
    lines = [line.strip() for line in text.splitlines()]
    if "Traceback (most recent call last):" in text:
        # Hydra failed inside OmegaConf rather than refusing: the last line is the exception.
        last = next(line for line in reversed(lines) if line)
        # OmegaConf cannot set a key below a section that is null in the composed config.
        null_section = (" (is its section null? e.g. compare.* needs +experiment=compare)"
                        if last.endswith("for root: NoneType") else "")
        return f"cannot apply the overrides: {last}{null_section}"
    kept = [line for line in lines if line and not line.startswith((
        "Set the environment variable HYDRA_FULL_ERROR", "full_key:", "reference_type=",
        "object_type=", "Config search path", "provider=", "To append to your config"))]
    summary = "; ".join(kept[:3]) if kept else "invalid configuration"
    if len(kept) > 3 and kept[1].startswith("Available options"):
        summary = f"{kept[0]} (available: {', '.join(kept[2:])})"
    return summary


def hydra_entry(main: Callable[[], object]) -> None:
    """Run a @hydra.main function so that composition errors, too, end as one line.

    Hydra composes the config (and reports bad overrides) before our function runs, printing
    several lines to stderr. stderr is held back until `user_errors` starts the function;
    if Hydra exits first, only a condensed line is shown.
    """
    held = io.StringIO()
    sys.stderr = held
    try:
        main()
    except SystemExit as exit_:
        if sys.stderr is held:
            sys.stderr = _real_stderr
            if exit_.code not in (0, None):
                fail(condense_hydra_error(held.getvalue()), EXIT_USER_ERROR)
            _real_stderr.write(held.getvalue())
        raise
    finally:
        if sys.stderr is held:
            _restore_stderr()
