"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, listening on 127.0.0.1 only."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl (Debian keeps them out of PATH), or None if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_cluster(databases: tuple[str, ...] = ("optuna", "mlflow")) -> Iterator[str]:
    """Start a cluster, create `databases`; yields `postgresql://test:<pw>@127.0.0.1:<port>`."""
    bin_dir = postgres_bin()
    assert bin_dir is not None, "PostgreSQL is not installed"
    workdir = Path(tempfile.mkdtemp(prefix="pg-"))
    data = workdir / "data"
    password = "pw-test-only"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    pwfile = workdir / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "test",
                                 "--pwfile", str(pwfile), "-A", "scram-sha-256"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-w", "start",
        "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -k {workdir} "
              "-c max_connections=200 -c fsync=off"]), check=True, capture_output=True)
    url = f"postgresql://test:{password}@127.0.0.1:{port}"
    try:
        env = {**os.environ, "PGPASSWORD": password}
        for name in databases:
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                            "-U", "test", name], check=True, capture_output=True, env=env)
        yield url
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "-w", "stop"]), capture_output=True)
        deadline = time.monotonic() + 10
        while (data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(workdir, ignore_errors=True)
