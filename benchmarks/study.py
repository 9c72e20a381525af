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
         f"study.storage={storage}", f"study.export_dir={tmp}",
         "study.confirm.enabled=false", *overrides],  # trials per hour: the search alone
        cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"study {name} failed: {done.stderr.strip()[-800:]}")
    return time.perf_counter() - start, storage


# setting → (workers, pruner). The unpruned one-worker study is also the pruning baseline.
SETTINGS = {"1 worker, no pruning": (1, "none"), "2 workers, no pruning": (2, "none"),
            "1 worker, median pruner": (1, "median")}


def measure(data_root: str, quick: bool = False) -> list[dict[str, object]]:
    """One row per setting. Trials run the blog's 5 epochs: pruning can only act between
    epochs, so with fewer it would have little to save.

    Two rates: over the whole command (with its one-off start-up and report), and over the
    trial phase, from the first trial's start to the last one's end (the workers' throughput).
    """
    trials, epochs = (2, 1) if quick else (24, 5)  # quick: a smoke run of every setting
    common = [f"study.n_trials={trials}", f"trainer.max_epochs={epochs}",
              "study.sampler.name=random"] + (["data.val_size=100"] if quick else [])
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting, (workers, pruner) in SETTINGS.items():
            name = f"{workers}-{pruner}"
            wall, storage = _study(data_root, Path(tmp), name,
                                   [*common, f"study.workers={workers}",
                                    f"study.pruner.name={pruner}"])
            study = optuna.load_study(study_name=name, storage=storage)
            done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            phase = (max(t.datetime_complete for t in done)
                     - min(t.datetime_start for t in done)).total_seconds()
            rows.append({"setting": setting, "trials": len(done), "wall_s": wall,
                         "trials_per_hour": len(done) / wall * 3600,
                         "phase_trials_per_hour": len(done) / phase * 3600,
                         "pruned": sum(t.state == TrialState.PRUNED for t in done),
                         "epochs": sum(len(t.intermediate_values) for t in done),
                         "best": study.best_value})
    return rows
