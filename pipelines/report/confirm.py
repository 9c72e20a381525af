"""A confirmation's report: candidates ranked on test, each Welch-tested against the baseline.

A study's search measures every trial once, with one seed, and its best is the best of many
noisy values, so it flatters itself. A confirmation retrains the k best candidates and the
baseline on fresh seeds; this module turns those runs into the answer:

- the **confirmed winner** is the arm with the best mean *validation* metric (what the search
  optimised), so that the test set plays no part in choosing;
- every candidate's *test* metric is compared with the baseline's by Welch's test, and the
  k p-values are Holm-corrected together (`pipelines.report.stats.holm`): "beats the
  baseline" means a Holm-adjusted p < α in the better direction;
- the verdict line says whether the study's best (the best candidate on validation) beats
  the baseline beyond noise.

`write_confirm_report` writes the comparison's usual curves and metric tables
(`pipelines.report.compare.write_report`) plus `confirm.md`, `confirm.csv` and `ranking.png`,
the arms ranked by mean test metric with 95% CIs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.report.compare import write_report
from pipelines.report.figures import plot_ranking
from pipelines.report.results import (
    RunResult,
    finals,
    finished_runs,
    is_accuracy,
    label_of,
    lower_is_better,
    mlflow_key,
)
from pipelines.report.stats import Difference, Summary, holm, summarize, welch_test
from pipelines.report.tables import md_cell, write_csv
from pipelines.report.verdict import fmt_value, format_p, verdict
from src.files import atomic_write

__all__ = ["ConfirmReport", "Ranked", "confirm_verdict", "rank", "write_confirm_report"]

TEST_METRIC = "test/acc"


@dataclass(frozen=True)
class Ranked:
    """One arm of a confirmation: its summaries and, for a candidate, its test vs the baseline."""

    arm: str
    label: str
    select: Summary  # the validation metric the winner is chosen on
    test: Summary
    diff: Difference | None  # candidate − baseline on the test metric; None for the baseline
    p_holm: float  # NaN for the baseline and for a test that could not be run
    beats: bool  # Holm-adjusted p < α, in the better direction


@dataclass(frozen=True)
class ConfirmReport:
    rows: list[Ranked]  # by mean test metric, best first (arms without a value last)
    winner: str | None  # the best mean validation metric; None if no run finished
    best_candidate: str | None  # the study's best: the best candidate on validation
    verdict: str
    summary: dict[str, float]  # MLflow-ready metrics


def _better(a: float, b: float, lower: bool) -> bool:
    return a < b if lower else a > b


def _best(rows: Sequence[Ranked], lower: bool) -> Ranked | None:
    """The row with the best finite validation mean; the first one on ties."""
    best: Ranked | None = None
    for row in rows:
        if math.isfinite(row.select.mean) and (
                best is None or _better(row.select.mean, best.select.mean, lower)):
            best = row
    return best


def rank(results: Sequence[RunResult], candidates: Sequence[str], baseline: str,
         select_metric: str, labels: Mapping[str, str] | None = None,
         test_metric: str = TEST_METRIC, alpha: float = 0.01) -> ConfirmReport:
    """Summaries, Holm-corrected Welch tests and the winner of a confirmation (FINISHED runs).

    `candidates` are in the search's order (its best first), which breaks ties.
    """
    finished = finished_runs(results)
    base_test = finals(finished, baseline, test_metric)
    diffs = [welch_test(finals(finished, arm, test_metric), base_test) for arm in candidates]
    adjusted = holm([d.p_value for d in diffs])
    test_lower = lower_is_better(test_metric)
    rows = [Ranked(arm, label_of(arm, labels), summarize(finals(finished, arm, select_metric)),
                   summarize(finals(finished, arm, test_metric)), d, p,
                   p < alpha and _better(d.mean_diff, 0.0, test_lower))
            for arm, d, p in zip(candidates, diffs, adjusted, strict=True)]
    rows.append(Ranked(baseline, label_of(baseline, labels),
                       summarize(finals(finished, baseline, select_metric)),
                       summarize(base_test), None, math.nan, False))
    select_lower = lower_is_better(select_metric)
    winner = _best(rows, select_lower)
    best_candidate = _best(rows[:-1], select_lower)

    def order(row: Ranked) -> tuple[bool, float]:
        mean = row.test.mean
        return (not math.isfinite(mean), mean if test_lower else -mean)

    rows.sort(key=order)  # stable: ties keep the search's order
    text = confirm_verdict(rows, winner, best_candidate, baseline, select_metric, test_metric,
                           alpha)
    summary: dict[str, float] = {"confirm/candidates": float(len(candidates))}
    for place, row in enumerate(rows, start=1):
        key = f"confirm/{mlflow_key(row.arm)}"
        summary[f"{key}/rank"] = float(place)
        if row.diff is not None:
            summary[f"{key}/p_welch"] = row.diff.p_value
            summary[f"{key}/p_holm"] = row.p_holm
            summary[f"{key}/beats"] = float(row.beats)
    summary = {k: v for k, v in summary.items() if math.isfinite(v)}
    return ConfirmReport(rows, winner.arm if winner else None,
                         best_candidate.arm if best_candidate else None, text, summary)


def confirm_verdict(rows: Sequence[Ranked], winner: Ranked | None, best: Ranked | None,
                    baseline: str, select_metric: str, test_metric: str, alpha: float) -> str:
    """Which arm validation confirms, then whether the study's best beats the baseline on test.

    The second half is `verdict` on the Holm-adjusted p; a candidate that beats the baseline
    on test without being the best on validation is named too, since the table shows it.
    """
    base = next(r for r in rows if r.arm == baseline)
    if winner is None or best is None or best.diff is None:
        return (f"not confirmable: no {'candidate' if winner else 'arm'} finished a run "
                f"(see the excluded runs in metrics.md)")
    def fmt(x: float) -> str:
        return fmt_value(select_metric, x) + (" %" if is_accuracy(select_metric) else "")

    if winner.arm == baseline:
        chosen = (f"{base.label} keeps the best {select_metric} ({fmt(base.select.mean)}; the "
                  f"best candidate, {best.label}, {fmt(best.select.mean)})")
    else:
        chosen = (f"{winner.label} is the confirmed best on {select_metric} "
                  f"({fmt(winner.select.mean)}; {base.label} {fmt(base.select.mean)})")
    m = sum(1 for r in rows if r.diff is not None)
    tested = verdict(best.diff, test_metric, best.label, base.label, alpha=alpha,
                     adjusted=(best.p_holm, m))
    others = [r.label for r in rows if r.beats and r.arm != best.arm]
    also = f"; {', '.join(others)} also beat{'s' if len(others) == 1 else ''} it" if others else ""
    return f"{chosen}, mean of {best.select.n} seeds; {tested}{also}"


def _md(report: ConfirmReport, select_metric: str, test_metric: str, alpha: float,
        seeds: Sequence[int]) -> str:
    unit = " %" if is_accuracy(test_metric) else ""
    lines = [
        "# Confirmation", "",
        f"The search's best distinct trials and the baseline, retrained with seeds "
        f"{list(seeds)} (none the search used). Ranked by mean {test_metric}; the confirmed "
        f"winner (**bold**) has the best mean {select_metric}. Welch's test of each candidate "
        f"against the baseline on {test_metric}, Holm-corrected over the "
        f"{sum(r.diff is not None for r in report.rows)} tests; beats: Holm p < {alpha:g}.",
        "",
        f"| rank | arm | {select_metric} mean ± std | {test_metric} mean ± std | 95% CI | "
        "Δ vs baseline (95% CI) | Welch p | Holm p | beats |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for place, r in enumerate(report.rows, start=1):
        name = md_cell(r.label)
        name = f"**{name}**" if r.arm == report.winner else name
        sel = (f"{fmt_value(select_metric, r.select.mean)} ± "
               f"{fmt_value(select_metric, r.select.std)}")
        test = f"{fmt_value(test_metric, r.test.mean)} ± {fmt_value(test_metric, r.test.std)}"
        ci = (f"[{fmt_value(test_metric, r.test.ci_low)}, "
              f"{fmt_value(test_metric, r.test.ci_high)}]")
        if r.diff is None:
            delta, p_w, p_h, beats = "baseline", "", "", ""
        else:
            d = r.diff
            delta = (f"{fmt_value(test_metric, d.mean_diff, True)} "
                     f"[{fmt_value(test_metric, d.ci_low, True)}, "
                     f"{fmt_value(test_metric, d.ci_high, True)}]")
            p_w, p_h, beats = format_p(d.p_value), format_p(r.p_holm), "yes" if r.beats else "no"
        lines.append(f"| {place} | {name} (n={r.test.n}) | {sel} | {test}{unit} | {ci} | "
                     f"{delta} | {p_w} | {p_h} | {beats} |")
    lines += ["", f"Verdict: {report.verdict}", ""]
    return "\n".join(lines)


def _csv_rows(report: ConfirmReport) -> list[dict]:
    out = []
    for place, r in enumerate(report.rows, start=1):
        d = r.diff
        out.append({"rank": place, "arm": r.arm, "label": r.label,
                    "winner": r.arm == report.winner, "n": r.test.n,
                    "select_mean": r.select.mean, "select_std": r.select.std,
                    "test_mean": r.test.mean, "test_std": r.test.std,
                    "test_ci_low": r.test.ci_low, "test_ci_high": r.test.ci_high,
                    "diff_mean": d.mean_diff if d else math.nan,
                    "diff_ci_low": d.ci_low if d else math.nan,
                    "diff_ci_high": d.ci_high if d else math.nan,
                    "p_welch": d.p_value if d else math.nan, "p_holm": r.p_holm,
                    "beats_baseline": r.beats})
    return out


def write_confirm_report(folder: Path, results: Sequence[RunResult], candidates: Sequence[str],
                         baseline: str, select_metric: str, seeds: Sequence[int],
                         labels: Mapping[str, str] | None = None, alpha: float = 0.01
                         ) -> tuple[dict[str, float], ConfirmReport]:
    """The comparison's report (arms in ranked order) plus the confirmation's table, CSV and
    ranking figure into `folder`; returns the parent's metrics and the ranking."""
    report = rank(results, candidates, baseline, select_metric, labels, alpha=alpha)
    arms = [r.arm for r in report.rows]
    compared = write_report(results, arms, folder, labels=labels, compare=None,
                            metric=TEST_METRIC, alpha=alpha,
                            metrics=tuple(dict.fromkeys((select_metric, "val/acc", TEST_METRIC,
                                                         "test/loss"))))
    text = _md(report, select_metric, TEST_METRIC, alpha, seeds)
    atomic_write(folder / "confirm.md", lambda fh: fh.write(text))
    rows = _csv_rows(report)
    atomic_write(folder / "confirm.csv", lambda fh: write_csv(fh, list(rows[0]), rows))
    figure_rows = [{"label": r.label, "mean": r.test.mean, "ci_low": r.test.ci_low,
                    "ci_high": r.test.ci_high, "baseline": r.diff is None,
                    "winner": r.arm == report.winner,
                    "note": "baseline" if r.diff is None else f"Holm p={format_p(r.p_holm)}"}
                   for r in report.rows]
    plot_ranking(figure_rows, folder / "ranking.png", TEST_METRIC,
                 f"Confirmation, seeds {list(seeds)}: mean {TEST_METRIC}, 95% CI\n"
                 f"bold: the winner (best mean {select_metric}); dashed: the baseline")
    return {**compared.summary, **report.summary}, report
