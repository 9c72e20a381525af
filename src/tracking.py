"""The MLflow side of a run: where the store lives, a run's lifecycle, what gets recorded.

The default store is SQLite under `mlruns/` (MLflow 3.14+ refuses the old `./mlruns` file
store) with artifacts beside it; `MLFLOW_TRACKING_URI` or `tracking.uri` points elsewhere,
e.g. at a tracking server when many machines write at once.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment

from src.interrupts import Interrupted
from src.liveness import process_tags

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = PROJECT_ROOT / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{STORE_DIR / 'mlflow.db'}"

# userinfo of a URL (scheme://user:password@host): the password part is masked.
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@\s/]*(?=@)")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line for the user."""


def mask_secrets(text: str) -> str:
    """Replace URL passwords by *** so a storage URL can be printed or logged."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***", text)


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


def open_store(uri: str) -> MlflowClient:
    """A client on a usable store: for SQLite, the folder exists and the file is in WAL mode.

    WAL lets the parallel workers of a comparison or study append runs while others read;
    with MLflow's own busy timeout (20 s) they queue instead of failing with "database is
    locked". The journal mode is a property of the file, so it is set once at creation.
    """
    path = sqlite_path(uri)
    if path is not None:
        try:
            use_wal(path)
        except (OSError, sqlite3.Error) as err:
            raise TrackingError(f"cannot open the MLflow store {path}: {err}") from err
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # connects (and migrates a new database)
    except Exception as err:  # MLflow raises many types here; all mean "unusable store"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"cannot open the MLflow store {mask_secrets(uri)}: "
                            f"{mask_secrets(first)}") from err
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created with its artifacts under mlruns/ if new."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    # Artifacts beside the SQLite file (mlruns/artifacts/ by default); a server decides its own.
    db = sqlite_path(client.tracking_uri)
    artifact_location = (db.parent / "artifacts" / name).as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
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
    tagged `stopped` with the reason, and the exception goes on to the caller.
    """
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
    run = client.create_run(experiment_id(client, experiment), tags=all_tags, run_name=name)
    return run.info.run_id


def log_config(client: MlflowClient, run_id: str, config: Any) -> None:
    """The resolved config: flat params (masked) and `config.yaml` (masked) as an artifact."""
    from omegaconf import OmegaConf

    node = config if OmegaConf.is_config(config) else OmegaConf.structured(config)
    resolved = OmegaConf.to_container(node, resolve=True)
    assert isinstance(resolved, dict)
    log_params(client, run_id, flatten(resolved))
    client.log_text(run_id, mask_secrets(OmegaConf.to_yaml(node, resolve=True)), "config.yaml")


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
