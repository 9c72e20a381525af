"""pipelines.report.grids: the grid's table, Markdown and figures on synthetic cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.report.grids import write_grid_report
from pipelines.report.results import RunResult


def _fake_results(cells: dict[str, dict], diverged: set[str] = frozenset()) -> list[RunResult]:
    rng = np.random.default_rng(0)
    results = []
    for arm, c in cells.items():
        for seed in (0, 1, 2):
            if arm in diverged:
                results.append(RunResult(arm, seed, status="FAILED: training loss became nan"))
                continue
            loss = 0.1 + c["beta1"] + (0.0 if c.get("bias_correction", True) else 0.05)
            loss += 0.01 * rng.standard_normal()
            results.append(RunResult(
                arm, seed, history={"val/loss": [2 * loss, loss], "val/acc": [0.8, 1 - loss / 4]},
                final={"val/loss": loss, "val/acc": 1 - loss / 4, "test/acc": 1 - loss / 4}))
    return results


def test_heatmap_report_marks_diverged_cells_and_the_boundary(tmp_path: Path) -> None:
    cells = {f"beta_{b1:g}_{b2:g}": {"beta1": b1, "beta2": b2, "lr": 1e-3,
                                     "bias_correction": True}
             for b1 in (0.0, 0.5, 0.9) for b2 in (0.1, 0.999)}
    results = _fake_results(cells, diverged={"beta_0.9_0.1"})
    figures = write_grid_report(results, cells, tmp_path)
    assert figures == [tmp_path / "heatmap.png"]
    md = (tmp_path / "grid.md").read_text()
    assert "| **0.9** | diverged † | " in md  # 0.9 ≥ √0.1: outside the convergent region
    assert "| **0** | 0.1" in md and "†" not in md.split("| **0** |")[1].split("\n")[0]
    assert (tmp_path / "grid.csv").read_text().count("\n") == 1 + len(cells)


def test_bias_correction_report_has_figure_and_welch_table(tmp_path: Path) -> None:
    cells = {}
    for b2 in (0.99, 0.999):
        for lr in (1e-3, 1e-2):
            for bc in (True, False):
                cells[f"b2_{b2}_lr_{lr}_{bc}"] = {"beta1": 0.9, "beta2": b2, "lr": lr,
                                                  "bias_correction": bc}
    figures = write_grid_report(_fake_results(cells), cells, tmp_path)
    assert figures == [tmp_path / "bias_correction.png"]
    md = (tmp_path / "grid.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 0.9 | 0.99 | 0.001 |")]
    assert len(rows) == 2  # one table for val/loss, one for val/acc
    delta, p = rows[0].rstrip(" |").split(" | ")[-2:]
    assert float(delta) == pytest.approx(0.05, abs=0.03) and float(p) < 0.05
