"""Where a study's trials live: the Optuna storage, the study in it, and how many trials it holds.

Every worker of every invocation (on this machine or others) opens the same storage, an
SQLite file by default or any database URL; the study in it is created once and resumed by
name. `has_room` is what keeps the total of finished trials exact while workers race.
"""

from __future__ import annotations

import fcntl
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from pipelines.study.config import (
    StudyConfig,
    StudyRunConfig,
    first_difference,
    to_optuna_params,
    trial_settings,
)
from src.config import ConfigError
from src.tracking import STORE_DIR, TrackingError, mask_secrets, sqlite_path, use_wal

DEFAULT_STORAGE = f"sqlite:///{STORE_DIR / 'optuna.db'}"
# What `study.n_trials` counts. FAIL is left out: a crashed or killed trial measured nothing,
# so it is replaced (now, or by the next resume) rather than counted.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(study: StudyConfig) -> str:
    return study.storage or DEFAULT_STORAGE


class _SQLiteStorage(optuna.storages.RDBStorage):
    """RDBStorage whose trial state changes are serialized across processes by a lock file.

    A worker claims an enqueued (WAITING) trial by reading its state and writing RUNNING.
    Other databases lock the row (SELECT ... FOR UPDATE); SQLite ignores that, and Python's
    sqlite3 runs the read outside any transaction, so two workers could both claim the same
    trial (seen here: both ran trial 0). Every check-and-set goes through this method.
    """

    def __init__(self, url: str, lock_path: Path, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._lock_path = lock_path

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if the process dies
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _create_storage(url: str, path: Path | None, heartbeat: dict[str, int],
                    attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage, retried while another worker is creating the same schema.

    Workers started together (a SLURM array, several machines) on an empty database all run
    Optuna's CREATE TABLEs; on PostgreSQL the losers fail with a unique violation on the
    catalog. Once the winner is done the tables exist, so a retry simply opens them.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                if path is None:
                    return optuna.storages.RDBStorage(url, **heartbeat)
                return _SQLiteStorage(url, path.with_name(path.name + ".lock"),
                                      engine_kwargs={"connect_args": {"timeout": 60}},
                                      **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(study: StudyConfig) -> optuna.storages.RDBStorage:
    """The study's RDB storage with heartbeats (a dead worker's trial turns FAIL).

    SQLite files are put in WAL mode, as the MLflow store is, so that workers, the dashboard
    and the `optuna` CLI read while one writes; SQLite's own lock queue absorbs the rest.
    """
    url = storage_url(study)
    shown = mask_secrets(url)
    path = sqlite_path(url)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        heartbeat = {"heartbeat_interval": study.heartbeat_interval,
                     "grace_period": study.grace_period}
        storage = _create_storage(url, path, heartbeat)
        if path is not None:
            use_wal(path, timeout=60)
    except Exception as err:  # SQLAlchemy, drivers and the OS raise many types: all "unusable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"cannot open the Optuna storage {shown}: "
                            f"{mask_secrets(first)}") from err
    return storage


def open_study(config: StudyRunConfig, storage: optuna.storages.BaseStorage
               ) -> tuple[optuna.Study, bool]:
    """Load the study of this name, or create it (enqueueing `study.enqueue`); True if created.

    A study is resumed only with the settings it was created with (see `trial_settings`):
    otherwise its trials would not be comparable, and nothing is written.
    """
    s = config.study
    settings = json.loads(json.dumps(trial_settings(config)))
    try:
        study = optuna.load_study(study_name=s.name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=s.name, storage=storage, load_if_exists=True,
                                    direction=s.resolved_direction)
        if "settings" not in study.user_attrs:
            study.set_user_attr("settings", settings)
            if s.enqueue and s.sampler.name == "grid":
                print("note: study.enqueue is ignored by the grid sampler", flush=True)
            elif s.enqueue:
                for point in s.enqueue:
                    chosen = {k: v for k, v in asdict(point).items() if v is not None}
                    study.enqueue_trial(to_optuna_params(chosen))
            return study, True
    old = study.user_attrs.get("settings")
    key = first_difference(old, settings) if old is not None else None
    if key is not None:
        raise ConfigError(
            f"study {s.name!r} was created with {key}={_lookup(old, key)!r}, this run has "
            f"{_lookup(settings, key)!r}: trials would not be comparable; keep the setting or "
            "choose another study.name")
    return study, False


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """How many of the study's trials are in each state (every state present, 0 if none)."""
    tally = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        tally[trial.state] += 1
    return tally


def counted(tally: Mapping[TrialState, int]) -> int:
    """The trials of `tally` that count towards `study.n_trials` (see `COUNTED_STATES`)."""
    return sum(tally[state] for state in COUNTED_STATES)


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def has_room(study: optuna.Study, n_trials: int, poll_seconds: float) -> bool:
    """Whether another trial may start without the study passing `n_trials` finished trials.

    Running trials (any worker's) count as places taken. While they alone could fill the
    study, wait: each either finishes, or its heartbeat stops and it turns FAIL after the
    grace period, which frees its place. This is what makes the total exact with workers
    racing, and what keeps a killed worker's trial from being lost or counted.
    """
    while True:
        fail_stale_trials(study)
        tally = counts(study)
        finished = counted(tally)
        if finished >= n_trials:
            return False
        if finished + tally[TrialState.RUNNING] < n_trials:
            return True
        time.sleep(poll_seconds)


__all__ = ["COUNTED_STATES", "DEFAULT_STORAGE", "counted", "counts", "fail_stale_trials",
           "has_room", "open_storage", "open_study", "storage_url"]
