"""Tests of src.tracking: how a run's lifecycle ends, what its tags say, which stores it refuses."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from src.errors import TrackingError
from src.tracking import (
    CONNECT_TIMEOUT,
    check_connection,
    open_store,
    run_lifecycle,
    sqlite_trouble,
    store_errors,
)
from tests.conftest import run_entry
from tests.postgres import postgres_bin, postgres_cluster

SECRET_URL = "postgresql+psycopg://alice:s3cr3t@db.example:5432/mlflow"
MASKED_URL = "postgresql+psycopg://alice:***@db.example:5432/mlflow"


class RecordingClient:
    """The two MlflowClient calls `run_lifecycle` makes, recorded."""

    tracking_uri = "sqlite:///never-opened.db"

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.status: str | None = None

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[key] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.status = status


class Stop(Exception):
    """A planned end of a run, such as a pruner's."""


def test_failure_tag_masks_url_passwords() -> None:
    client = RecordingClient()
    with pytest.raises(RuntimeError), run_lifecycle(client, "run-1"):
        raise RuntimeError(f"cannot reach {SECRET_URL} (connection refused)")
    assert client.status == "FAILED"
    assert client.tags == {"failure": f"RuntimeError: cannot reach {MASKED_URL} "
                                      "(connection refused)"}


def test_stopped_tag_masks_url_passwords() -> None:
    client = RecordingClient()
    with pytest.raises(Stop), run_lifecycle(client, "run-1", (Stop,)):
        raise Stop(f"pruned while writing to {SECRET_URL}")
    assert client.status == "FINISHED"
    assert client.tags == {"stopped": f"Stop: pruned while writing to {MASKED_URL}"}


def test_failure_tag_is_cut_to_mlflow_tag_size() -> None:
    client = RecordingClient()
    with pytest.raises(ValueError), run_lifecycle(client, "run-1"):
        raise ValueError(f"{SECRET_URL} " + "x" * 10_000)
    assert client.tags["failure"].startswith(f"ValueError: {MASKED_URL} xxx")
    assert len(client.tags["failure"]) == 4000


def _sqlite_file(path: Path, sql: str) -> Path:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(sql)
    return path


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    foreign = _sqlite_file(tmp_path / "birds.db", "CREATE TABLE birds(name TEXT);"
                                                  "INSERT INTO birds VALUES ('owl');")
    before = foreign.read_bytes()
    with pytest.raises(TrackingError, match=re.escape(
            f"{foreign} is an SQLite database but not an MLflow store (its tables: birds), "
            "so it is left untouched: point tracking.uri at a new file")):
        open_store(f"sqlite:///{foreign}")
    assert foreign.read_bytes() == before  # no WAL switch, no MLflow tables
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds.db"]


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "mlflow.db"
    empty.touch()
    client = open_store(f"sqlite:///{empty}")
    assert client.search_experiments()  # MLflow's Default experiment
    with closing(sqlite3.connect(empty)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_trouble_is_only_the_files_fault(tmp_path: Path) -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert sqlite_trouble(RuntimeError("wrapped")) is None
    assert sqlite_trouble(locked) is None  # a busy store is not a broken file
    not_a_db = tmp_path / "random.db"
    not_a_db.write_bytes(b"x" * 4096)
    try:
        with closing(sqlite3.connect(not_a_db)) as db:
            db.execute("SELECT * FROM sqlite_master")
    except sqlite3.DatabaseError as err:
        try:
            raise RuntimeError("a wrapper, as MLflow's") from err
        except RuntimeError as caught:
            wrapped = caught
    trouble = sqlite_trouble(wrapped)
    assert trouble == (26, "file is not a database")  # SQLITE_NOTADB
    with pytest.raises(TrackingError, match=re.escape(
            f"the Optuna storage {not_a_db} is not an SQLite database (file is not a database)"
            ": point study.storage at another file")), \
            store_errors(f"sqlite:///{not_a_db}", "Optuna storage", "study.storage"):
        raise wrapped


def test_the_connection_check_asks_the_driver_for_a_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's own engine creation retries for ~100 s; this check is what bounds a wrong
    # password or a dead server, so its timeout must reach the driver.
    import sqlalchemy

    seen: dict[str, object] = {}

    def create_engine(url: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("refused"))

    monkeypatch.setattr(sqlalchemy, "create_engine", create_engine)
    with pytest.raises(TrackingError, match=re.escape(f"store {MASKED_URL}: ")):
        check_connection(SECRET_URL)
    assert seen["connect_args"] == {"connect_timeout": CONNECT_TIMEOUT}
    assert 1 <= CONNECT_TIMEOUT <= 5


@pytest.mark.skipif(postgres_bin() is None or (os.geteuid() == 0 and shutil.which("runuser")
                                                is None),
                    reason="PostgreSQL (Debian's postgresql package) is not installed")
def test_a_wrong_database_password_is_one_masked_line_without_retries(
        tiny_mnist: Path, store: Path) -> None:
    with postgres_cluster(("mlflow",)) as pg:
        wrong = pg.replace("postgresql://", "postgresql+psycopg://").replace(
            "pw-test-only", "not-the-password") + "/mlflow"
        done = run_entry("src.train", f"data.root={tiny_mnist}", "data.val_size=100",
                         "trainer.max_epochs=1", f"tracking.uri={wrong}", store=store)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot open the MLflow store postgresql+psycopg://"
                                "test:***@"), done.stderr
    assert "password authentication failed" in lines[-1]
    assert "not-the-password" not in done.stderr + done.stdout
    assert "retried" not in done.stderr  # MLflow's retry loop never started
def test_experiments_are_model_training_experiments_for_the_ui(tmp_path) -> None:
    from src.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, experiment_id, open_store

    client = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    made = experiment_id(client, "new")
    assert client.get_experiment(made).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    # One made before the tag existed (or by another tool) gets it on its next use.
    older = client.create_experiment("older")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    assert experiment_id(client, "older") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
