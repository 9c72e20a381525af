"""The runs a report is built from: `RunResult`, which runs count, and how metrics read.

Only runs whose ``status`` is ``"FINISHED"`` (case-insensitive) enter any statistic or plot:
a FAILED or KILLED run's last logged values are from an arbitrary point of training and would
bias the arm. ``write_report`` lists the excluded runs in the Markdown so none vanish silently.

Units: accuracies are assumed to be fractions in [0, 1] (what torchmetrics logs); the
human-facing outputs (Markdown, verdict, plot) show them in percent / percentage points,
while the CSV keeps the raw values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["FINISHED_STATUS", "RunResult", "finals", "finished_runs", "is_accuracy",
           "is_finished", "label_of", "lower_is_better", "metric_key", "mlflow_key"]

# The MLflow status of a run that trained to its end (a comparison's RunResult carries it).
FINISHED_STATUS = "FINISHED"


@dataclass(frozen=True)
class RunResult:
    """One training run: which arm, which seed, per-epoch history and final metrics."""

    arm: str
    seed: int
    history: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    status: str = FINISHED_STATUS


def is_finished(r: RunResult) -> bool:
    return r.status.upper() == FINISHED_STATUS


def finished_runs(results: Sequence[RunResult]) -> list[RunResult]:
    return [r for r in results if is_finished(r)]


def label_of(arm: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(arm, arm)


def is_accuracy(metric: str) -> bool:
    return "acc" in metric.rsplit("/", 1)[-1].lower()


def lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1].lower()
    return any(k in leaf for k in ("loss", "err", "nll", "ppl", "perplexity"))


def finals(results: Sequence[RunResult], arm: str, metric: str) -> list[float]:
    return [r.final[metric] for r in finished_runs(results) if r.arm == arm and metric in r.final]


def mlflow_key(text: str) -> str:
    # MLflow metric names allow alphanumerics and _ - . / space; anything else becomes "_".
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def metric_key(metric: str) -> str:
    return mlflow_key(metric.replace("/", "_"))
