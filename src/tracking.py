"""The MLflow side of a run: where the store lives, a run's lifecycle, what gets recorded.

The default store is SQLite under `mlruns/` (MLflow 3.14+ refuses the old `./mlruns` file
store) with artifacts beside it; `MLFLOW_TRACKING_URI` or `tracking.uri` points elsewhere,
e.g. at a tracking server when many machines write at once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment

from src.errors import TrackingError, mask_secrets
from src.interrupts import Interrupted
from src.liveness import process_tags

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = PROJECT_ROOT / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{STORE_DIR / 'mlflow.db'}"

# Tables every MLflow schema has: an SQLite file with other tables and not these belongs to
# someone else, and MLflow would add its own to it (and switch it to WAL) without asking.
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})

# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF) that are the file's
# fault rather than the code's: what the file is, and what the user can do ({setting}: the
# option that named the file).
_SQLITE_TROUBLE = {
    8: ("is read-only", "make it writable"),  # SQLITE_READONLY
    11: ("is corrupt", "restore it from a backup or point {setting} at a new file"),
    13: ("cannot grow: the disk is full", "free some space"),  # SQLITE_FULL
    26: ("is not an SQLite database", "point {setting} at another file"),  # SQLITE_NOTADB
}

# A database server's connection check gives up after this long (seconds). MLflow retries
# a failed first connection ten times with growing pauses (mlflow.store.db.utils:
# MAX_RETRY_COUNT, no setting for it), about 100 s spent on a password that cannot work.
CONNECT_TIMEOUT = 5


def resolve_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URL (None for other URLs and in-memory ones)."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def use_wal(path: Path, timeout: float = 30) -> None:
    """Put an SQLite file in WAL mode (a property of the file: set once, kept).

    Readers then no longer block the writer, so parallel workers, the UI and CLIs can use
    one file at once; writers queue on the busy timeout instead of failing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=timeout) as db:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")


def require_tables(path: Path, tables: frozenset[str], kind: str = "an MLflow store",
                   setting: str = "tracking.uri") -> None:
    """Refuse an SQLite file that holds tables, but not `tables`: it is not `kind` (an empty
    or missing file is fine: it is about to become one). Reads only the schema; `setting`
    is the option that named the file."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        found = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if found and not tables <= found:
        listed = ", ".join(sorted(found)[:5]) + (", ..." if len(found) > 5 else "")
        raise TrackingError(f"{path} is an SQLite database but not {kind} (its tables: "
                            f"{listed}), so it is left untouched: point {setting} at a new "
                            f"file or at {kind}")


def sqlite_trouble(err: BaseException) -> tuple[int, str] | None:
    """(SQLite's primary result code, its message) when `err` comes, through however many
    wrappers (MLflow's, SQLAlchemy's), from SQLite finding its file corrupt, full, read-only
    or not a database; None for anything else (a busy database, a bug in a query)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, getattr(current, "orig", None)):  # SQLAlchemy keeps .orig
            code = getattr(candidate, "sqlite_errorcode", None)
            if (isinstance(candidate, sqlite3.Error) and isinstance(code, int)
                    and code & 0xFF in _SQLITE_TROUBLE):
                return code & 0xFF, str(candidate)
        current = current.__cause__ or current.__context__
    return None


def _store_trouble(uri: str, err: BaseException, kind: str,
                   setting: str) -> TrackingError | None:
    """The one-line error naming an SQLite store's file and its trouble, if `err` is that."""
    path = sqlite_path(uri)
    trouble = sqlite_trouble(err) if path is not None else None
    if trouble is None:
        return None
    code, message = trouble
    what, todo = _SQLITE_TROUBLE[code]
    todo = todo.format(setting=setting)
    return TrackingError(f"the {kind} {path} {what} ({message}): {todo}")


