"""pipelines.runs: the worker count, and a parent run that logs its config and a report folder
and always ends (the many-run pipelines run through it end to end in test_compare/test_grid)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.runs import log_report, parent_run, preflight, worker_count
from src.config import Config, DataConfig, TrackingConfig
from src.data import DataError


def test_worker_count_is_as_asked_one_per_core_by_default_never_above_the_jobs() -> None:
    assert worker_count(2, 10) == 2
    assert worker_count(4, 3) == 3
    assert worker_count(None, 10_000) == (os.cpu_count() or 1)
    assert worker_count(None, 1) == 1


def _config(tmp_path: Path) -> Config:
    return replace(Config(), tracking=TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db",
                                                     experiment="skeleton"))


def test_a_parent_run_logs_its_config_and_the_report_folder_and_always_ends(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _config(tmp_path)
    client = MlflowClient(config.tracking.uri)

    def write(folder: Path) -> tuple[dict[str, float], str]:
        (folder / "table.md").write_text("| a |\n")
        return {"arm/test_acc_mean": 0.5}, "the verdict"

    with parent_run(client, config, "skeleton", "skeleton: 0 runs") as parent:
        verdict, where = log_report(client, parent, write)
    assert verdict == "the verdict"
    assert (Path(where) / "table.md").read_text() == "| a |\n"
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline"] == "skeleton" and run.info.run_name == "skeleton"
    assert run.data.metrics["arm/test_acc_mean"] == 0.5
    assert run.data.params["optimizer.lr"] == str(config.optimizer.lr)
    assert f"skeleton: 0 runs; MLflow parent run {parent}" in capsys.readouterr().out
    assert {a.path for a in client.list_artifacts(parent)} == {"config.yaml", "report"}

    with pytest.raises(RuntimeError, match="worker crashed"), \
            parent_run(client, config, "skeleton", "skeleton", name="named") as failed:
        raise RuntimeError("worker crashed")
    run = client.get_run(failed)
    assert run.info.status == "FAILED" and run.info.run_name == "named"
    assert run.data.tags["failure"] == "RuntimeError: worker crashed"


def test_preflight_refuses_missing_data_before_the_store_exists(tmp_path: Path) -> None:
    config = replace(_config(tmp_path), data=DataConfig(root=str(tmp_path / "absent"),
                                                        download=False))
    with pytest.raises(DataError):
        preflight(config, parallel=False)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_report_in_a_unicode_experiment_is_printed_as_a_real_path(tmp_path: Path) -> None:
    config = replace(_config(tmp_path), tracking=TrackingConfig(
        uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="Étude à deux"))
    client = MlflowClient(config.tracking.uri)

    def write(folder: Path) -> tuple[dict[str, float], None]:
        (folder / "table.md").write_text("| a |\n")
        return {}, None

    with parent_run(client, config, "skeleton", "skeleton") as parent:
        _, where = log_report(client, parent, write)
    assert "Étude à deux" in where and "%" not in where
    assert (Path(where) / "table.md").is_file()
