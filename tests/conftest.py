"""Shared fixtures: a tiny learnable MNIST-format dataset, and the real MNIST when present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.data import MNIST, write_idx

# The user-supplied offline copy next to the repository (see its README.md).
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared/data/mnist"


def write_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write the four MNIST files (gzipped IDX, 28x28 uint8) with a trivially learnable signal.

    Class c lights the 7x7 block number c of a 4x4 grid over noise, so a small MLP reaches
    high accuracy in a few steps; labels are balanced and shuffled.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            r, k = divmod(int(c), 4)
            images[i, 7 * r : 7 * r + 7, 7 * k : 7 * k + 7] = rng.integers(180, 256, (7, 7))
        write_idx(root / MNIST.files[f"{split}_images"], images)
        write_idx(root / MNIST.files[f"{split}_labels"], labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A directory holding 600 train / 200 test synthetic images under the MNIST file names."""
    return write_tiny_mnist(tmp_path / "mnist")


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST directory; skips the test where it is absent."""
    if not all((SHARED_MNIST / name).is_file() for name in MNIST.files.values()):
        pytest.skip(f"real MNIST not found in {SHARED_MNIST}")
    return SHARED_MNIST


REPO = Path(__file__).resolve().parents[1]


def run_entry(module: str, *overrides: str, store: Path, timeout: float = 240,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> overrides...` from the repo root against the MLflow store `store`."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def mlflow_runs(store: Path) -> list[Run]:
    """Every run in the store at `store/mlflow.db`, all experiments."""
    if not (store / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty MLflow store directory for one test."""
    path = tmp_path / "mlruns"
    path.mkdir()
    return path


@pytest.fixture
def tiny_study(tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Overrides for a fast study on the tiny data, storage and MLflow store under tmp_path.

    Without the confirmation (tests/test_study_confirm.py turns it on): the other study
    tests are about the search, and would otherwise each train its confirmation too.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return [f"data.root={tiny_mnist}", "data.download=false", "data.val_size=100",
            "trainer.max_epochs=2", f"study.storage=sqlite:///{tmp_path}/optuna.db",
            f"study.export_dir={tmp_path}/experiment", "study.workers=1",
            "study.heartbeat_interval=1", "study.grace_period=2", "study.confirm.enabled=false"]
