"""The study's throughput: trials per hour with 1 and 2 workers, and what pruning saves.

Each study runs in a fresh process against fresh storages. The pruning comparison uses one
worker and a seeded random sampler, so both studies propose the same trials: the only
difference is whether the median pruner may stop them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]


def _study(data_root: str, tmp: Path, name: str, overrides: list[str]) -> tuple[float, str]:
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.study", f"data.root={data_root}", f"study.name={name}",
         f"study.storage={storage}", f"study.export_dir={tmp}", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"study {name} failed: {done.stderr.strip()[-800:]}")
    return time.perf_counter() - start, storage


def measure(data_root: str, quick: bool = False) -> list[dict[str, object]]:
    trials, epochs = (4, 2) if quick else (16, 3)
    common = [f"study.n_trials={trials}", f"trainer.max_epochs={epochs}",
              "study.sampler.name=random"] + (["data.val_size=100"] if quick else [])
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            wall, _ = _study(data_root, Path(tmp), f"throughput-{workers}",
                             [*common, f"study.workers={workers}", "study.pruner.name=none"])
            rows.append({"setting": f"{workers} worker(s), no pruning", "trials": trials,
                         "wall_s": wall, "trials_per_hour": trials / wall * 3600,
                         "epochs": trials * epochs, "best": float("nan")})
        for pruner in ("none", "median"):
            wall, storage = _study(data_root, Path(tmp), f"pruning-{pruner}",
                                   [*common, "study.workers=1", f"study.pruner.name={pruner}"])
            study = optuna.load_study(study_name=f"pruning-{pruner}", storage=storage)
            done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            rows.append({"setting": f"1 worker, pruner={pruner}", "trials": len(done),
                         "wall_s": wall, "trials_per_hour": len(done) / wall * 3600,
                         "epochs": sum(len(t.intermediate_values) for t in done),
                         "best": study.best_value})
    return rows
