"""pipelines.study.trial: how a trial ends (pruned, diverged) and what it records."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pipelines.study.run import run_study
from tests.studies import children_of, composed, load, mlflow_runs


def test_a_pruner_forced_to_prune_prunes_and_records_why(tiny_study: list[str],
                                                         tmp_path: Path) -> None:
    # Median pruning from the first epoch after one finished trial; the second enqueued
    # trial (α = 1e-5) learns far less in epoch 1 than the first (α = 1e-2).
    outcome = run_study(composed(
        *tiny_study, "study.n_trials=3", "study.pruner.n_startup_trials=1",
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


def test_a_diverging_trial_stops_at_once_and_the_study_goes_on(tiny_study: list[str],
                                                               tmp_path: Path) -> None:
    outcome = run_study(composed(
        *tiny_study, "study.n_trials=2", "study.space.lr=[1e-5,1e30]",
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


def test_each_way_out_of_training_ends_the_trial_as_documented() -> None:
    import optuna

    from pipelines.study.trial import Objective, PruneOnValidation, QuietTrials
    from src.interrupts import Interrupted
    from src.model import NonFiniteLoss

    study = optuna.create_study()
    trial = study.ask()
    monitor = PruneOnValidation(trial, "val/loss")
    monitor.epoch = 3
    quiet = QuietTrials()
    objective = Objective(composed(), "parent", client=None, quiet=quiet, on_running=lambda: None)

    def ending(err: BaseException) -> tuple[TrialState, str, BaseException] | None:
        return objective._ending(trial, monitor, err)

    pruned = optuna.TrialPruned("pruned after epoch 2: val/loss=1.5")
    assert ending(pruned) == (TrialState.PRUNED, "pruned after epoch 2: val/loss=1.5", pruned)
    assert quiet.numbers == set()

    state, reason, raised = ending(NonFiniteLoss("training loss became nan at epoch 3"))
    assert (state, reason) == (TrialState.PRUNED, "diverged: training loss became nan at epoch 3")
    assert isinstance(raised, optuna.TrialPruned) and str(raised) == reason
    running = study.trials[0]
    assert running.user_attrs["diverged"] == "training loss became nan at epoch 3"
    assert list(running.intermediate_values) == [3] and math.isnan(running.intermediate_values[3])

    stops = [(KeyboardInterrupt(), "KeyboardInterrupt"), (Interrupted("SIGTERM"), "SIGTERM"),
             (SystemExit(143), "143")]
    for stop, said in stops:
        state, reason, raised = ending(stop)
        assert (state, reason) == (TrialState.FAIL, f"interrupted: {said}")
        # Optuna ends a trial FAIL on KeyboardInterrupt, but leaves it RUNNING on the others.
        assert type(raised) is KeyboardInterrupt and raised is not stop
    assert quiet.numbers == {trial.number}  # Optuna's traceback for it is not shown

    error = ValueError("bad")
    assert ending(error) == (TrialState.FAIL, "ValueError: bad", error)
    assert ending(GeneratorExit()) is None  # not a way training ends: goes on, unrecorded


def test_a_failed_trial_records_and_prints_its_error_with_passwords_masked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import optuna

    from pipelines.study.trial import Objective, QuietTrials

    def train(*args: object) -> None:
        raise RuntimeError("cannot reach postgresql+psycopg://alice:s3cr3t@db:5432/optuna")

    quiet = QuietTrials()
    objective = Objective(composed(), "parent", client=None, quiet=quiet, on_running=lambda: None)
    monkeypatch.setattr(objective, "_train", train)
    log = logging.getLogger("optuna.study._optimize")
    log.addFilter(quiet)
    try:
        study = optuna.create_study()
        with caplog.at_level(logging.WARNING, logger="optuna.study._optimize"):
            study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    finally:
        log.removeFilter(quiet)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"] == (
        "RuntimeError: cannot reach postgresql+psycopg://alice:***@db:5432/optuna")
    printed = capsys.readouterr()
    logged = caplog.text + "".join(str(r.exc_text) for r in caplog.records)
    assert "alice:***@db" in printed.out and "alice:***@db" in logged
    assert "s3cr3t" not in printed.out + printed.err + logged + str(trial.user_attrs)
