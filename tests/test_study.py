"""The Optuna study end to end on tiny data: config, search space, pruning, divergence, resume,
parallel workers (one killed), MLflow grouping, replay, and bad input.

Studies run in-process through `run_study` (one worker runs in the calling process) to stay
fast; the real entry `python -m pipelines.study` is run as a subprocess for the parallel
workers, the killed worker and the one-line errors.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipelines import study_config
from pipelines.study import (
    DEFAULT_STORAGE,
    run_study,
    worker_seeds,
)
from pipelines.study_config import (
    StudyRunConfig,
    make_pruner,
    make_sampler,
    suggest,
    to_study_config,
)
from src import config as run_schema
from src.config import ConfigError
from src.tracking import PROJECT_ROOT

study_config.register()
run_schema.register()

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def composed(*overrides: str, config_name: str = "study_config") -> StudyRunConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose(config_name, overrides=list(overrides))
    return to_study_config(cfg)


@pytest.fixture
def tiny(tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Overrides for a fast study on the tiny data, storage and MLflow store under tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return [f"data.root={tiny_mnist}", "data.download=false", "data.val_size=100",
            "trainer.max_epochs=2", f"study.storage=sqlite:///{tmp_path}/optuna.db",
            f"study.export_dir={tmp_path}/experiment", "study.workers=1",
            "study.heartbeat_interval=1", "study.grace_period=2"]


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


# --- configuration ---------------------------------------------------------------------------

def test_defaults_compose_to_the_documented_study() -> None:
    c = composed()
    s = c.study
    assert (s.name, s.n_trials, s.metric, s.resolved_direction) == (
        "adam-mnist", 40, "val/loss", "minimize")
    assert (s.sampler.name, s.sampler.seed, s.pruner.name) == ("tpe", 0, "median")
    assert s.space.lr == [1e-5, 1e-1]
    assert s.space.beta1[0] <= 0.1 and s.space.beta2[0] <= 0.1  # the blog's 0.1 is inside
    assert s.space.beta1[1] >= 0.99 and s.space.beta2[1] >= 0.999
    assert s.space.eps is None and s.storage is None
    assert f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'optuna.db'}" == DEFAULT_STORAGE
    blog = [(1e-3, 0.9, 0.999), (1e-3, 0.1, 0.1)]
    assert [(p.lr, p.beta1, p.beta2) for p in s.enqueue] == blog
    assert c.tracking.experiment == "study-adam-mnist"
    assert (c.optimizer.lr, c.trainer.max_epochs) == (1e-3, 5)  # the run's own defaults


def test_public_overrides_work_exactly_as_written(tmp_path: Path) -> None:
    c = composed("study.name=my_study", f"study.storage=sqlite:///{tmp_path}/o.db",
                 "study.n_trials=7", "study.workers=3", "trainer.max_epochs=2",
                 f"data.root={tmp_path}", "study.sampler.name=cmaes",
                 "study.pruner.name=hyperband", "study.space.eps=[1e-10,1e-4]")
    s = c.study
    assert (s.name, s.storage, s.n_trials, s.workers) == (
        "my_study", f"sqlite:///{tmp_path}/o.db", 7, 3)
    assert c.trainer.max_epochs == 2 and c.data.root == str(tmp_path)
    assert (s.sampler.name, s.pruner.name) == ("cmaes", "hyperband")
    assert s.space.eps is not None and s.space.searched() == ["lr", "beta1", "beta2", "eps"]
    assert c.tracking.experiment == "study-my_study"


def test_every_sampler_and_pruner_is_selectable() -> None:
    expected = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "cmaes": optuna.samplers.CmaEsSampler, "grid": optuna.samplers.GridSampler}
    for name, cls in expected.items():
        c = composed(f"study.sampler.name={name}", "study.n_trials=5")
        assert isinstance(make_sampler(c.study, seed=1), cls)
    pruners = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
               "hyperband": optuna.pruners.HyperbandPruner}
    for name, cls in pruners.items():
        c = composed(f"study.pruner.name={name}", "trainer.max_epochs=3")
        assert isinstance(make_pruner(c.study, c.trainer.max_epochs), cls)


def test_betas_are_searched_on_a_log_scale_of_one_minus_beta() -> None:
    space = composed().study.space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = []
    for _ in range(900):
        trial = study.ask()
        points.append(suggest(trial, space))
        study.tell(trial, 0.0)
    distribution = study.trials[0].distributions["1-beta1"]
    assert distribution.log and math.isclose(distribution.low, 1 - 0.999)
    assert math.isclose(distribution.high, 1 - 0.1)
    assert study.trials[0].distributions["lr"].log
    beta1 = [p["beta1"] for p in points]
    assert all(0.1 <= b <= 0.999 for b in beta1)

    def share(low: float, high: float) -> float:
        return sum(low <= b <= high for b in beta1) / len(beta1)

    # One decade of 1 - β each: 0.99 → 0.999 is searched as much as 0.1 → 0.91.
    assert abs(share(0.99, 0.999) - share(0.1, 0.91)) < 0.06
    assert share(0.99, 0.999) > 0.25  # uniform-in-β would give it 1 %


def test_worker_seeds_differ_between_workers_and_invocations() -> None:
    first = worker_seeds(0, trials_so_far=0, workers=3)
    assert len(set(first)) == 3
    assert worker_seeds(0, 0, 3) == first  # reproducible
    assert not set(worker_seeds(0, trials_so_far=10, workers=3)) & set(first)


@pytest.mark.parametrize(("override", "names"), [
    ("study.space.lr=[0.01,0.01]", "study.space.lr.*empty or inverted"),
    ("study.space.beta1=[0.9,0.1]", "study.space.beta1.*empty or inverted"),
    ("study.space.beta2=[0.5,1.0]", r"study.space.beta2.*\[0, 1\)"),
    ("study.space.lr=[0,0.1]", "study.space.lr"),
    ("study.space.lr=[0.1]", "study.space.lr"),
    ("study.sampler.name=bayes", "study.sampler.name='bayes'"),
    ("study.pruner.name=asha", "study.pruner.name='asha'"),
    ("study.n_trials=0", "study.n_trials=0"),
    ("study.workers=0", "study.workers=0"),
    ("study.metric=test/acc", "study.metric"),
    ("study.direction=maximize", "study.direction"),
    ("study.name=a/b", "study.name"),
    ("study.enqueue=[{lr:1.0}]", r"study.enqueue\[0\].lr"),
    ("study.grace_period=1", "study.grace_period"),
    ("study.pruner.name=hyperband", "min_resource"),  # with trainer.max_epochs=1 below
])
def test_bad_values_name_the_key_and_touch_no_storage(override: str, names: str,
                                                      tmp_path: Path) -> None:
    storage = tmp_path / "optuna.db"
    with pytest.raises(ConfigError, match=names) as refused:
        # Were the value accepted, run_study would stop at the missing data, writing nothing.
        config = composed(override, "trainer.max_epochs=1", f"study.storage=sqlite:///{storage}",
                          f"data.root={tmp_path}/absent", "data.download=false",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
        run_study(config)
    assert "\n" not in str(refused.value)  # the CLI prints it as one line
    assert not storage.exists()


def test_grid_must_hold_the_trials() -> None:
    with pytest.raises(ConfigError, match="grid has only 8 points"):
        composed("study.sampler.name=grid", "study.sampler.grid_points=2", "study.n_trials=9")


@pytest.mark.parametrize("override", ["study.n_trails=3", "study.sampler.nme=tpe",
                                      "study.space.alpha=[1e-4,1e-2]", "study.enqueue=[{lrr:0.1}]",
                                      "study.n_trials=many"])
def test_typos_fail_while_composing(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        composed(override)


# --- studies in-process ----------------------------------------------------------------------

def test_trials_complete_and_resume_runs_only_the_missing(tiny: list[str],
                                                          tmp_path: Path) -> None:
    first = run_study(composed(*tiny, "study.n_trials=2"))
    study = load(tmp_path)
    before = {t.number: (t.state, t.value, t.datetime_complete) for t in study.trials}
    assert [s for s, _, _ in before.values()] == [TrialState.COMPLETE] * 2
    assert [(t.params["lr"], t.user_attrs["beta1"]) for t in study.trials] == [
        (1e-3, 0.9), (1e-3, 0.1)]  # the enqueued blog settings run first

    second = run_study(composed(*tiny, "study.n_trials=4"))
    study = load(tmp_path)
    assert len(study.trials) == 4 and {t.number for t in study.trials} == {0, 1, 2, 3}
    assert all(t.state in FINISHED for t in study.trials)
    assert {n: before[n] for n in before} == {
        t.number: (t.state, t.value, t.datetime_complete) for t in study.trials[:2]}

    third = run_study(composed(*tiny, "study.n_trials=4"))  # already there: runs nothing
    assert len(load(tmp_path).trials) == 4 and third.worker_exit_codes == []

    runs = mlflow_runs(tmp_path)
    assert sorted(children_of(runs, first.parent_run_id)) == [0, 1]
    assert sorted(children_of(runs, second.parent_run_id)) == [2, 3]
    assert children_of(runs, third.parent_run_id) == {}


def test_resume_with_other_settings_is_refused_before_writing(tiny: list[str],
                                                              tmp_path: Path) -> None:
    run_study(composed(*tiny, "study.n_trials=1"))
    with pytest.raises(ConfigError, match="trainer.max_epochs=2.*3"):
        run_study(composed(*tiny, "study.n_trials=3", "trainer.max_epochs=3"))
    assert len(load(tmp_path).trials) == 2  # the finished one and the second enqueued


def test_a_pruner_forced_to_prune_prunes_and_records_why(tiny: list[str],
                                                         tmp_path: Path) -> None:
    # Median pruning from the first epoch after one finished trial; the second enqueued
    # trial (α = 1e-5) learns far less in epoch 1 than the first (α = 1e-2).
    outcome = run_study(composed(
        *tiny, "study.n_trials=3", "study.pruner.n_startup_trials=1",
        "study.pruner.n_warmup_steps=1",
        "study.enqueue=[{lr:1e-2,beta1:0.9,beta2:0.999},{lr:1e-5,beta1:0.9,beta2:0.999}]"))
    trials = load(tmp_path).trials
    assert trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.PRUNED
    assert list(trials[1].intermediate_values) == [1]  # epochs are steps, from 1
    assert trials[1].user_attrs["reason"].startswith("pruned after epoch 1: val/loss=")
    assert outcome.states["PRUNED"] >= 1

    child = children_of(mlflow_runs(tmp_path), outcome.parent_run_id)[1]
    assert child.info.status == "FINISHED"
    assert child.data.tags["stopped"].startswith("TrialPruned: pruned after epoch 1")
    assert child.data.tags["optuna.state"] == "PRUNED"
    assert "val/loss" in child.data.metrics


def test_a_diverging_trial_stops_at_once_and_the_study_goes_on(tiny: list[str],
                                                               tmp_path: Path) -> None:
    outcome = run_study(composed(
        *tiny, "study.n_trials=2", "study.space.lr=[1e-5,1e30]",
        "study.enqueue=[{lr:1e30},{lr:1e-3,beta1:0.9,beta2:0.999}]"))
    diverged, healthy = load(tmp_path).trials
    assert diverged.state == TrialState.PRUNED
    assert re.match(r"training loss became (nan|inf) at epoch 1", diverged.user_attrs["diverged"])
    assert diverged.user_attrs["reason"].startswith("diverged: ")
    assert math.isnan(diverged.intermediate_values[1])  # ranked worst by the sampler
    assert healthy.state == TrialState.COMPLETE

    child = children_of(mlflow_runs(tmp_path), outcome.parent_run_id)[0]
    assert child.info.status == "FAILED"
    assert child.data.tags["failure"].startswith("NonFiniteLoss")
    assert child.data.tags["optuna.state"] == "PRUNED"


def test_the_best_trial_is_reported_and_replays_as_an_experiment(tiny: list[str],
                                                                 tmp_path: Path) -> None:
    # A name of its own, so that no best_<name>.yaml in the repository's conf/ answers instead.
    outcome = run_study(composed(
        *tiny, "study.n_trials=3", "study.name=replay_test", "study.sampler.name=grid",
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


# --- the real entry, as a user runs it ------------------------------------------------------

def entry(tiny: list[str], *overrides: str) -> list[str]:
    """The command line a user types (MLFLOW_TRACKING_URI comes from the `tiny` fixture)."""
    return [sys.executable, "-m", "pipelines.study", *tiny, *overrides]


def test_two_workers_finish_exactly_n_trials_even_when_one_is_killed(
        tiny: list[str], tmp_path: Path) -> None:
    """The real entry with 2 workers; one is killed (SIGKILL) in the middle of a trial.

    Its trial turns FAIL (heartbeat 1 s, grace period 2 s), the other worker replaces it, and
    the study ends with exactly n_trials finished trials, each with its MLflow child run under
    the invocation's parent run.
    """
    env = dict(os.environ)
    study_run = subprocess.Popen(  # longer trials, so that the kill lands mid-trial
        entry(tiny, "study.workers=2", "study.n_trials=3", "trainer.max_epochs=20"),
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and study_run.poll() is None:
            time.sleep(0.05)
            try:
                study = load(tmp_path)
            except KeyError:
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # Training has started and is far from its end (one step per epoch).
                if "mlflow_run_id" in trial.user_attrs and len(trial.intermediate_values) < 6:
                    os.kill(int(trial.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
                    killed = trial.number
                    break
        output, _ = study_run.communicate(timeout=180)
    finally:
        if study_run.poll() is None:
            study_run.kill()
    assert killed is not None, output[-3000:]
    assert study_run.returncode == 0, output[-3000:]
    assert f"storage sqlite:///{tmp_path}/optuna.db" in output
    assert "2 worker(s)" in output and "exited abnormally (exit codes [-9])" in output
    assert "replay: python -m src.train +experiment=best_adam-mnist" in output

    trials = load(tmp_path).trials
    assert trials[killed].state == TrialState.FAIL, output[-3000:]
    finished = [t for t in trials if t.state in FINISHED]
    states = [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]
    # 3 finished + the killed one; no surplus trial (the workers take turns to start one).
    assert len(finished) == 3 and len({t.number for t in trials}) == len(trials) == 4, (
        f"{states}\n{output[-3000:]}")
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("pipeline") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = children_of(runs, parents[0].info.run_id)
    assert sorted(children) == sorted(t.number for t in trials)  # the killed one too
    for trial in trials:
        child = children[trial.number]
        assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert child.data.tags["optuna.state"] == trial.state.name
        assert float(child.data.params["optimizer.lr"]) == trial.params["lr"]
        assert child.info.status == ("FAILED" if trial.number == killed else "FINISHED")
    assert (tmp_path / "experiment" / "best_adam-mnist.yaml").is_file()


def test_a_storage_that_cannot_be_opened_is_one_line_and_a_non_zero_exit(
        tiny: list[str], tmp_path: Path) -> None:
    # (Config errors take the same path, src.cli.user_errors; they are checked in-process.)
    done = subprocess.run(entry(tiny, "study.storage=nosuchdb://user:secret@nowhere/optuna"),
                          cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: cannot open the Optuna storage nosuchdb://user:***@")
    assert "secret" not in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.db"))  # neither the study's storage nor MLflow's
