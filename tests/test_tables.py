"""pipelines.report.tables: per-arm rows, Welch differences, Markdown and CSV on disk."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from pipelines.report.results import RunResult
from pipelines.report.stats import summarize
from pipelines.report.tables import compare_arms, metric_table, write_tables
from pipelines.report.verdict import format_p
from tests.reports import BLUE, LABELS, ORANGE
from tests.reports import no_temp_files as _no_temp_files
from tests.reports import synthetic_runs as _runs

# --------------------------------------------------------------------------- tables


def test_metric_table_rows_and_failed_excluded() -> None:
    runs = _runs()
    runs.append(RunResult("low_betas", 99, {}, {"test/acc": 0.1}, status="FAILED"))
    rows = metric_table(runs, ["low_betas", "blog_default"], labels=LABELS)
    assert [(r["arm"], r["metric"]) for r in rows[:4]] == [
        ("low_betas", "train/loss"),
        ("low_betas", "val/acc"),
        ("low_betas", "test/acc"),
        ("low_betas", "test/loss"),
    ]
    row = next(r for r in rows if r["arm"] == "low_betas" and r["metric"] == "test/acc")
    expected = summarize([r.final["test/acc"] for r in _runs() if r.arm == "low_betas"])
    assert row["n"] == 3 and row["label"] == ORANGE
    assert (row["mean"], row["std"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (expected.mean, expected.std, expected.ci_low, expected.ci_high)
    )
    missing = metric_table(runs, ["ghost"], metrics=("test/acc",))
    assert missing[0]["n"] == 0 and math.isnan(missing[0]["mean"])


def _exact_rows() -> list[dict]:
    # mean 0.9761, std exactly 0.0012 → "97.61 ± 0.12 %"
    runs = [
        RunResult("blog_default", i, {}, {"test/acc": v, "test/loss": loss})
        for i, (v, loss) in enumerate([(0.9749, 0.0700), (0.9761, 0.0712), (0.9773, 0.0724)])
    ]
    runs += [
        RunResult("low_betas", i, {}, {"test/acc": v, "test/loss": 0.2})
        for i, v in enumerate([0.9600, 0.9620, 0.9640])
    ]
    return runs


def test_write_tables_markdown_and_csv(tmp_path: Path) -> None:
    runs = _exact_rows()
    metrics = ("test/acc", "test/loss")
    rows = metric_table(runs, ["blog_default", "low_betas"], metrics, LABELS)
    diffs = compare_arms(runs, "blog_default", "low_betas", metrics, LABELS)
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    write_tables(rows, diffs, md, csv_path)

    text = md.read_text(encoding="utf-8")
    s = summarize([0.9749, 0.9761, 0.9773])
    assert "97.61 ± 0.12 %" in text
    assert f"[{s.ci_low * 100:.2f}, {s.ci_high * 100:.2f}]" in text
    assert "0.0712 ± 0.0012" in text  # losses: 4 decimals
    assert "## Difference" in text
    d = diffs[0].diff
    assert f"{d.t:.3f}" in text and f"{d.df:.1f}" in text and format_p(d.p_value) in text
    assert f"{BLUE} beats {ORANGE} on test/acc" in text

    with csv_path.open(newline="", encoding="utf-8") as fh:
        parsed = list(csv.DictReader(fh))
    assert list(parsed[0]) == ["arm", "label", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    assert len(parsed) == len(rows)
    for got, want in zip(parsed, rows, strict=True):
        assert got["arm"] == want["arm"] and got["label"] == want["label"]
        assert int(got["n"]) == want["n"]
        for key in ("mean", "std", "ci_low", "ci_high"):
            assert float(got[key]) == want[key]  # full precision round-trip

    with (tmp_path / "t_differences.csv").open(newline="", encoding="utf-8") as fh:
        drows = list(csv.DictReader(fh))
    assert float(drows[0]["p_value"]) == d.p_value and float(drows[0]["df"]) == d.df
    assert _no_temp_files(tmp_path)


def test_write_tables_without_differences(tmp_path: Path) -> None:
    rows = metric_table(_exact_rows(), ["blog_default"], ("test/acc",))
    write_tables(rows, [], tmp_path / "t.md", tmp_path / "t.csv")
    assert "## Difference" not in (tmp_path / "t.md").read_text(encoding="utf-8")
    assert not (tmp_path / "t_differences.csv").exists()
