"""Tests for pipelines.report: statistics against known answers, outputs on synthetic runs."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import special

from pipelines import report
from pipelines.report import (
    Difference,
    RunResult,
    Summary,
    band,
    compare_arms,
    format_p,
    metric_table,
    plot_curves,
    summarize,
    verdict,
    welch_test,
    write_report,
    write_tables,
)

T4_975 = 2.7764451051977987  # t(0.975, df=4), from tables
T1_975 = 12.706204736174705  # t(0.975, df=1)

BLUE, ORANGE = "β=(0.9, 0.999)", "β=(0.1, 0.1)"
LABELS = {"blog_default": BLUE, "low_betas": ORANGE}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Wikipedia, "Welch's t-test", worked example (two samples of 15).
WIKI_A = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WIKI_B = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


# --------------------------------------------------------------------------- summarize


def test_summarize_known_answer() -> None:
    s = summarize([1, 2, 3, 4, 5])
    half = T4_975 * math.sqrt(2.5) / math.sqrt(5)
    assert s.n == 5
    assert s.mean == pytest.approx(3.0)
    assert s.std == pytest.approx(math.sqrt(2.5))
    assert s.ci_low == pytest.approx(3 - half, rel=1e-12)
    assert s.ci_high == pytest.approx(3 + half, rel=1e-12)


def test_summarize_other_confidence_is_narrower() -> None:
    s90, s95 = summarize([1, 2, 3, 4, 5], 0.90), summarize([1, 2, 3, 4, 5])
    assert s95.ci_low < s90.ci_low < 3 < s90.ci_high < s95.ci_high


def test_summarize_degenerate_never_crashes() -> None:
    assert summarize([0.97]) == Summary(1, 0.97, 0.0, 0.97, 0.97)
    empty = summarize([])
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.mean, empty.std, empty.ci_low))
    # Non-finite values (a diverged run) are dropped and n says so.
    s = summarize([1.0, float("nan"), 3.0, float("inf")])
    assert (s.n, s.mean) == (2, 2.0)
    const = summarize([2.0, 2.0, 2.0])
    assert (const.std, const.ci_low, const.ci_high) == (0.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        summarize([1, 2], confidence=1.5)


# --------------------------------------------------------------------------- welch


def _welch_by_hand(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """t, df, two-sided p from the textbook formulas (p via the regularised beta)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p = special.betainc(df / 2, 0.5, df / (df + t * t))  # P(|T_df| > |t|)
    return t, df, float(p)


def test_welch_wikipedia_example() -> None:
    d = welch_test(WIKI_A, WIKI_B)
    # Published rounded values...
    assert d.t == pytest.approx(-2.46, abs=0.01)
    assert d.df == pytest.approx(24.9, abs=0.1)
    assert d.p_value == pytest.approx(0.021, abs=0.001)
    # ...and the exact hand computation.
    t, df, p = _welch_by_hand(WIKI_A, WIKI_B)
    assert d.t == pytest.approx(t, rel=1e-10)
    assert d.df == pytest.approx(df, rel=1e-10)
    assert d.p_value == pytest.approx(p, rel=1e-8)
    assert d.mean_diff == pytest.approx(np.mean(WIKI_A) - np.mean(WIKI_B))
    assert (d.n_a, d.n_b) == (15, 15)
    # p < 0.05 <=> the 95% CI excludes 0, both sides from the same SE and df.
    assert d.ci_low < d.mean_diff < d.ci_high < 0
    se = math.sqrt(np.var(WIKI_A, ddof=1) / 15 + np.var(WIKI_B, ddof=1) / 15)
    assert (d.ci_high - d.ci_low) / 2 / se == pytest.approx(2.0595, abs=2e-3)  # t(.975, 24.9)


def test_welch_ci_touches_zero_exactly_at_p_equal_alpha() -> None:
    a, b = [1.0, 2.0, 4.0, 3.5], [0.0, 1.5, 0.5]
    d = welch_test(a, b, confidence=0.95)
    d_at_p = welch_test(a, b, confidence=1 - d.p_value)
    assert d_at_p.ci_low == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [([1.0], [2.0, 3.0], (1, 2)), ([], [2.0, 3.0], (0, 2)), ([], [], (0, 0))],
)
def test_welch_small_samples_are_nan(a: list[float], b: list[float], n: tuple[int, int]) -> None:
    d = welch_test(a, b)
    assert all(math.isnan(x) for x in (d.t, d.df, d.p_value, d.ci_low, d.ci_high))
    assert (d.n_a, d.n_b) == n
    assert math.isnan(d.mean_diff) == (0 in n)


@pytest.mark.parametrize("v", [0.98, 0.1, 0.3, 0.9761, 1 / 3])
def test_welch_two_constant_samples_is_nan_not_p_zero(v: float) -> None:
    # Float round-off in the mean must not turn "no spread at all" into p = 0.
    d = welch_test([v] * 7, [v - 0.03] * 5)
    assert d.mean_diff == pytest.approx(0.03)
    assert all(math.isnan(x) for x in (d.t, d.df, d.p_value, d.ci_low, d.ci_high))
    # One constant side is fine: the other side's variance carries the test.
    assert math.isfinite(welch_test([v] * 3, [0.95, 0.96, 0.94]).p_value)


# --------------------------------------------------------------------------- band


