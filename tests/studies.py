"""Helpers for the study tests: composing `conf/study_config.yaml`, reading what a study wrote.

Studies run in-process through `run_study` (one worker runs in the calling process) to stay
fast; the real entry `python -m pipelines.study` (`entry`) is run as a subprocess where the
test needs processes: parallel workers, a killed worker, the one-line errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipelines.study import config as study_config
from pipelines.study.config import StudyRunConfig, to_study_config
from src import config as run_schema
from src.tracking import PROJECT_ROOT

study_config.register()
run_schema.register()

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def composed(*overrides: str, config_name: str = "study_config") -> StudyRunConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose(config_name, overrides=list(overrides))
    return to_study_config(cfg)


def load(tmp_path: Path, name: str = "adam-mnist") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def mlflow_runs(tmp_path: Path, name: str = "adam-mnist") -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(f"study-{name}")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id])


def children_of(runs: list, parent_run_id: str) -> dict[int, object]:
    return {int(r.data.tags["optuna.trial"]): r for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent_run_id}


def entry(tiny_study: list[str], *overrides: str) -> list[str]:
    """The command line a user types (MLFLOW_TRACKING_URI comes from the `tiny_study` fixture)."""
    return [sys.executable, "-m", "pipelines.study", *tiny_study, *overrides]

