"""Where a study's trials live: the Optuna storage, the study in it, and how many trials it holds.

Every worker of every invocation (on this machine or others) opens the same storage, an
SQLite file by default or any database URL; the study in it is created once and resumed by
name. `has_room` is what keeps the total of finished trials exact while workers race.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.trial import TrialState

from pipelines.study.config import (
    StudyConfig,
    StudyRunConfig,
    first_difference,
    from_optuna_params,
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


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive flock on `lock_path` (created if missing) while the block runs; closing
    the file releases it, as the kernel does if the process dies."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
        with _exclusive(self._lock_path):
            return super().set_trial_state_values(trial_id, state, values)


def _create_storage(url: str, path: Path | None, heartbeat: dict[str, int],
                    attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage, retried while another worker is creating the same schema.

    Workers started together (a SLURM array, several machines) on an empty database all run
    Optuna's CREATE TABLEs; on PostgreSQL the losers fail with a unique violation on the
    catalog. Once the winner is done the tables exist, so a retry simply opens them. SQLite
    fails otherwise (`table alembic_version already exists`, an OperationalError that a
    locked database raises too), and its processes share one machine: there the creation
    holds the storage's lock file, so one process creates and the others open.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                if path is None:
                    return optuna.storages.RDBStorage(url, **heartbeat)
                lock_file = path.with_name(path.name + ".lock")
                with _exclusive(lock_file):
                    return _SQLiteStorage(url, lock_file,
                                          engine_kwargs={"connect_args": {"timeout": 60}},
                                          **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class LockFile:
    """An exclusive flock on a file that may be deleted while others wait for it.

    A waiter that locks a file just deleted holds a lock nobody else sees: after locking,
    the path must still name the locked file, or the waiter tries again on the new one.
    That is what lets `remove` delete the file safely, so none is left behind. The kernel
    releases the lock of a process that dies.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held: IO[str] | None = None

    def acquire(self) -> None:
        while self._held is None:
            handle = open(self.path, "a")  # noqa: SIM115 (held across calls on purpose)
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._held = handle
            else:
                handle.close()

    def release(self) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held.close()
            self._held = None

    def remove(self) -> None:
        """Delete the file unless someone holds it (then they, leaving later, will); whoever
        locks next creates it again. Never waits: it runs on the way out, interrupts too."""
        if self._held is None:
            try:
                handle = open(self.path)  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return
            self._held = handle
        try:
            if os.stat(self.path).st_ino == os.fstat(self._held.fileno()).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            self.release()


def lock_path(url: str, study_name: str, purpose: str = "turn") -> Path:
    """A lock file of the study (`purpose`: "turn" for the workers' turnstile, "open" for
    `study_lock`): beside an SQLite storage, else in the temp folder (one machine)."""
    db = sqlite_path(url)
    if db is not None:
        return db.with_name(f"{db.name}.{study_name}.{purpose}")
    key = hashlib.sha256(f"{url}\0{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"optuna-study-{key}.{purpose}"


@contextmanager
def study_lock(storage: optuna.storages.RDBStorage, url: str, name: str) -> Iterator[None]:
    """Inside, no other invocation of study `name` is inside too, on any machine that shares
    the storage: a lock file for SQLite, an advisory lock for PostgreSQL, a named lock for
    MySQL (held by a connection: a killed holder's lock goes with its connection). Other
    databases get none; `open_study` then relies on the study's atomic creation."""
    backend = sqlalchemy.make_url(url).get_backend_name()
    digest = hashlib.sha256(name.encode()).digest()
    if backend == "sqlite":
        if sqlite_path(url) is None:  # in memory: one process
            yield
            return
        # Not the turnstile's file: a worker may hold that while it waits for running trials.
        lock = LockFile(lock_path(url, name, "open"))
        lock.acquire()
        try:
            yield
        finally:
            lock.remove()
        return
    statements = {
        "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)",
                       int.from_bytes(digest[:8], "big", signed=True)),
        "mysql": ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)",
                  f"optuna-study-{digest.hex()[:32]}"),
    }.get(backend)
    if statements is None:
        yield
        return
    take, give, key = statements
    with storage.engine.connect() as connection:
        connection.execute(sqlalchemy.text(take), {"key": key})
        try:
            yield
        finally:
            # Session locks outlive a transaction: give it back before the pool reuses it.
            connection.execute(sqlalchemy.text(give), {"key": key})
            connection.commit()


def check_sqlite(path: Path) -> None:
    """Refuse an SQLite storage whose pages are damaged (TrackingError naming the file).

    Damage in the trial tables shows only when they are read, mid-study, as a long
    traceback; SQLite's quick check reads every page once, now, before anything is written.
    """
    if not path.is_file():
        return
    try:
        with closing(sqlite3.connect(path, timeout=60)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            return  # not SQLite at all: Optuna's own error says so
        problems = [str(err)]
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("*** in database main ***", "").split())
        raise TrackingError(f"the Optuna storage {path} is corrupt ({first}): restore "
                            "it from a backup, or move it away to start the studies afresh")


