"""pipelines.study.trial: how a trial ends (pruned, diverged) and what it records."""

from __future__ import annotations

import math
import re
from pathlib import Path

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