def test_band_known_curves() -> None:
    mean, low, high = band([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    np.testing.assert_allclose(mean, [2.0, 3.0, 4.0])
    # sd = √2 at every epoch, n = 2: half-width = t(1) · √2 / √2.
    np.testing.assert_allclose(high - mean, T1_975, rtol=1e-10)
    np.testing.assert_allclose(mean - low, T1_975, rtol=1e-10)


def test_band_matches_summarize_per_epoch() -> None:
    curves = [[1.0, 5.0], [2.0, 4.0], [3.0, 6.5], [4.0, 5.5], [5.0, 4.5]]
    mean, low, high = band(curves)
    for epoch in range(2):
        s = summarize([c[epoch] for c in curves])
        assert (mean[epoch], low[epoch], high[epoch]) == pytest.approx(
            (s.mean, s.ci_low, s.ci_high)
        )


def test_band_ragged_uses_per_epoch_n() -> None:
    mean, low, high = band([[1.0, 2.0, 3.0], [3.0, 4.0]])
    np.testing.assert_allclose(mean, [2.0, 3.0, 3.0])
    assert low[2] == high[2] == 3.0  # only one run reached epoch 3: zero-width band
    empty = band([])
    assert all(x.size == 0 for x in empty)


# --------------------------------------------------------------------------- synthetic runs


def _runs(
    seeds: int = 3, epochs: int = 4, gap: float = 0.02, noise: float = 0.002
) -> list[RunResult]:
    rng = np.random.default_rng(1234)
    out = []
    for arm, acc, loss in (("blog_default", 0.98, 0.07), ("low_betas", 0.98 - gap, 0.15)):
        for seed in range(seeds):
            e = np.arange(epochs)
            history = {
                "train/loss": list(loss * 4 * np.exp(-0.6 * e) + rng.uniform(0, 0.01, epochs)),
                "val/acc": list(acc - 0.08 * np.exp(-e) + rng.normal(0, noise, epochs)),
            }
            final = {
                "val/acc": acc + rng.normal(0, noise),
                "test/acc": acc + rng.normal(0, noise),
                "test/loss": loss + rng.normal(0, noise),
            }
            out.append(RunResult(arm, seed, history, final))
    return out


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


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

    monkeypatch.setattr(report.Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        plot_curves(_runs(), ["blog_default"], target)
    assert target.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)


def test_arm_colors() -> None:
    colors = report._arm_colors(["low_betas", "blog_default", "x", "y"], LABELS, None)
    assert colors["blog_default"] == "tab:blue"
    assert colors["low_betas"] == "tab:orange"
    assert len(set(colors.values())) == 4
    # No recognisable labels: first arm is blue, the rest follow tab10 order.
    assert report._arm_colors(["a", "b", "c"], None, None) == {
        "a": "tab:blue",
        "b": "tab:orange",
        "c": "tab:green",
    }
    # User-supplied colours win and are not reused.
    forced = report._arm_colors(["a", "b"], None, {"b": "tab:blue"})
    assert forced == {"b": "tab:blue", "a": "tab:orange"}


# --------------------------------------------------------------------------- tables


def test_metric_table_rows_and_failed_excluded() -> None:
    runs = _runs()
    runs.append(RunResult("low_betas", 99, {}, {"test/acc": 0.1}, status="FAILED"))
    rows = metric_table(runs, ["low_betas", "blog_default"], labels=LABELS)
    assert [(r["arm"], r["metric"]) for r in rows[:3]] == [
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


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (3.2e-05, "3.2e-05"),
        (0.021, "0.021"),
        (0.0, "< 1e-300"),
        (1e-320, "< 1e-300"),
        (float("nan"), "n/a"),
        (0.5, "0.500"),
    ],
)
def test_format_p(p: float, text: str) -> None:
    assert format_p(p) == text


# --------------------------------------------------------------------------- verdict


def test_verdict_significant() -> None:
    d = Difference(0.0112, 0.0095, 0.0129, 9.1, 7.9, 2.1e-06, 5, 5)
    assert verdict(d, "test/acc", BLUE, ORANGE) == (
        f"{BLUE} beats {ORANGE} on test/acc by 1.12 points "
        "(95% CI 0.95–1.29, Welch p=2.1e-06, n=5 vs 5)"
    )
    # B better on accuracy: flipped to B − A.
    flipped = Difference(-0.0112, -0.0129, -0.0095, -9.1, 7.9, 2.1e-06, 5, 5)
    assert verdict(flipped, "test/acc", BLUE, ORANGE).startswith(
        f"{ORANGE} beats {BLUE} on test/acc by 1.12 points (95% CI 0.95–1.29"
    )
    # Lower loss is better: a negative A − B means A wins.
    loss = Difference(-0.05, -0.06, -0.04, -12.0, 8.0, 1e-7, 3, 3)
    assert verdict(loss, "test/loss", BLUE, ORANGE).startswith(
        f"{BLUE} beats {ORANGE} on test/loss by 0.0500 (95% CI 0.0400–0.0600"
    )


def test_verdict_not_significant_and_not_testable() -> None:
    d = Difference(0.001, -0.002, 0.004, 0.8, 7.5, 0.42, 5, 5)
    text = verdict(d, "test/acc", BLUE, ORANGE)
    assert text.startswith(f"no significant difference between {BLUE} and {ORANGE} on test/acc")
    assert "p=0.420" in text and "-0.20 to 0.40" in text
    # Significant at 0.05 but not at the default 0.01.
    d2 = Difference(0.01, 0.001, 0.019, 2.5, 8, 0.03, 5, 5)
    assert verdict(d2, "test/acc", "A", "B").startswith("no significant")
    assert verdict(d2, "test/acc", "A", "B", alpha=0.05).startswith("A beats B")

    assert "not testable (n<2" in verdict(welch_test([0.9], [0.8, 0.85]), "test/acc", "A", "B")
    assert "not testable (zero variance" in verdict(
        welch_test([0.9, 0.9], [0.8, 0.8]), "test/acc", "A", "B"
    )


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