def open_storage(study: StudyConfig) -> optuna.storages.RDBStorage:
    """The study's RDB storage with heartbeats (a dead worker's trial turns FAIL).

    SQLite files are put in WAL mode, as the MLflow store is, so that workers, the dashboard
    and the `optuna` CLI read while one writes; SQLite's own lock queue absorbs the rest.
    """
    url = storage_url(study)
    shown = mask_secrets(url)
    path = sqlite_path(url)
    if path is not None:
        check_sqlite(path)
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


def open_study(config: StudyRunConfig, storage: optuna.storages.RDBStorage
               ) -> tuple[optuna.Study, bool]:
    """Load the study of this name, or create it (enqueueing `study.enqueue`); True if created.

    Invocations started together (a SLURM array, two terminals) take turns here (see
    `study_lock`), so exactly one creates the study and enqueues its points. A study is
    resumed only with the settings it was created with (see `trial_settings`): otherwise its
    trials would not be comparable, and nothing is written. On a resume, enqueued points
    whose every trial failed are enqueued again (see `requeue_failed_points`).
    """
    s = config.study
    settings = json.loads(json.dumps(trial_settings(config)))
    with study_lock(storage, storage_url(s), s.name):
        try:
            study = optuna.create_study(study_name=s.name, storage=storage,
                                        direction=s.resolved_direction)
        except DuplicatedStudyError:
            study = optuna.load_study(study_name=s.name, storage=storage)
        old = study.user_attrs.get("settings")
        if old is None:  # new, or its creator died before saying how it was made
            study.set_user_attr("settings", settings)
            if s.enqueue and s.sampler.name == "grid":
                print("note: study.enqueue is ignored by the grid sampler", flush=True)
            elif s.enqueue:
                for point in s.enqueue:
                    chosen = {k: v for k, v in asdict(point).items() if v is not None}
                    study.enqueue_trial(to_optuna_params(chosen))
            return study, True
        difference = describe_difference(old, settings)
        if difference is not None:
            raise ConfigError(f"study {s.name!r}: {difference}: trials would not be "
                              "comparable; keep the setting or choose another study.name")
        fail_stale_trials(study)  # a dead worker's RUNNING trial is FAIL before the check
        requeued = requeue_failed_points(study)
    for point in requeued:
        shown = ", ".join(f"{k}={v:g}" for k, v in from_optuna_params(point).items())
        print(f"note: enqueued again, its trials all failed: {shown}", flush=True)
    return study, False


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """How the settings `new` differ from the study's `old` ones, first the search space
    (what the user changed, where other differences follow from it); None if they agree."""
    key = (first_difference(old.get("space"), new.get("space"), "space.")
           or first_difference(old, new))
    if key is None:
        return None
    was, now = _lookup(old, key), _lookup(new, key)
    shown = f"study.{key}" if key.split(".")[0] in ("space", "metric", "direction") else key
    if key.startswith("space.") and was is None:
        return f"{shown}={now!r} was added (the study was created without searching it)"
    if key.startswith("space.") and now is None:
        return f"{shown} was removed (the study was created searching {shown}={was!r})"
    return f"it was created with {shown}={was!r}, this run has {now!r}"


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def requeue_failed_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Enqueue again each enqueued point (the blog's baselines, `study.enqueue`) whose every
    trial ended FAIL, e.g. killed with its worker; returns those points (Optuna parameters).

    Waiting trials run before the sampler proposes anything, so a crash cannot cost the
    study its baselines. Call it with the study locked (`study_lock`): two invocations
    checking at once would both enqueue.
    """
    points: dict[str, dict[str, Any]] = {}
    measured: dict[str, bool] = {}  # point → whether any trial of it ended other than FAIL
    for trial in study.get_trials(deepcopy=False):
        point = trial.system_attrs.get("fixed_params")  # set by enqueue_trial
        if point is not None:
            key = json.dumps(point, sort_keys=True)
            points.setdefault(key, point)
            measured[key] = measured.get(key, False) or trial.state != TrialState.FAIL
    lost = [points[key] for key, ok in measured.items() if not ok]
    for point in lost:
        study.enqueue_trial(point)
    return lost


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


__all__ = ["COUNTED_STATES", "DEFAULT_STORAGE", "LockFile", "check_sqlite", "counted", "counts",
           "describe_difference", "fail_stale_trials", "has_room", "lock_path", "open_storage",
           "open_study", "requeue_failed_points", "storage_url", "study_lock"]
