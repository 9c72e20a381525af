"""Helpers for tests that start real servers on 127.0.0.1 (MLflow, PostgreSQL)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen[str], timeout: float = 120) -> None:
    """Poll `url` until it answers, failing early (with its stderr) if `server` exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, server.communicate()[1][-2000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout:.0f} s"
            time.sleep(0.5)
