"""pipelines.study.export: the best trial on the parent run, and replayed as an experiment."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from hydra_plugins.adam_study.searchpath import GENERATED_CONF
from pipelines.study.export import DEFAULT_EXPORT_DIR, export_best, replay_command
from pipelines.study.run import run_study
from src.tracking import PROJECT_ROOT
from tests.studies import PNG_MAGIC, composed, load


def test_the_best_trial_is_reported_and_replays_as_an_experiment(tiny_study: list[str],
                                                                 tmp_path: Path) -> None:
    # A name of its own, so that no best_<name>.yaml in the repository's mlruns/conf/ answers
    # instead.
    outcome = run_study(composed(
        *tiny_study, "study.n_trials=3", "study.name=replay_test", "study.sampler.name=grid",
        "study.sampler.grid={lr:[1e-3],beta1:[0.1,0.9,0.99],beta2:[0.999]}"))
    study = load(tmp_path, "replay_test")
    assert sorted(t.user_attrs["beta1"] for t in study.trials) == pytest.approx([0.1, 0.9, 0.99])

    best = study.best_trial
    assert outcome.best_trial == best.number and outcome.best_value == best.value
    assert outcome.exported == tmp_path / "experiment" / "best_replay_test.yaml"
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        replay = compose("config", overrides=["+experiment=best_replay_test",
                                              f"hydra.searchpath=[file://{tmp_path}]"])
    assert replay.optimizer.lr == best.params["lr"]
    assert list(replay.optimizer.betas) == [best.user_attrs["beta1"], best.user_attrs["beta2"]]
    assert replay.trainer.max_epochs == 2 and replay.data.val_size == 100

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.metrics["best/val/loss"] == best.value
    assert parent.data.params["best.trial"] == str(best.number)
    assert float(parent.data.params["best.beta1"]) == best.user_attrs["beta1"]
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://")) / "study"
    for png in ("optimization_history.png", "param_importances.png",
                "contour_beta1_beta2.png", "slice.png"):
        assert (artifacts / png).read_bytes().startswith(PNG_MAGIC), png
    assert (artifacts / "best_replay_test.yaml").is_file()
    assert (artifacts / "trials.csv").read_text().count("\n") == 4


def test_the_default_export_is_found_by_hydra_and_ignored_by_git() -> None:
    """A study's default export lands outside the tracked conf/, where src.train still finds it."""
    assert DEFAULT_EXPORT_DIR == GENERATED_CONF / "experiment"
    name = f"export_test_{uuid.uuid4().hex[:8]}"
    config = composed(f"study.name={name}", "trainer.max_epochs=2")
    trial = optuna.trial.create_trial(
        params={"lr": 0.003, "1-beta1": 0.2, "1-beta2": 0.01}, value=0.25,
        distributions={k: optuna.distributions.FloatDistribution(1e-6, 1.0, log=True)
                       for k in ("lr", "1-beta1", "1-beta2")})
    created = [d for d in (GENERATED_CONF, DEFAULT_EXPORT_DIR) if not d.exists()]
    path = export_best(trial, config)
    try:
        assert path == DEFAULT_EXPORT_DIR / f"best_{name}.yaml"
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=PROJECT_ROOT)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
        # No hydra.searchpath override: the plugin puts mlruns/conf on the path itself.
        with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
            replay = compose("config", overrides=[f"+experiment=best_{name}"])
        assert replay.optimizer.lr == 0.003
        assert list(replay.optimizer.betas) == pytest.approx([0.8, 0.99])
        assert replay.trainer.max_epochs == 2
        assert replay_command(path, config) == (
            f"python -m src.train +experiment=best_{name} data.root={config.data.root}")
    finally:
        path.unlink()
        for folder in reversed(created):  # leave the checkout as found (no mlruns/conf)
            folder.rmdir()


def test_no_generated_configs_no_search_path_and_no_warning(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    from hydra_plugins.adam_study import searchpath

    def plugged(generated: Path) -> list[str]:
        monkeypatch.setattr(searchpath, "GENERATED_CONF", generated)
        path = ConfigSearchPathImpl()
        path.append(provider="main", path=f"file://{PROJECT_ROOT / 'conf'}")
        searchpath.GeneratedConfigs().manipulate_search_path(path)
        return [element.path for element in path.get_path()]

    # Hydra warns "is not available" for a missing folder on every command of a fresh clone.
    assert plugged(tmp_path / "absent") == [f"file://{PROJECT_ROOT / 'conf'}"]
    assert plugged(tmp_path)[-1] == f"file://{tmp_path}"
