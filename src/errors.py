"""Failures the user can fix, as the user sees them: their exception classes, secrets masked.

Every entry point reports these as one `error:` line (src.cli). They live here, apart from the
code that raises them (which imports torch, MLflow, numpy), so that an entry point can name
them, and refuse a bad command, without importing any of that. Only the standard library here.
"""

from __future__ import annotations

import re


class DataError(Exception):
    """A data problem; ``str(err)`` is one line that names the file/dir and what is wrong."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line for the user."""


class DivergedError(RuntimeError):
    """Training diverged (the loss became NaN or inf); the message names the step."""


# userinfo of a URL (scheme://user:password@host): the password part is masked.
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@\s/]*(?=@)")


def mask_secrets(text: str) -> str:
    """Replace URL passwords by *** so a storage URL can be printed or logged."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***", text)
