"""pipelines.report.stats against known answers; importing it needs no matplotlib."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import special

from pipelines.report.stats import Summary, band, holm, summarize, welch_test
from tests.conftest import REPO

T4_975 = 2.7764451051977987  # t(0.975, df=4), from tables
T1_975 = 12.706204736174705  # t(0.975, df=1)

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


# --------------------------------------------------------------------------- holm


def test_holm_wikipedia_example() -> None:
    # Wikipedia, "Holm–Bonferroni method", example: four hypotheses at α = 0.05; H4 (0.005 <
    # 0.05/4) and H1 (0.01 < 0.05/3) are rejected, H3 (0.03 > 0.05/2) stops the procedure.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_matches_r_p_adjust() -> None:
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") = 0.05 0.08 0.09 0.09 0.09
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    # capped at 1, and the running maximum carries past a smaller later product
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties: equal values


def test_holm_degenerate_cases() -> None:
    assert holm([]) == []
    assert holm([0.03]) == [0.03]  # one test: nothing to correct
    both = holm([0.01, math.nan])  # a test that could not be run still counts in m
    assert both[0] == pytest.approx(0.02) and math.isnan(both[1])
    assert math.isnan(holm([math.nan])[0])
    with pytest.raises(ValueError, match="p-values must lie in"):
        holm([0.1, 1.5])


def test_holm_rejects_what_the_step_down_procedure_rejects() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 8))
        p = rng.uniform(0, 0.1, m).round(3)  # rounding makes ties likely
        alpha = 0.05
        order = np.argsort(p, kind="stable")
        rejected = set()
        for rank, i in enumerate(order):  # reject while p_(j) < α / (m − j + 1)
            if p[i] >= alpha / (m - rank):
                break
            rejected.add(int(i))
        adjusted = holm(p.tolist())
        assert {i for i, a in enumerate(adjusted) if a < alpha} == rejected
        assert all(a >= raw for a, raw in zip(adjusted, p, strict=True))


def test_the_statistics_import_without_matplotlib() -> None:
    code = ("import sys, pipelines.report.stats as s; s.summarize([1.0, 2.0]); "
            "sys.exit('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr or "importing the statistics imported matplotlib"


# --- boundaries and degenerate cases that mutation testing found untested ------------------


@pytest.mark.parametrize("confidence", [0.0, 1.0])
def test_a_confidence_of_0_or_1_is_refused_naming_it(confidence: float) -> None:
    for call in (lambda: welch_test([1.0, 2.0], [3.0, 4.0], confidence),
                 lambda: summarize([1.0, 2.0], confidence), lambda: band([[1.0]], confidence)):
        with pytest.raises(ValueError, match=rf"confidence must be in \(0, 1\), got {confidence}"):
            call()


def test_an_empty_sample_summarizes_to_nans() -> None:
    s = summarize([])
    assert s.n == 0 and all(math.isnan(x) for x in (s.mean, s.std, s.ci_low, s.ci_high))


def test_too_small_samples_give_the_difference_and_their_sizes_without_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" from an empty side
        empty = welch_test([], [1.0, 2.0])
        one = welch_test([1.0], [2.0, 3.0])
    assert math.isnan(empty.mean_diff) and (empty.n_a, empty.n_b) == (0, 2)
    assert one.mean_diff == -1.5 and (one.n_a, one.n_b) == (1, 2) and math.isnan(one.p_value)


def test_two_against_two_is_enough_for_welch() -> None:
    from scipy import stats

    d = welch_test([1.0, 2.0], [3.0, 5.0])
    expected = stats.ttest_ind([1.0, 2.0], [3.0, 5.0], equal_var=False).pvalue
    assert d.p_value == pytest.approx(expected)
    assert d.df == pytest.approx(1.25**2 / (0.25**2 + 1.0**2))  # (sa+sb)²/(sa²+sb²), n-1 = 1


def test_one_constant_side_leaves_the_other_sides_variance_to_carry_the_test() -> None:
    d = welch_test([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])  # sb = 1/3, sa = 0
    assert d.df == pytest.approx(2.0)  # all of it from b: (nb - 1)
    assert d.t == pytest.approx(0.0 / math.sqrt(1 / 3))
    d = welch_test([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert d.t == pytest.approx(-3.0 / math.sqrt(1 / 3)) and d.df == pytest.approx(2.0)


def test_holm_accepts_a_p_of_1_and_caps_at_1() -> None:
    assert holm([1.0, 0.01]) == pytest.approx([1.0, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_band_of_single_epoch_curves_and_of_a_ragged_epoch() -> None:
    mean, low, high = band([[5.0], [7.0]])
    assert mean.tolist() == [6.0] and low[0] < 6.0 < high[0]
    mean, low, high = band([[1.0, 2.0], [3.0, 4.0], [5.0]])
    assert mean.tolist() == [3.0, 3.0]
    from scipy import stats

    half = stats.t.ppf(0.975, 1) * math.sqrt(2.0) / math.sqrt(2)  # epoch 2: n=2, std √2
    assert high[1] - mean[1] == pytest.approx(half)


def test_band_raises_no_floating_point_error_on_empty_epochs() -> None:
    with np.errstate(all="raise"):
        mean, low, high = band([[1.0, math.nan], [2.0, math.inf]])
    assert mean[0] == 1.5 and math.isnan(mean[1]) and math.isnan(high[1])


def test_two_constant_sides_give_the_difference_and_their_sizes() -> None:
    d = welch_test([2.0, 2.0], [3.0, 3.0, 3.0])
    assert d.mean_diff == -1.0 and (d.n_a, d.n_b) == (2, 3) and math.isnan(d.p_value)