@contextmanager
def store_errors(uri: str, kind: str = "MLflow store",
                 setting: str = "tracking.uri") -> Iterator[None]:
    """Inside, trouble with an SQLite store's file becomes one TrackingError naming the file.

    Corrupt pages show only when a statement reads them, anywhere in a run, so this wraps
    all of it; other errors pass unchanged. `kind` and `setting` name the store and the
    option that chose it, e.g. "Optuna storage" and "study.storage".
    """
    try:
        yield
    except TrackingError:
        raise
    except Exception as err:
        named = _store_trouble(uri, err, kind, setting)
        if named is None:
            raise
        raise named from err


def _cannot_open(uri: str, err: BaseException) -> TrackingError:
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return _store_trouble(uri, err, "MLflow store", "tracking.uri") or TrackingError(
        f"cannot open the MLflow store {mask_secrets(uri)}: {mask_secrets(first)}")


def check_connection(uri: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect once to a database server store, giving up after `timeout` (TrackingError)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.make_url(uri)
    # libpq, PyMySQL and mysqlclient all take `connect_timeout` (whole seconds).
    timeouts = ({"connect_timeout": max(1, int(timeout))}
                if url.get_backend_name() in ("postgresql", "mysql") else {})
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeouts, poolclass=NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # the driver's own error types, or SQLAlchemy's wrapping them
        raise _cannot_open(uri, err) from err


def open_store(uri: str) -> MlflowClient:
    """A client on a usable store: for SQLite, the folder exists and the file is in WAL mode.

    WAL lets the parallel workers of a comparison or study append runs while others read;
    with MLflow's own busy timeout (20 s) they queue instead of failing with "database is
    locked". The journal mode is a property of the file, so it is set once at creation. A
    database server gets one bounded connection attempt first (see CONNECT_TIMEOUT).
    """
    path = sqlite_path(uri)
    if path is not None:
        try:
            require_tables(path, MLFLOW_TABLES)
            use_wal(path)
        except (OSError, sqlite3.Error) as err:
            raise _cannot_open(uri, err) from err
    elif uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "mssql"):
        check_connection(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # connects (and migrates a new database)
    except Exception as err:  # MLflow raises many types here; all mean "unusable store"
        raise _cannot_open(uri, err) from err
    return client


# The MLflow UI (3.x) opens an experiment by its kind: without this tag it starts in its GenAI
# view (traces, "No data available") and the runs sit behind a "Model training" toggle.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
def shown_location(uri: str) -> str:
    """Where an artifact URI points, for the user: a local path decoded, else masked."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    return mask_secrets(uri)


@contextmanager
def artifact_writes(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Inside, a failed artifact write (full disk, read-only or forbidden folder) becomes one
    TrackingError naming the run's artifact folder and the reason."""
    try:
        yield
    except OSError as err:
        where = shown_location(client.get_run(run_id).info.artifact_uri)
        raise TrackingError(f"cannot write the run's artifacts to {where}: "
                            f"{err.strerror or err}") from err


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name` (a model-training experiment for the UI), created with its
    artifacts under mlruns/ if new."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        if EXPERIMENT_KIND_TAG not in existing.tags:  # made before the tag was set
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return existing.experiment_id
    # Artifacts beside the SQLite file (mlruns/artifacts/ by default); a server decides its own.
    db = sqlite_path(client.tracking_uri)
    artifact_location = (db.parent / "artifacts" / name).as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except Exception:
        # Another worker created it between our lookup and create.
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → flat `a.b.c` params; list items get their index (`optimizer.betas.0`)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) and not any(isinstance(v, Mapping) for v in value):
            flat[name] = str(list(value))
            for i, item in enumerate(value):
                flat[f"{name}.{i}"] = str(item)
        else:
            flat[name] = mask_secrets(str(value))
    return flat


def environment_tags() -> dict[str, str]:
    import mlflow
    import pytorch_lightning
    import torch

    tags = {
        "torch_version": torch.__version__,
        "lightning_version": pytorch_lightning.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": sys.version.split()[0],
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, text=True,
                                capture_output=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, text=True, capture_output=True, timeout=5,
                               check=True).stdout.strip()
        tags[MLFLOW_GIT_COMMIT] = commit
        tags["git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        tags["git_dirty"] = "unknown"  # not a git checkout (e.g. an installed wheel)
    return tags


@contextmanager
def run_lifecycle(client: MlflowClient, run_id: str,
                  stops: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Whatever happens inside, the run ends FINISHED, FAILED or KILLED — never RUNNING.

    `stops` are exceptions that end a run on purpose (e.g. a pruner's): the run is FINISHED,
    tagged `stopped` with the reason, and the exception goes on to the caller. Trouble with
    the store's file, inside or while closing, is named by `store_errors`.
    """
    with store_errors(client.tracking_uri):
        try:
            yield
        except stops as stop:
            client.set_tag(run_id, "stopped", _reason(stop))
            client.set_terminated(run_id, "FINISHED")
            raise
        except (KeyboardInterrupt, Interrupted):
            client.set_terminated(run_id, "KILLED")
            raise
        except SystemExit:
            # Nothing inside a run exits on success: a SystemExit here is a stop from outside
            # (Lightning turns Ctrl-C and SIGTERM into exits after its own clean-up).
            client.set_terminated(run_id, "KILLED")
            raise
        except BaseException as err:
            client.set_tag(run_id, "failure", _reason(err))
            client.set_terminated(run_id, "FAILED")
            raise
        else:
            client.set_terminated(run_id, "FINISHED")


def _reason(err: BaseException) -> str:
    """An exception as a run tag: type and message, URL passwords masked, within MLflow's limit."""
    return mask_secrets(f"{type(err).__name__}: {err}")[:4000]


def start_run(client: MlflowClient, experiment: str, name: str | None,
              parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    # The process too, so that a later invocation can close the run if it is killed outright.
    all_tags = {**environment_tags(), **process_tags(), **(tags or {})}
    if name:
        all_tags[MLFLOW_RUN_NAME] = name
    if parent_run_id:
        # MLflow's native nesting: the UI folds children under this parent.
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    with store_errors(client.tracking_uri):
        run = client.create_run(experiment_id(client, experiment), tags=all_tags, run_name=name)
    return run.info.run_id


def log_config(client: MlflowClient, run_id: str, config: Any) -> None:
    """The resolved config: flat params (masked) and `config.yaml` (masked) as an artifact."""
    from omegaconf import OmegaConf

    node = config if OmegaConf.is_config(config) else OmegaConf.structured(config)
    resolved = OmegaConf.to_container(node, resolve=True)
    assert isinstance(resolved, dict)
    log_params(client, run_id, flatten(resolved))
    with artifact_writes(client, run_id):
        client.log_text(run_id, mask_secrets(OmegaConf.to_yaml(node, resolve=True)),
                        "config.yaml")


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])


def log_metric_batch(client: MlflowClient, run_id: str, metrics: Mapping[str, float],
                     step: int, timestamp_ms: int | None = None) -> None:
    """Log `metrics` at `step` (timestamped now unless given), in batches MLflow accepts."""
    when = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    items = [Metric(k, float(v), when, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow accepts at most 1000 metrics per batch
        client.log_batch(run_id, metrics=items[i:i + 1000])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, mask_secrets(str(v))) for k, v in tags.items()])


class EpochLogger(Logger):
    """Lightning → MLflow, one batch write per flush, with the epoch (1-based) as MLflow step.

    Lightning's MLFlowLogger steps by optimizer step and ends the run itself (FAILED on
    Ctrl-C); here curves are per epoch and `run_lifecycle` owns the final status. The
    history is kept in memory too, so a pipeline gets it back without querying the store.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        super().__init__()
        self._client = client
        self._run_id = run_id
        self.history: dict[str, list[float]] = {}

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        return self._client

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is logged once by the run, flattened

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        epoch = int(metrics.get("epoch", 0)) + 1
        values = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        log_metric_batch(self._client, self._run_id, values, step=epoch)
