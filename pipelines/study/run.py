"""One invocation of the study: check, open or resume it, run the workers, report and export.

    python -m pipelines.study study.n_trials=40 trainer.max_epochs=3 study.workers=2
    python -m pipelines.study study.n_trials=60      # same name: resumes, runs the 20 missing

Validate everything → open the persistent storage → create or load the study → an MLflow
parent run → `study.workers` processes, each pulling the next trial from the storage as soon
as its last one ends, until the study holds `study.n_trials` finished (complete or pruned)
trials → plots and the best trial on the parent run → the confirmation, the best trials and
the baseline retrained on fresh seeds (pipelines.study.confirm) → the best trial, or the
confirmed winner, as a Hydra experiment, `mlruns/conf/experiment/best_<name>.yaml`, for
`python -m src.train`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from optuna.trial import TrialState

from pipelines.runs import check_data, forkserver, open_tracking, parent_run, worker_count
from pipelines.study import config as study_config
from pipelines.study.config import StudyConfig, StudyRunConfig, from_optuna_params, to_study_config
from pipelines.study.confirm import Confirmation, confirm_study
from pipelines.study.export import export_best, log_study_report, replay_command
from pipelines.study.storage import (
    COUNTED_STATES,
    counted,
    counts,
    fail_stale_trials,
    open_storage,
    open_study,
    storage_url,
)
from pipelines.study.workers import PRELOAD, WorkerJob, run_workers, settle, worker_seeds
from src.cli import user_errors
from src.interrupts import stop_signals
from src.tracking import PROJECT_ROOT, log_metric_batch, mask_secrets

study_config.register()


@dataclass(frozen=True)
class StudyOutcome:
    """What one invocation did: the study's counts, its best trial, the export, the exits."""

    name: str
    storage: str  # masked
    parent_run_id: str
    states: dict[str, int]  # COMPLETE, PRUNED, FAIL, ... over the whole study
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, float]  # natural units: lr, beta1, beta2 (eps)
    importances: dict[str, float]  # Optuna parameter → importance, most important first
    exported: Path | None
    seconds: float
    worker_exit_codes: list[int]
    confirmed: Confirmation | None = None  # None: confirmation off, not yet, or nothing to test


def run_study(config: StudyRunConfig) -> StudyOutcome:
    """Create or resume the study, run it to `study.n_trials` with the workers, report."""
    started = time.perf_counter()
    s = config.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = mask_secrets(storage_url(s))
    print(f"study {s.name!r}: storage {shown}", flush=True)
    # Everything that can be refused is checked before the study is written to: the data,
    # the storage (a new one gets Optuna's empty tables), the MLflow store, the settings.
    if s.workers != 1 and (os.cpu_count() or 1) > 1:
        forkserver(PRELOAD)  # imports in the background while data and storages are opened
    check_data(config)
    storage = open_storage(s)
    client = open_tracking(config)
    study, created = open_study(config, storage)
    fail_stale_trials(study)
    tally = counts(study)
    n_workers = _workers_needed(s, tally)
    headline = (f"study {s.name!r} {'created' if created else 'resumed'}: {counted(tally)} of "
                f"{s.n_trials} trials finished, {tally[TrialState.RUNNING]} running elsewhere; "
                f"{n_workers} worker(s), sampler {s.sampler.name}, pruner {s.pruner.name}")
    with stop_signals(), parent_run(client, config, "study", headline, name=s.name,
                                    tags={"optuna.study": s.name,
                                          "optuna.storage": shown}) as parent:
        seeds = worker_seeds(s.sampler.seed, parent, n_workers)  # this invocation's own
        jobs = [WorkerJob(config, parent, i, seed) for i, seed in enumerate(seeds)]
        exit_codes = _run_settled(study, client, config, parent, jobs)
        best, importances = log_study_report(study, client, parent, config)
        confirmed = _confirm(study, client, parent, config)
        exported = export_best(best, config, confirmed) if best is not None else None
        if exported is not None:
            client.log_artifact(parent, str(exported), "study")
        seconds = time.perf_counter() - started
        log_metric_batch(client, parent, {"wall_seconds": seconds}, step=0)
    tally = counts(study)
    outcome = StudyOutcome(
        name=s.name, storage=shown, parent_run_id=parent,
        states={state.name: n for state, n in tally.items() if n},
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=from_optuna_params(best.params) if best else {},
        importances=importances, exported=exported, seconds=seconds,
        worker_exit_codes=exit_codes, confirmed=confirmed)
    _summarize(outcome, config)
    return outcome


def _confirm(study: optuna.Study, client: MlflowClient, parent: str,
             config: StudyRunConfig) -> Confirmation | None:
    """The confirmation (pipelines.study.confirm) once the search is over: on, and full."""
    s = config.study
    if not s.confirm.enabled:
        return None
    if counted(counts(study)) < s.n_trials:
        print("confirm: not yet, the study is not full (it runs when the study is)", flush=True)
        return None
    return confirm_study(study, client, parent, config)


def _workers_needed(s: StudyConfig, tally: dict[TrialState, int]) -> int:
    """Workers for the trials still to run (running ones elsewhere count as places taken)."""
    finished = counted(tally)
    if finished >= s.n_trials:
        return 0
    to_run = s.n_trials - finished - tally[TrialState.RUNNING]
    return worker_count(s.workers, max(to_run, 1))


def _run_settled(study: optuna.Study, client: MlflowClient, config: StudyRunConfig,
                 parent: str, jobs: list[WorkerJob]) -> list[int]:
    """The workers' exit codes; after them (even with none), nothing left RUNNING that a dead
    worker started (see `settle`)."""
    try:
        exit_codes = run_workers(jobs) if jobs else []
    except BaseException:
        # A worker that had to be killed could not close its trial or its MLflow run.
        settle(study, client, config.tracking.experiment, parent, status="KILLED")
        raise
    settle(study, client, config.tracking.experiment, parent)
    return exit_codes


def _summarize(outcome: StudyOutcome, config: StudyRunConfig) -> None:
    s = config.study
    states = ", ".join(f"{n} {state.lower()}" for state, n in outcome.states.items())
    print(f"study {s.name!r}: {states} ({outcome.seconds:.0f} s)", flush=True)
    if outcome.best_value is not None:
        params = ", ".join(f"{k}={v:.6g}" for k, v in outcome.best_params.items())
        print(f"best: trial {outcome.best_trial}, {s.metric}={outcome.best_value:.4f}, {params}",
              flush=True)
    if outcome.importances:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in outcome.importances.items()),
              flush=True)
    if outcome.exported is not None:
        print(f"replay: {replay_command(outcome.exported, config)}", flush=True)
    bad = [code for code in outcome.worker_exit_codes if code != 0]
    if bad:
        print(f"warning: {len(bad)} worker(s) exited abnormally (exit codes {bad})", flush=True)
    finished = sum(outcome.states.get(state.name, 0) for state in COUNTED_STATES)
    if finished < s.n_trials:
        print(f"warning: the study holds {finished} of {s.n_trials} finished trials; run the "
              "same command again to resume it", flush=True)
        raise SystemExit(1)


# An absolute path: `python -m pipelines.study` runs this from a package, where Hydra would
# read a relative one as a Python package (`conf` is a folder, not a package).
@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="study_config")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        return run_study(to_study_config(cfg)).best_value


__all__ = ["StudyOutcome", "main", "run_study"]
