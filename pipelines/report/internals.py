"""The report on Adam's internals: `internals.png`, `internals.md`, `internals.csv`.

Runs with `internals.enabled=true` log `internals/*` per epoch (src.internals): quantiles
over parameter elements of the effective step, of 1/(√v̂+ε) and of the update-to-weight
ratio. The figure shows, per arm, the mean over seeds of the median with the mean p10–p90
range shaded; the table the same numbers at the last logged epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.report.figures import INTERNALS_PANELS, INTERNALS_PREFIX, plot_internals
from pipelines.report.results import RunResult, finished_runs, label_of
from pipelines.report.stats import summarize
from pipelines.report.tables import md_cell, write_csv
from src.files import atomic_write

__all__ = ["has_internals", "internals_table", "write_internals"]


def has_internals(results: Sequence[RunResult]) -> bool:
    """Whether any FINISHED run logged `internals/*` (i.e. ran with internals enabled)."""
    return any(k.startswith(INTERNALS_PREFIX) for r in finished_runs(results) for k in r.history)


def internals_table(
    results: Sequence[RunResult], arms: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[dict]:
    """Per arm, the mean over seeds of every `internals/*` value at the last logged epoch."""
    keys = [f"{k}_{q}" for k, _ in INTERNALS_PANELS for q in ("p10", "p50", "p90")]
    keys += ["update_norm_ratio", "frozen_frac"]
    rows: list[dict] = []
    for arm in arms:
        row: dict = {"arm": arm, "label": label_of(arm, labels)}
        runs = [r for r in finished_runs(results) if r.arm == arm]
        row["n"] = sum(1 for r in runs if r.history.get(INTERNALS_PREFIX + "step_p50"))
        epochs = [r.history[INTERNALS_PREFIX + "epoch"][-1] for r in runs
                  if r.history.get(INTERNALS_PREFIX + "epoch")]
        row["epoch"] = max(epochs) if epochs else math.nan
        for key in keys:
            values = [r.history[INTERNALS_PREFIX + key][-1] for r in runs
                      if r.history.get(INTERNALS_PREFIX + key)]
            row[key] = summarize(values).mean
        rows.append(row)
    return rows


def _sci(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else "n/a"


def write_internals(
    results: Sequence[RunResult],
    arms: Sequence[str],
    out_dir: Path,
    labels: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
) -> Path | None:
    """`internals.png`, `internals.md`, `internals.csv` in ``out_dir`` when the runs logged
    internals (see :func:`has_internals`); returns the figure's path, else None."""
    if not has_internals(results):
        return None
    out_dir = Path(out_dir)
    figure = plot_internals(results, arms, out_dir / "internals.png", labels, colors)
    rows = internals_table(results, arms, labels)
    md = [
        "# Adam's internals",
        "",
        "At the last logged epoch, over parameter elements (src.internals), mean over seeds: "
        "p10 / **median** / p90 of the effective step |α·m̂/(√v̂+ε)|, of 1/(√v̂+ε) and of the "
        "element-wise update-to-weight ratio |Δθ|/|θ|; ‖Δθ‖/‖θ‖ over all weights; and the "
        "fraction of elements with v = 0 (left out of the percentiles).",
        "",
        "| Arm | n | epoch | step | 1/(√v̂+ε) | \\|Δθ\\|/\\|θ\\| | ‖Δθ‖/‖θ‖ | v = 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            " / ".join((_sci(r[f"{k}_p10"]), f"**{_sci(r[f'{k}_p50'])}**", _sci(r[f"{k}_p90"])))
            for k, _ in INTERNALS_PANELS
        ]
        frozen = f"{r['frozen_frac'] * 100:.1f} %" if math.isfinite(r["frozen_frac"]) else "n/a"
        epoch = f"{r['epoch']:.0f}" if math.isfinite(r["epoch"]) else "n/a"
        lines = [md_cell(r["label"]), str(r["n"]), epoch, *cells,
                 _sci(r["update_norm_ratio"]), frozen]
        md.append("| " + " | ".join(lines) + " |")
    md.append("")
    atomic_write(out_dir / "internals.md", lambda fh: fh.write("\n".join(md)))
    fields = list(rows[0]) if rows else ["arm"]
    atomic_write(out_dir / "internals.csv", lambda fh: write_csv(fh, fields, rows))
    return figure
