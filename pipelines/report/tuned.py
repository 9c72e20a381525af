"""A tuned comparison's step-size grid: the α chosen per arm, its table and its figure.

`choose_step_sizes` picks, per arm, the α with the best mean validation metric over the
grid's FINISHED runs (the smaller α on a tie: the safer one); an arm whose every α failed
gets none. `write_step_size_report` writes `step_sizes.md`, `step_sizes.csv` and
`step_sizes.png` (the metric against α per arm, the chosen α marked).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.report.figures import plot_step_sizes
from pipelines.report.results import (
    RunResult,
    finals,
    finished_runs,
    lower_is_better,
    mlflow_key,
)
from pipelines.report.stats import summarize
from pipelines.report.tables import md_cell, write_csv
from pipelines.report.verdict import fmt_value
from src.files import atomic_write

__all__ = ["choose_step_sizes", "step_size_rows", "write_step_size_report"]


def step_size_rows(results: Sequence[RunResult], cells: Mapping[str, tuple[str, float]],
                   metric: str) -> list[dict]:
    """One row per grid arm (arm, α, n, mean, std of `metric`), in the grid's order."""
    finished = finished_runs(results)
    rows = []
    for grid_arm, (arm, lr) in cells.items():
        s = summarize(finals(finished, grid_arm, metric))
        rows.append({"arm": arm, "lr": lr, "grid_arm": grid_arm, "n": s.n, "mean": s.mean,
                     "std": s.std, "runs": sum(1 for r in results if r.arm == grid_arm)})
    return rows


def choose_step_sizes(results: Sequence[RunResult], cells: Mapping[str, tuple[str, float]],
                      metric: str) -> dict[str, float]:
    """Per arm, the α with the best finite mean `metric` (the smaller α on ties)."""
    lower = lower_is_better(metric)
    best: dict[str, tuple[float, float]] = {}
    for row in step_size_rows(results, cells, metric):
        if not math.isfinite(row["mean"]):
            continue
        key = (row["mean"] if lower else -row["mean"], row["lr"])
        if row["arm"] not in best or key < best[row["arm"]]:
            best[row["arm"]] = key
    return {arm: lr for arm, (_, lr) in best.items()}


def write_step_size_report(folder: Path, results: Sequence[RunResult],
                           cells: Mapping[str, tuple[str, float]], chosen: Mapping[str, float],
                           metric: str) -> dict[str, float]:
    """The grid's table, CSV and figure into `folder`; MLflow metrics `step_size/<arm>`."""
    rows = step_size_rows(results, cells, metric)
    for row in rows:
        row["chosen"] = chosen.get(row["arm"]) == row["lr"]
    lines = ["# Step sizes", "",
             f"Each arm at each α of its grid; the comparison uses the α with the best mean "
             f"{metric} (**bold**). n: finished runs of those trained (a diverged run is "
             "not finished).", "",
             f"| arm | α | n | {metric} (mean ± std over n > 1 seeds) |", "|---|---:|---:|---:|"]
    for row in rows:
        value = ("n/a" if row["n"] == 0 else fmt_value(metric, row["mean"]) if row["n"] == 1
                 else f"{fmt_value(metric, row['mean'])} ± {fmt_value(metric, row['std'])}")
        lr = f"**{row['lr']:g}**" if row["chosen"] else f"{row['lr']:g}"
        lines.append(f"| {md_cell(row['arm'])} | {lr} | {row['n']}/{row['runs']} | {value} |")
    atomic_write(folder / "step_sizes.md", lambda fh: fh.write("\n".join(lines) + "\n"))
    fields = ["arm", "lr", "n", "runs", "mean", "std", "chosen"]
    atomic_write(folder / "step_sizes.csv", lambda fh: write_csv(fh, fields, rows))
    plot_step_sizes(rows, folder / "step_sizes.png", metric)
    return {f"step_size/{mlflow_key(arm)}": lr for arm, lr in chosen.items()}
