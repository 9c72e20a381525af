"""No secret anywhere: a study and a comparison whose Optuna storage and MLflow store are
PostgreSQL URLs with a password leave that password in no file, no database row and no
printed line.

Needs Debian's postgresql (as tests/test_scale_out.py); skips where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.postgres import postgres_bin, postgres_cluster

pytestmark = pytest.mark.skipif(
    postgres_bin() is None or (os.geteuid() == 0 and shutil.which("runuser") is None),
    reason="PostgreSQL (Debian's postgresql package) is not installed")

PASSWORD = "pw-test-only"  # tests.postgres's


def _run(module: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout + done.stderr


def _dump(pg: str, database: str) -> bytes:
    """Every table of `database`, as pg_dump writes it (schema and rows)."""
    port = pg.rsplit(":", 1)[1]
    bin_dir = postgres_bin()
    assert bin_dir is not None
    return subprocess.run([str(bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", port, "-U",
                           "test", database], env={**os.environ, "PGPASSWORD": PASSWORD},
                          check=True, capture_output=True, timeout=120).stdout


def test_a_study_and_a_compare_leave_the_password_nowhere(tiny_mnist: Path,
                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"  # the commands' folder: MLflow's artifacts land under it
    work.mkdir()
    with postgres_cluster(("optuna", "mlflow")) as pg:
        driver = pg.replace("postgresql://", "postgresql+psycopg://")
        assert PASSWORD in driver
        tracking = f"tracking.uri={driver}/mlflow"
        data = [f"data.root={tiny_mnist}", "data.val_size=100", "data.download=false",
                "trainer.max_epochs=1"]
        printed = _run("pipelines.study", *data, tracking, f"study.storage={driver}/optuna",
                       "study.name=secret", "study.n_trials=2", "study.workers=1",
                       f"study.export_dir={work / 'export'}", cwd=work)
        printed += _run("src.train", "+experiment=compare", *data, tracking,
                        "compare.seeds=[0,1]", "compare.workers=2", cwd=work)
        dumps = {name: _dump(pg, name) for name in ("mlflow", "optuna")}

    assert "***@127.0.0.1" in printed and "verdict: " in printed
    assert PASSWORD not in printed
    # The databases did record the runs and trials, masked where they name a URL.
    assert b"secret" in dumps["optuna"] and b"***@127.0.0.1" in dumps["mlflow"]
    for name, dump in dumps.items():
        assert PASSWORD.encode() not in dump, name
    files = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files)  # the artifacts are there
    assert any(p.name == "best_secret.yaml" for p in files)
    leaked = [p for p in files if PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
