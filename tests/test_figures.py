"""pipelines.report.figures: PNGs written whole (or not at all), colours, grid boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.report import figures
from pipelines.report.figures import plot_curves
from tests.reports import LABELS, PNG_MAGIC
from tests.reports import no_temp_files as _no_temp_files
from tests.reports import synthetic_runs as _runs

# --------------------------------------------------------------------------- plot


def test_plot_curves_writes_png(tmp_path: Path) -> None:
    out = plot_curves(_runs(), ["blog_default", "low_betas"], tmp_path / "c.png", labels=LABELS)
    assert out == tmp_path / "c.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    assert _no_temp_files(tmp_path)


def test_plot_curves_handles_missing_metric_and_empty_arm(tmp_path: Path) -> None:
    out = plot_curves(
        _runs(), ["blog_default", "nobody"], tmp_path / "c.png", metrics=("train/loss", "val/xyz")
    )
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_curves_crash_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "c.png"
    target.write_bytes(b"old")

    def broken_savefig(self, fh, **kwargs):
        fh.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures.Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        plot_curves(_runs(), ["blog_default"], target)
    assert target.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)


def test_arm_colors() -> None:
    colors = figures._arm_colors(["low_betas", "blog_default", "x", "y"], LABELS, None)
    assert colors["blog_default"] == "tab:blue"
    assert colors["low_betas"] == "tab:orange"
    assert len(set(colors.values())) == 4
    # No recognisable labels: first arm is blue, the rest follow tab10 order.
    assert figures._arm_colors(["a", "b", "c"], None, None) == {
        "a": "tab:blue",
        "b": "tab:orange",
        "c": "tab:green",
    }
    # User-supplied colours win and are not reused.
    forced = figures._arm_colors(["a", "b"], None, {"b": "tab:blue"})
    assert forced == {"b": "tab:blue", "a": "tab:orange"}


def test_boundary_passes_through_cells_on_the_curve() -> None:
    # β1 = √β2 exactly at (0.3, 0.09) and (0.9, 0.81): cell centres (0, 0) and (1, 1).
    x, y = figures._boundary([0.3, 0.9], [0.09, 0.81], 0.5)
    assert (x[0], y[0]) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert (x[-1], y[-1]) == pytest.approx((1.0, 1.0), abs=1e-9)
    x, y = figures._boundary([0.0, 0.5], [0.5, 0.999], 0.5)  # √β2 > 0.5 everywhere: off the grid
    assert np.isnan(y).all()
