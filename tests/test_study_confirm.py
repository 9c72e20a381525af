"""pipelines.study.confirm and pipelines.report.confirm: the best trials retrained on fresh seeds.

End to end on the tiny data: the right candidates with the right seeds, nested under the
study's parent run, no Optuna trial taken, the winner exported, nothing retrained on resume.
Without training: which trials are candidates, and the ranking, Holm tests and verdict on
known numbers.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipelines.report.confirm import rank
from pipelines.report.results import RunResult
from pipelines.report.stats import holm, welch_test
from pipelines.study.confirm import RECORD, candidates, record_key
from pipelines.study.run import run_study
from tests.studies import PNG_MAGIC, composed, load

GRID = ("study.sampler.name=grid", "study.n_trials=3",
        "study.sampler.grid={lr:[1e-3],beta1:[0.1,0.5,0.9],beta2:[0.999]}")
CONFIRM = ("study.confirm.enabled=true", "study.confirm.n_seeds=2", "study.name=conf",
           "data.limit_train=60", "trainer.max_epochs=1")  # test accuracy below 100 %: testable


def test_confirmation_retrains_the_candidates_on_fresh_seeds_once(tiny_study: list[str],
                                                                  tmp_path: Path) -> None:
    # The grid holds the baseline's own point (β1=0.9): it is an arm, never a candidate.
    outcome = run_study(composed(*tiny_study, *GRID, *CONFIRM))
    study = load(tmp_path, "conf")
    assert len(study.trials) == 3  # confirmation took no trial
    ranked = sorted((t for t in study.trials if t.user_attrs["beta1"] != 0.9),
                    key=lambda t: (t.value, t.number))
    confirmed = outcome.confirmed
    assert confirmed is not None and not confirmed.reused
    assert confirmed.trials == [t.number for t in ranked] and confirmed.seeds == [1, 2]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(confirmed.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "confirm"
    assert run.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
    assert client.get_run(outcome.parent_run_id).data.tags["confirm.run_id"] == run.info.run_id
    children = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    arms = {f"trial_{t.number}": t for t in ranked}
    assert sorted((c.data.tags["arm"], c.data.params["seed"]) for c in children) == sorted(
        (arm, seed) for arm in [*arms, "default"] for seed in ("1", "2"))
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:
        trial = arms.get(c.data.tags["arm"])
        beta1 = trial.user_attrs["beta1"] if trial else 0.9
        assert c.data.params["optimizer.betas"] == f"[{beta1}, 0.999]"
        assert float(c.data.params["optimizer.lr"]) == 1e-3
        assert c.data.params["trainer.max_epochs"] == "1"  # the study's epochs

    # The winner has the best mean validation loss over the confirmation's seeds.
    val = {arm: [c.data.metrics["val/loss"] for c in children if c.data.tags["arm"] == arm]
           for arm in [*arms, "default"]}
    assert confirmed.winner == min(val, key=lambda a: sum(val[a]) / len(val[a]))
    folder = Path(run.info.artifact_uri.removeprefix("file://")) / "report"
    assert (folder / "ranking.png").read_bytes().startswith(PNG_MAGIC)
    assert (folder / "curves.png").read_bytes().startswith(PNG_MAGIC)
    with open(folder / "confirm.csv") as fh:
        rows = list(csv.DictReader(fh))
    tests = [float(r["test_mean"]) for r in rows]
    assert tests == sorted(tests, reverse=True) and len(rows) == 3
    assert [r["arm"] for r in rows if r["winner"] == "True"] == [confirmed.winner]
    p_welch = [float(r["p_welch"]) for r in rows if r["arm"] != "default"]
    assert [float(r["p_holm"]) for r in rows if r["arm"] != "default"] == pytest.approx(
        holm(p_welch), nan_ok=True)
    assert "Holm p=" in (folder / "confirm.md").read_text()
    # Optuna's plots (drawn first, on the study run) leave matplotlib's style as they found it
    assert matplotlib.rcParams["axes.facecolor"] == matplotlib.rcParamsDefault["axes.facecolor"]

    exported = outcome.exported
    assert exported is not None
    text = exported.read_text()
    assert "# Confirmed winner of Optuna study 'conf'" in text
    winner_beta1 = arms[confirmed.winner].user_attrs["beta1"] if confirmed.winner in arms else 0.9
    assert f"- {winner_beta1}\n" in text

    # A resume of the full study with the same candidates and seeds retrains nothing.
    again = run_study(composed(*tiny_study, *GRID, *CONFIRM))
    assert again.confirmed is not None and again.confirmed.reused
    assert again.confirmed.run_id == confirmed.run_id
    assert again.confirmed.winner == confirmed.winner
    confirms = client.search_runs([run.info.experiment_id], "attributes.run_name = 'confirm'")
    assert len(confirms) == 1
    assert client.get_run(again.parent_run_id).data.tags["confirm.run_id"] == run.info.run_id
    assert again.exported is not None and again.exported.read_text() == text
    assert len(load(tmp_path, "conf").trials) == 3


def _study_with(values: list[float], points: list[tuple[float, float, float]],
                direction: str = "minimize") -> optuna.Study:
    study = optuna.create_study(direction=direction)
    dists = {"lr": FloatDistribution(1e-5, 1e-1, log=True),
             "1-beta1": FloatDistribution(1e-3, 0.9, log=True),
             "1-beta2": FloatDistribution(1e-4, 0.9, log=True)}
    for value, (lr, b1, b2) in zip(values, points, strict=True):
        state = TrialState.COMPLETE if math.isfinite(value) else TrialState.PRUNED
        study.add_trial(create_trial(
            state=state, value=value if state == TrialState.COMPLETE else None,
            params={"lr": lr, "1-beta1": 1 - b1, "1-beta2": 1 - b2}, distributions=dists,
            intermediate_values={1: value}))
    return study


def test_candidates_are_the_best_distinct_complete_trials_without_the_baseline() -> None:
    config = composed("study.confirm.top_k=3")
    points = [(1e-3, 0.9, 0.999),  # 0: the baseline's point
              (2e-3, 0.8, 0.999),  # 1
              (2e-3, 0.8, 0.999),  # 2: the same point as 1, worse
              (5e-3, 0.5, 0.99),   # 3: pruned
              (1e-4, 0.5, 0.9),    # 4
              (3e-3, 0.7, 0.99),   # 5
              (1e-2, 0.6, 0.9)]    # 6
    values = [0.10, 0.11, 0.12, math.nan, 0.30, 0.11, 0.20]
    study = _study_with(values, points)
    assert [t.number for t in candidates(study, config)] == [1, 5, 6]  # tie 1/5: earlier first
    one = composed("study.confirm.top_k=1")
    assert [t.number for t in candidates(study, one)] == [1]
    maximize = _study_with([0.5, 0.9, 0.7], points[:2] + points[4:5], direction="maximize")
    assert [t.number for t in candidates(maximize, config)] == [1, 2]

    key = record_key(candidates(study, config), config)
    assert key == {"trials": [1, 5, 6], "seeds": [1, 2, 3, 4, 5], "alpha": 0.01,
                   "baseline": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999}}
    other = composed("study.confirm.top_k=3", "study.confirm.seeds=[7,8]")
    assert record_key(candidates(study, other), other)["seeds"] == [7, 8]  # not the same one
    assert RECORD not in study.user_attrs


def _runs(arm: str, val_loss: list[float], test_acc: list[float]) -> list[RunResult]:
    return [RunResult(arm, seed, final={"val/loss": v, "test/acc": a})
            for seed, (v, a) in enumerate(zip(val_loss, test_acc, strict=True), start=1)]


def test_ranking_selects_on_validation_and_tests_on_test_with_holm() -> None:
    results = [*_runs("default", [0.10, 0.11, 0.10], [0.970, 0.971, 0.969]),
               *_runs("a", [0.08, 0.085, 0.08], [0.980, 0.982, 0.981]),  # clearly better
               *_runs("b", [0.12, 0.12, 0.13], [0.968, 0.970, 0.969]),  # no better
               RunResult("b", 4, status="FAILED: diverged")]
    report = rank(results, ["b", "a"], "default", "val/loss", alpha=0.01)
    assert [r.arm for r in report.rows] == ["a", "default", "b"]  # by mean test/acc
    assert report.winner == "a" and report.best_candidate == "a"
    by_arm = {r.arm: r for r in report.rows}
    base = [0.970, 0.971, 0.969]
    p = [welch_test([0.968, 0.970, 0.969], base).p_value,
         welch_test([0.980, 0.982, 0.981], base).p_value]
    assert [by_arm["b"].p_holm, by_arm["a"].p_holm] == pytest.approx(holm(p))
    assert by_arm["a"].beats and not by_arm["b"].beats and by_arm["b"].test.n == 3
    assert by_arm["default"].diff is None and math.isnan(by_arm["default"].p_holm)
    assert report.verdict.startswith("a is the confirmed best on val/loss (0.0817; default 0.1033)")
    assert "a beats default on test/acc by 1.10 points" in report.verdict
    assert "Holm p=" in report.verdict and "over 2 tests" in report.verdict
    assert report.summary["confirm/a/rank"] == 1.0 and report.summary["confirm/a/beats"] == 1.0


def test_when_the_baseline_keeps_the_best_validation_the_verdict_says_so() -> None:
    results = [*_runs("default", [0.10, 0.11, 0.10], [0.970, 0.971, 0.969]),
               *_runs("a", [0.12, 0.115, 0.12], [0.970, 0.972, 0.968])]
    report = rank(results, ["a"], "default", "val/loss")
    assert report.winner == "default" and report.best_candidate == "a"
    assert report.verdict.startswith("default keeps the best val/loss (0.1033; the best "
                                     "candidate, a, 0.1183)")
    assert "no significant difference between a and default on test/acc" in report.verdict
    nothing = rank([RunResult("a", 1, status="FAILED: x")], ["a"], "default", "val/loss")
    assert nothing.winner is None and nothing.verdict.startswith("not confirmable")


def test_a_study_of_an_optimizer_without_betas_searches_and_confirms_its_step_size(
        tiny_study: list[str], tmp_path: Path) -> None:
    outcome = run_study(composed(
        *tiny_study, "study=step_size", "optimizer=sgd", "optimizer.sgd.momentum=0.9",
        "study.n_trials=2", "study.confirm.enabled=true", "study.confirm.top_k=1",
        "study.confirm.n_seeds=2", "study.space.lr=[1e-3,1e-1]"))
    study = load(tmp_path, "step-size")
    assert [set(t.params) for t in study.trials] == [{"lr"}, {"lr"}]
    confirmed = outcome.confirmed
    assert confirmed is not None and len(confirmed.trials) == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(confirmed.run_id)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(children) == 4
    assert {c.data.params["optimizer.name"] for c in children} == {"sgd"}
    assert {c.data.params["optimizer.sgd.momentum"] for c in children} == {"0.9"}
    baseline = {c.data.params["optimizer.lr"] for c in children if c.data.tags["arm"] == "default"}
    assert baseline == {"0.001"}  # the section's (torch's) lr: the baseline is the section
    assert outcome.exported is not None
    text = outcome.exported.read_text()
    assert "name: sgd" in text and "momentum: 0.9" in text
