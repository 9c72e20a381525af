"""A grid's report: a row per cell (`grid.csv`, `grid.md`) and the figures its shape calls for.

A grid (pipelines.grid) is a comparison whose arms are every combination of a few
optimizer settings; `cells` maps each arm to its coordinates, e.g.
{"beta1": 0.9, "beta2": 0.999, "lr": 0.001, "bias_correction": True}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.report.figures import plot_beta_heatmap, plot_bias_correction
from pipelines.report.results import RunResult, finals, finished_runs, is_accuracy, mlflow_key
from pipelines.report.stats import summarize, welch_test
from pipelines.report.tables import write_csv
from pipelines.report.verdict import fmt_value, format_p
from src.files import atomic_write

__all__ = ["GRID_METRICS", "beta_matrix_md", "bias_correction_md", "grid_table",
           "write_grid_report"]

GRID_METRICS: tuple[str, ...] = ("val/loss", "val/acc", "test/acc")
_EPOCH1 = ("val/loss", "val/acc")  # also summarised after the first epoch (history[0])


def grid_table(
    results: Sequence[RunResult], cells: Mapping[str, Mapping[str, object]],
    metrics: Sequence[str] = GRID_METRICS,
) -> list[dict]:
    """One row per cell: coordinates, runs / finished, and per metric mean, std and n over
    FINISHED runs (final values; `<metric>@1` for the value after the first epoch)."""
    rows: list[dict] = []
    for arm, coords in cells.items():
        runs = [r for r in results if r.arm == arm]
        finished = finished_runs(runs)
        row: dict = {"arm": arm, **coords, "runs": len(runs), "finished": len(finished)}
        columns = [(m, [r.final[m] for r in finished if m in r.final]) for m in metrics]
        columns += [(f"{m}@1", [r.history[m][0] for r in finished if r.history.get(m)])
                    for m in _EPOCH1]
        for name, values in columns:
            s = summarize(values)
            row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"] = s.mean, s.std, s.n
        rows.append(row)
    return rows


def _mean_std(row: Mapping, key: str, acc: bool) -> str:
    mean, std = row.get(f"{key}_mean", math.nan), row.get(f"{key}_std", math.nan)
    if not math.isfinite(mean):
        return "diverged" if row.get("finished", 0) == 0 else "n/a"
    text = (f"{mean * 100:.2f} ± {std * 100:.2f}" if acc else
            f"{mean:.3g} ± {std:.3g}" if abs(mean) >= 1000 else f"{mean:.4f} ± {std:.4f}")
    if row.get("finished", 0) < row.get("runs", 0):
        text += f" ({row['finished']}/{row['runs']})"
    return text


def beta_matrix_md(rows: Sequence[Mapping], metric: str) -> list[str]:
    """A Markdown matrix (β1 rows × β2 columns) of ``metric``: mean ± std over seeds."""
    beta1s = sorted({float(r["beta1"]) for r in rows})
    beta2s = sorted({float(r["beta2"]) for r in rows})
    by_cell = {(float(r["beta1"]), float(r["beta2"])): r for r in rows}
    acc = is_accuracy(metric)
    lines = [f"| β1 \\ β2 | {' | '.join(f'{b:g}' for b in beta2s)} |",
             "|---|" + "---:|" * len(beta2s)]
    for b1 in beta1s:
        cells = []
        for b2 in beta2s:
            r = by_cell.get((b1, b2))
            text = _mean_std(r, metric, acc) if r is not None else ""
            if r is not None and b1 >= math.sqrt(b2):
                text += " †"
            cells.append(text)
        lines.append(f"| **{b1:g}** | {' | '.join(cells)} |")
    return lines


def bias_correction_md(rows: Sequence[Mapping], results: Sequence[RunResult],
                       metric: str = "val/loss") -> list[str]:
    """A Markdown table per (β1, β2, α): ``metric`` after epoch 1 and at the end, with and
    without bias correction, and Welch's test of the final difference (without − with)."""
    acc = is_accuracy(metric)
    unit = " (%)" if acc else ""
    lines = [f"| β1 | β2 | α | {metric}{unit} @1 with | @1 without | final with | "
             "final without | Δ final (without − with) | Welch p |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pairs: dict[tuple[float, float, float], dict[bool, Mapping]] = {}
    for r in rows:
        key = (float(r["beta1"]), float(r["beta2"]), float(r["lr"]))
        pairs.setdefault(key, {})[bool(r["bias_correction"])] = r
    for (b1, b2, lr), pair in sorted(pairs.items()):
        on, off = pair.get(True, {}), pair.get(False, {})
        d = welch_test(finals(results, off.get("arm", ""), metric),
                       finals(results, on.get("arm", ""), metric))
        delta = fmt_value(metric, d.mean_diff, True) if math.isfinite(d.mean_diff) else "n/a"
        lines.append(
            f"| {b1:g} | {b2:g} | {lr:g} | {_mean_std(on, metric + '@1', acc)} | "
            f"{_mean_std(off, metric + '@1', acc)} | {_mean_std(on, metric, acc)} | "
            f"{_mean_std(off, metric, acc)} | {delta} | {format_p(d.p_value)} |")
    return lines


def write_grid_report(
    results: Sequence[RunResult],
    cells: Mapping[str, Mapping[str, object]],
    out_dir: Path,
) -> list[Path]:
    """`grid.csv` (a row per cell, see :func:`grid_table`), `grid.md` and the figures the grid's
    shape calls for: `heatmap.png` when β1 and β2 both vary (one per combination of the other
    coordinates: `heatmap_<...>.png`), `bias_correction.png` when bias correction is varied.
    Returns the paths of the figures written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = grid_table(results, cells)
    axes = {k for coords in cells.values() for k in coords}
    varied = {k for k in axes if len({c.get(k) for c in cells.values()}) > 1}
    figures: list[Path] = []
    md = ["# Grid", "",
          f"{len(cells)} cells, {len(results)} runs. Mean ± std over seeds of FINISHED runs; "
          "accuracies in %; `(k/n)`: only k of n seeds finished (the others diverged).", ""]

    if {"beta1", "beta2"} <= varied:
        others = sorted(varied - {"beta1", "beta2"})
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault(tuple(r.get(k) for k in others), []).append(r)
        for values, group in groups.items():
            where = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
            name = "heatmap" + "".join(f"_{k}={v}" for k, v in zip(others, values, strict=True))
            figures.append(plot_beta_heatmap(group, out_dir / f"{mlflow_key(name)}.png",
                                             title=where or None))
            for metric in ("val/loss", "val/acc"):
                md += [f"## Final {metric}" + (f" ({where})" if where else ""), "",
                       *beta_matrix_md(group, metric), ""]
        md += ["†: β1 ≥ √β2, outside the region where Zhang et al. (2022) show convergence.", ""]
    if "bias_correction" in varied and {"beta1", "beta2", "lr"} <= axes:
        figures.append(plot_bias_correction(rows, out_dir / "bias_correction.png"))
        for metric in ("val/loss", "val/acc"):
            md += [f"## Bias correction: {metric}", "", *bias_correction_md(rows, results, metric),
                   ""]

    fields = list(rows[0]) if rows else ["arm"]
    atomic_write(out_dir / "grid.csv", lambda fh: write_csv(fh, fields, rows))
    atomic_write(out_dir / "grid.md", lambda fh: fh.write("\n".join(md)))
    return figures
