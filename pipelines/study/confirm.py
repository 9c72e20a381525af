"""A study's confirmation: its best trials and the baseline retrained on fresh seeds, once.

After the search (when the study holds `study.n_trials` finished trials), the `top_k` best
distinct complete trials and `study.confirm.baseline` (the blog's α=1e-3, β=(0.9, 0.999))
are retrained with seeds the search never used, with the study's epochs, data and model.
That is a comparison: its arms are the candidates and the baseline, planned by
`pipelines.compare.plan` and trained by `pipelines.runs` as MLflow children of a `confirm`
run nested under the invocation's study run; `pipelines.report.confirm` ranks them, tests
each candidate against the baseline (Welch, Holm-corrected) and picks the winner on
validation, which is what `export_best` then writes.

These are training runs, not Optuna trials, so they take none of `study.n_trials`. A
finished confirmation is recorded on the study (user attribute `confirmation`); a resumed
study with the same candidates, seeds, baseline and α reuses it instead of retraining. An
interrupted one is not recorded, and the next invocation runs it again whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from pipelines.compare import plan
from pipelines.report.confirm import ConfirmReport, write_confirm_report
from pipelines.runs import log_report, parent_run, run_children, worker_count
from pipelines.study.config import (
    BASELINE_ARM,
    StudyRunConfig,
    baseline_arm,
    baseline_point,
    from_optuna_params,
    point_overrides,
)
from src.config import ArmConfig, CompareConfig
from src.tracking import resolve_uri, set_tags

RECORD = "confirmation"  # the study's user attribute holding the last finished confirmation


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation found: its run, the arms, the winner (chosen on validation)."""

    run_id: str  # the `confirm` MLflow run, nested under the study run that trained it
    trials: list[int]  # the candidates' trial numbers, the search's best first
    seeds: list[int]
    winner: str | None  # an arm: trial_<number> or BASELINE_ARM; None: no run finished
    winner_trial: int | None  # None when the baseline won (or nothing did)
    winner_params: dict[str, float]  # natural units: lr, beta1, beta2 (eps); {} for None
    verdict: str
    reused: bool = False  # found on the study, not retrained by this invocation


def arm_of(trial: FrozenTrial) -> str:
    return f"trial_{trial.number}"


def point_label(point: dict[str, float]) -> str:
    """e.g. `α=0.00208, β=(0.81, 0.99945)`: a point of the search space as the tables show it."""
    parts = [f"α={point['lr']:.3g}"]
    if "beta1" in point or "beta2" in point:
        betas = [f"{point[k]:.{digits}g}" if k in point else "·"
                 for k, digits in (("beta1", 4), ("beta2", 6))]
        parts.append(f"β=({betas[0]}, {betas[1]})")
    if "eps" in point:
        parts.append(f"ε={point['eps']:.3g}")
    return ", ".join(parts)


def candidates(study: optuna.Study, config: StudyRunConfig) -> list[FrozenTrial]:
    """The `top_k` best complete trials, best first, with distinct points none of which is the
    baseline's (it is an arm anyway); ties go to the earlier trial."""
    searched = config.study.space.searched()
    baseline = {k: v for k, v in baseline_point(config).items() if k in searched}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    complete.sort(key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]
    chosen: list[FrozenTrial] = []
    seen: list[dict[str, float]] = [baseline]
    for trial in complete:
        point = from_optuna_params(trial.params)
        if point in seen:
            continue
        seen.append(point)
        chosen.append(trial)
        if len(chosen) == config.study.confirm.top_k:
            break
    return chosen


def record_key(trials: list[FrozenTrial], config: StudyRunConfig) -> dict[str, Any]:
    """What makes two confirmations the same: candidates, seeds, baseline and α (JSON types)."""
    c = config.study.confirm
    return json.loads(json.dumps({"trials": [t.number for t in trials],
                                  "seeds": c.resolved_seeds(config.seed),
                                  "baseline": baseline_point(config), "alpha": c.alpha}))


def _reuse(study: optuna.Study, key: dict[str, Any]) -> Confirmation | None:
    stored = study.user_attrs.get(RECORD)
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    return Confirmation(**stored["outcome"], reused=True)


def confirm_study(study: optuna.Study, client: MlflowClient, study_run_id: str,
                  config: StudyRunConfig) -> Confirmation | None:
    """Retrain the candidates and the baseline under `study_run_id`, or reuse the study's
    record of that; None when the study has no complete trial to confirm."""
    s = config.study
    trials = candidates(study, config)
    if not trials:
        print("confirm: no complete trial other than the baseline: nothing to confirm",
              flush=True)
        return None
    key = record_key(trials, config)
    found = _reuse(study, key)
    if found is not None:
        print(f"confirm: trials {found.trials} with seeds {found.seeds} were confirmed in MLflow "
              f"run {found.run_id}: not retrained\nverdict: {found.verdict}", flush=True)
        set_tags(client, study_run_id, {"confirm.run_id": found.run_id})
        return found

    points = {arm_of(t): from_optuna_params(t.params) for t in trials}
    base = baseline_point(config)
    arms = [ArmConfig(name=arm, optimizer=point_overrides(point, config.optimizer))
            for arm, point in points.items()] + [baseline_arm(config)]
    labels = {arm_of(t): f"trial {t.number} ({point_label(points[arm_of(t)])})" for t in trials}
    labels[BASELINE_ARM] = f"default ({point_label(base)})"
    seeds = key["seeds"]
    # The children's store is the parent's, whatever environment the worker processes see.
    run_config = replace(config.run_config(),
                         tracking=replace(config.tracking, uri=resolve_uri(config.tracking.uri)))
    comparison = replace(run_config, compare=CompareConfig(arms=arms, seeds=seeds,
                                                           workers=s.workers))
    jobs = plan(comparison)
    workers = worker_count(s.workers, len(jobs))
    headline = (f"confirm: trials {key['trials']} and the baseline × seeds {seeds} = "
                f"{len(jobs)} runs, {workers} worker processes")
    with parent_run(client, comparison, "confirm", headline, name="confirm",
                    nested_in=study_run_id, tags={"optuna.study": s.name,
                                                  "confirm.trials": str(key["trials"])}) as run:
        results = run_children(client, run, jobs, workers)
        report, where = log_report(client, run, lambda folder: write_confirm_report(
            folder, results, list(points), BASELINE_ARM, s.metric, seeds, labels, s.confirm.alpha))
        outcome = _outcome(run, key, report, points, base)
        set_tags(client, run, {"confirm.winner": str(outcome.winner)})
    set_tags(client, study_run_id, {"confirm.run_id": run})
    study.set_user_attr(RECORD, {"key": key, "outcome": json.loads(json.dumps(
        {k: v for k, v in asdict(outcome).items() if k != "reused"}))})
    print(f"confirm report: {where}\nverdict: {outcome.verdict}", flush=True)
    return outcome


def _outcome(run_id: str, key: dict[str, Any], report: ConfirmReport,
             points: dict[str, dict[str, float]], base: dict[str, float]) -> Confirmation:
    winner = report.winner
    trial = int(winner.removeprefix("trial_")) if winner and winner != BASELINE_ARM else None
    params = {} if winner is None else points.get(winner, base)
    return Confirmation(run_id=run_id, trials=list(key["trials"]), seeds=list(key["seeds"]),
                        winner=winner, winner_trial=trial, winner_params=params,
                        verdict=report.verdict)


__all__ = ["RECORD", "Confirmation", "candidates", "confirm_study", "point_label",
           "record_key"]
