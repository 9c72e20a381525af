"""A comparison's report: curves, tables and the verdict of one contrast, in one folder.

`write_report` is what `pipelines.compare` logs onto its parent run: `curves.png`,
`metrics.md`, `metrics.csv` (and the differences of the contrast), plus flat MLflow metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.report.figures import CURVE_METRICS, plot_curves
from pipelines.report.results import (
    RunResult,
    finished_runs,
    is_finished,
    metric_key,
    mlflow_key,
)
from pipelines.report.tables import (
    TABLE_METRICS,
    Comparison,
    compare_arms,
    metric_table,
    write_tables,
)
from pipelines.report.verdict import verdict

__all__ = ["Report", "contrast_verdict", "write_report"]


@dataclass(frozen=True)
class Report:
    """Paths of everything ``write_report`` wrote, the verdict, and MLflow-ready numbers."""

    figure: Path
    table_md: Path
    table_csv: Path
    verdict: str | None
    summary: dict[str, float]


def write_report(
    results: Sequence[RunResult],
    arms: Sequence[str],
    out_dir: Path,
    labels: Mapping[str, str] | None = None,
    compare: tuple[str, str] | None = None,
    metric: str = "test/acc",
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    curve_metrics: Sequence[str] = CURVE_METRICS,
    alpha: float = 0.01,
    colors: Mapping[str, str] | None = None,
) -> Report:
    """Figure, tables and verdict into ``out_dir`` (created); FINISHED runs only.

    Writes ``curves.png``, ``metrics.md``, ``metrics.csv`` (and ``metrics_differences.csv``
    when ``compare`` is given). ``summary`` has MLflow-safe flat keys such as
    ``"{arm}/test_acc_mean"``, ``"{arm}/test_acc_std"``, ``"{arm}/n_finished"`` and, with
    ``compare``, ``"diff/test_acc_mean"``, ``"diff/test_acc_p"``, …; non-finite values are
    left out because not every MLflow backend stores NaN.
    """
    arms = list(arms)
    if not arms:
        raise ValueError("write_report needs at least one arm")
    if compare is not None:
        missing = [a for a in compare if a not in arms]
        if missing:
            raise ValueError(f"compare arms {missing} are not among arms {arms}")
    metrics = list(metrics) + ([metric] if metric not in metrics else [])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    finished = finished_runs(results)
    notes = [
        f"excluded run arm={r.arm} seed={r.seed} (status {r.status})"
        for r in results
        if not is_finished(r) and r.arm in arms
    ]

    figure = plot_curves(
        finished,
        arms,
        out_dir / "curves.png",
        labels=labels,
        colors=colors,
        metrics=curve_metrics,
    )
    rows = metric_table(finished, arms, metrics, labels)
    comparisons = compare_arms(finished, *compare, metrics, labels) if compare else []
    table_md, table_csv = out_dir / "metrics.md", out_dir / "metrics.csv"
    write_tables(rows, comparisons, table_md, table_csv, alpha=alpha, notes=notes)

    summary: dict[str, float] = {}
    for arm in arms:
        summary[f"{mlflow_key(arm)}/n_finished"] = float(sum(1 for r in finished if r.arm == arm))
    for r in rows:
        prefix = f"{mlflow_key(r['arm'])}/{metric_key(r['metric'])}"
        for stat in ("mean", "std", "ci_low", "ci_high"):
            summary[f"{prefix}_{stat}"] = float(r[stat])
        summary[f"{prefix}_n"] = float(r["n"])

    for c in comparisons:
        d, prefix = c.diff, f"diff/{metric_key(c.metric)}"
        summary.update(
            {
                f"{prefix}_mean": d.mean_diff,
                f"{prefix}_ci_low": d.ci_low,
                f"{prefix}_ci_high": d.ci_high,
                f"{prefix}_t": d.t,
                f"{prefix}_df": d.df,
                f"{prefix}_p": d.p_value,
            }
        )
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    return Report(figure, table_md, table_csv, _verdict(comparisons, metric, alpha), summary)


def _verdict(comparisons: Sequence[Comparison], metric: str, alpha: float) -> str | None:
    for c in comparisons:
        if c.metric == metric:
            return verdict(c.diff, metric, c.label_a, c.label_b, alpha=alpha)
    return None


def contrast_verdict(results: Sequence[RunResult], compare: tuple[str, str], metric: str,
                     labels: Mapping[str, str] | None = None, alpha: float = 0.01) -> str | None:
    """The verdict `write_report` gives for `compare` on `metric`, with nothing written: a
    pipeline can still say it when the report cannot be written (e.g. the disk is full)."""
    return _verdict(compare_arms(finished_runs(results), *compare, [metric], labels), metric,
                    alpha)
