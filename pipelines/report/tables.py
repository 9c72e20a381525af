"""A comparison's tables: per-arm summaries and Welch differences, as Markdown and CSV.

Markdown for humans (accuracies in %, a verdict line per difference), CSV for machines
(raw values at full float precision). Only FINISHED runs count (see `pipelines.report.results`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from pipelines.report.results import RunResult, finals, is_accuracy, label_of
from pipelines.report.stats import Difference, summarize, welch_test
from pipelines.report.verdict import fmt_value, format_p, verdict
from src.files import atomic_write

__all__ = ["TABLE_METRICS", "Comparison", "compare_arms", "md_cell", "metric_table",
           "write_csv", "write_tables"]

# The final training loss is the last epoch's (batch-weighted) mean, as the blog reports it.
TABLE_METRICS: tuple[str, ...] = ("train/loss", "val/acc", "test/acc", "test/loss")


@dataclass(frozen=True)
class Comparison:
    """One ``arm_a − arm_b`` difference on one metric, with display labels."""

    arm_a: str
    arm_b: str
    label_a: str
    label_b: str
    metric: str
    diff: Difference


def metric_table(
    results: Sequence[RunResult],
    arms: Sequence[str],
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> list[dict]:
    """Rows (arm-major, in ``arms`` order) of final-metric summaries over FINISHED runs.

    Keys: arm, label, metric, n, mean, std, ci_low, ci_high. An arm without values gets a
    row with n = 0 and NaNs, so a missing arm is visible rather than silently absent.
    """
    rows: list[dict] = []
    for arm in arms:
        for metric in metrics:
            s = summarize(finals(results, arm, metric), confidence)
            rows.append(
                {
                    "arm": arm,
                    "label": label_of(arm, labels),
                    "metric": metric,
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                }
            )
    return rows


def compare_arms(
    results: Sequence[RunResult],
    arm_a: str,
    arm_b: str,
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> list[Comparison]:
    """Welch ``arm_a − arm_b`` for each metric, over FINISHED runs."""
    return [
        Comparison(
            arm_a,
            arm_b,
            label_of(arm_a, labels),
            label_of(arm_b, labels),
            metric,
            welch_test(
                finals(results, arm_a, metric), finals(results, arm_b, metric), confidence
            ),
        )
        for metric in metrics
    ]


def md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_rows(rows: Sequence[Mapping], confidence: float) -> list[str]:
    ci = f"{confidence:.0%} CI"
    lines = [
        f"| Arm | Metric | n | Mean ± std | {ci} |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        metric = r["metric"]
        unit = " %" if is_accuracy(metric) else ""
        if r["n"] == 0 or not math.isfinite(r["mean"]):
            value, interval = "n/a", "n/a"
        else:
            value = f"{fmt_value(metric, r['mean'])} ± {fmt_value(metric, r['std'])}{unit}"
            interval = f"[{fmt_value(metric, r['ci_low'])}, {fmt_value(metric, r['ci_high'])}]"
        label = r.get("label", r["arm"])
        arm = label if label == r["arm"] else f"{label} (`{r['arm']}`)"
        lines.append(f"| {md_cell(arm)} | {metric} | {r['n']} | {value} | {interval} |")
    return lines


def _md_differences(differences: Sequence[Comparison], confidence: float) -> list[str]:
    lines = [
        f"| A − B | Metric | n (A, B) | Δ mean | {confidence:.0%} CI | Welch t | df | p |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in differences:
        d, m = c.diff, c.metric
        unit = " pts" if is_accuracy(m) else ""
        interval = (
            f"[{fmt_value(m, d.ci_low, True)}, {fmt_value(m, d.ci_high, True)}]"
            if math.isfinite(d.ci_low)
            else "n/a"
        )
        t = f"{d.t:.3f}" if math.isfinite(d.t) else "n/a"
        df = f"{d.df:.1f}" if math.isfinite(d.df) else "n/a"
        lines.append(
            f"| {md_cell(c.label_a)} − {md_cell(c.label_b)} | {m} | {d.n_a}, {d.n_b} | "
            f"{fmt_value(m, d.mean_diff, True)}{unit} | {interval} | {t} | {df} | "
            f"{format_p(d.p_value)} |"
        )
    return lines


def write_tables(
    rows: Sequence[Mapping],
    differences: Sequence[Comparison],
    md_path: Path,
    csv_path: Path,
    *,
    confidence: float = 0.95,
    alpha: float = 0.01,
    notes: Sequence[str] = (),
) -> None:
    """Markdown for humans (accuracies in %, losses to 4 decimals) and CSV for machines.

    The CSV holds ``rows`` verbatim (full float precision, header row). When ``differences``
    is non-empty they also go to ``<csv stem>_differences.csv`` next to it, and the Markdown
    gets a "Difference" section with one verdict line per comparison.
    """
    md = ["# Results", ""]
    md.append(
        f"Mean ± sample std across seeds (FINISHED runs only); {confidence:.0%} CI is the "
        "Student t interval. Accuracies in %, differences in percentage points."
    )
    md += ["", *_md_rows(rows, confidence), ""]
    if differences:
        md += ["## Difference", "", *_md_differences(differences, confidence), ""]
        md += [
            f"- {verdict(c.diff, c.metric, c.label_a, c.label_b, alpha=alpha)}" for c in differences
        ]
        md.append("")
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    atomic_write(Path(md_path), lambda fh: fh.write("\n".join(md)))

    fields = ["arm", "label", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    atomic_write(Path(csv_path), lambda fh: write_csv(fh, fields, rows))
    if differences:
        diff_fields = [
            "arm_a",
            "arm_b",
            "label_a",
            "label_b",
            "metric",
            "n_a",
            "n_b",
            "mean_diff",
            "ci_low",
            "ci_high",
            "t",
            "df",
            "p_value",
        ]
        diff_rows = [
            {
                "arm_a": c.arm_a,
                "arm_b": c.arm_b,
                "label_a": c.label_a,
                "label_b": c.label_b,
                "metric": c.metric,
                "n_a": c.diff.n_a,
                "n_b": c.diff.n_b,
                "mean_diff": c.diff.mean_diff,
                "ci_low": c.diff.ci_low,
                "ci_high": c.diff.ci_high,
                "t": c.diff.t,
                "df": c.diff.df,
                "p_value": c.diff.p_value,
            }
            for c in differences
        ]
        csv_path = Path(csv_path)
        diff_path = csv_path.with_name(f"{csv_path.stem}_differences{csv_path.suffix}")
        atomic_write(diff_path, lambda fh: write_csv(fh, diff_fields, diff_rows))


def write_csv(fh: IO[str], fields: Sequence[str], rows: Sequence[Mapping]) -> None:
    # repr() of a Python float round-trips exactly; csv writes floats via str() == repr().
    writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()})
