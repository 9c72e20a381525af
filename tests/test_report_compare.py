"""pipelines.report.compare: a comparison's whole report folder on synthetic runs."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.report.compare import write_report
from pipelines.report.results import RunResult
from pipelines.report.stats import welch_test
from tests.reports import BLUE, LABELS, ORANGE, PNG_MAGIC
from tests.reports import no_temp_files as _no_temp_files
from tests.reports import synthetic_runs as _runs

# --------------------------------------------------------------------------- write_report


def test_write_report_end_to_end(tmp_path: Path) -> None:
    runs = _runs(seeds=3, epochs=4)
    failed = RunResult(
        "low_betas",
        7,
        {"train/loss": [9.0], "val/acc": [0.1]},
        {"val/acc": 0.1, "test/acc": 0.1, "test/loss": 9.0},
        status="FAILED",
    )
    out_dir = tmp_path / "nested" / "report"
    rep = write_report(
        [*runs, failed],
        ["blog_default", "low_betas"],
        out_dir,
        labels=LABELS,
        compare=("blog_default", "low_betas"),
    )

    assert rep.figure.read_bytes()[:8] == PNG_MAGIC
    assert rep.table_md.exists() and rep.table_csv.exists()
    assert rep.verdict is not None and rep.verdict.startswith(f"{BLUE} beats {ORANGE} on test/acc")
    assert "n=3 vs 3" in rep.verdict

    # The FAILED run is excluded everywhere.
    low = [r.final["test/acc"] for r in runs if r.arm == "low_betas"]
    assert rep.summary["low_betas/test_acc_mean"] == pytest.approx(np.mean(low))
    assert rep.summary["low_betas/test_acc_std"] == pytest.approx(np.std(low, ddof=1))
    assert rep.summary["low_betas/n_finished"] == 3.0
    with rep.table_csv.open(newline="", encoding="utf-8") as fh:
        assert {int(r["n"]) for r in csv.DictReader(fh)} == {3}
    md = rep.table_md.read_text(encoding="utf-8")
    assert "seed=7 (status FAILED)" in md

    expected = welch_test([r.final["test/acc"] for r in runs if r.arm == "blog_default"], low)
    assert rep.summary["diff/test_acc_mean"] == pytest.approx(expected.mean_diff)
    assert rep.summary["diff/test_acc_p"] == pytest.approx(expected.p_value)
    for key in ("blog_default/val_acc_mean", "blog_default/test_loss_std", "diff/test_loss_p"):
        assert key in rep.summary
    # Flat, MLflow-safe and finite.
    for key, value in rep.summary.items():
        assert re.fullmatch(r"[0-9A-Za-z_\-./ ]+", key), key
        assert isinstance(value, float) and math.isfinite(value)
    assert _no_temp_files(out_dir)


def test_write_report_without_compare_and_bad_compare(tmp_path: Path) -> None:
    rep = write_report(_runs(seeds=2), ["blog_default", "low_betas"], tmp_path)
    assert rep.verdict is None
    assert not any(k.startswith("diff/") for k in rep.summary)
    with pytest.raises(ValueError):
        write_report(_runs(seeds=2), ["blog_default"], tmp_path, compare=("blog_default", "zz"))


def test_write_report_single_seed_is_not_testable(tmp_path: Path) -> None:
    rep = write_report(
        _runs(seeds=1),
        ["blog_default", "low_betas"],
        tmp_path,
        compare=("blog_default", "low_betas"),
    )
    assert rep.verdict is not None and "not testable (n<2" in rep.verdict
    assert "diff/test_acc_mean" in rep.summary and "diff/test_acc_p" not in rep.summary
