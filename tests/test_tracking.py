"""Tests of src.tracking: how a run's lifecycle ends and what its tags say."""

from __future__ import annotations

import pytest

from src.tracking import run_lifecycle

SECRET_URL = "postgresql+psycopg://alice:s3cr3t@db.example:5432/mlflow"
MASKED_URL = "postgresql+psycopg://alice:***@db.example:5432/mlflow"


class RecordingClient:
    """The two MlflowClient calls `run_lifecycle` makes, recorded."""

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
