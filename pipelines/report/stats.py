"""Statistics over seeds: `summarize`, `welch_test`, `holm` and `band`, pure functions of numbers.

A study runs every arm (an Adam configuration such as β=(0.9, 0.999)) with several seeds.
These functions summarise those seeds and say whether one arm really beats another. They
need numpy and scipy only, no plotting, so they can be used and tested on their own.

Statistical choices
-------------------
* **Seeds are the unit of replication.** Each run contributes one number per metric (its
  final value) or one value per epoch (its curve). Variability is measured *across seeds*,
  never across batches or epochs inside a run, because seeds are what a reader would redo.
* **Student t intervals.** With the handful of seeds a study can afford (3–10) the normal
  approximation understates uncertainty; the t interval ``mean ± t(n−1) · s / √n`` uses the
  sample standard deviation (``ddof=1``) and is exact for normal data.
* **Welch's t-test for A − B.** Different optimiser settings do not give the same
  seed-to-seed spread (a badly tuned Adam is typically *noisier*), so the equal-variance
  assumption of Student's two-sample test is not credible. Welch's test with the
  Welch–Satterthwaite degrees of freedom drops it at almost no cost in power. The CI on the
  difference uses the same standard error and df, so CI and p-value always agree.
* **Default α = 0.01 for the verdict.** A study usually compares several metrics; a stricter
  threshold than 0.05 keeps the headline claim conservative without a formal correction.
* **Holm's step-down correction when k claims are tested together** (a study's k best
  trials, each against the default): the chance of *any* false "beats" stays ≤ α whatever
  the dependence between the tests, and Holm is uniformly more powerful than Bonferroni.
  ``holm`` returns adjusted p-values, so "significant at α" reads ``p_adjusted < α``, the same
  rule as an uncorrected p.

Degenerate cases (documented, never an exception)
-------------------------------------------------
* ``summarize`` with n == 1: std is 0 and the CI collapses to the mean (``ci_low == ci_high
  == mean``) — a single seed carries no spread information, and a zero-width interval keeps
  plots and tables finite; the ``n`` column tells the reader to distrust it. n == 0: all NaN.
* Non-finite values (a diverged run's NaN/inf loss) are dropped before summarising, so
  ``n`` counts only the finite values; a smaller n than the number of seeds flags them.
* ``welch_test`` with fewer than 2 values on a side, or zero variance on both sides: t, df,
  p and the CI are NaN (the mean difference is still reported when both sides are non-empty).
  Two constant samples with different means would give t = ±∞ and p = 0, a claim of
  infinite certainty from data that shows no noise at all; we report NaN and ``verdict``
  says "not testable" instead.
* ``holm`` with a NaN p-value (a test that could not be run, see ``welch_test``): it stays
  NaN, and still counts in the number m of tests, because it was one of the claims tested;
  leaving it out would make the others' correction milder the more tests fail. An empty
  input gives an empty result; a p-value outside [0, 1] is a caller's bug (ValueError).
* ``band`` with ragged curves (a run that stopped early): each epoch uses the runs that reached
  it (per-epoch n), so the curve extends to the longest run; the tail therefore describes only
  the surviving runs and its band widens (or collapses, at n == 1) accordingly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Difference", "Summary", "band", "holm", "summarize", "welch_test"]


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and Student-t confidence interval of ``n`` values."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Difference:
    """Welch comparison of two samples: ``mean_diff = mean(a) − mean(b)``.

    ``n_a``/``n_b`` are carried so a verdict can quote the sample sizes; they default to 0
    so the six-field positional form still constructs.
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p_value: float
    n_a: int = 0
    n_b: int = 0


_NAN = float("nan")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _finite_values(values: Sequence[float]) -> np.ndarray:
    """The finite entries of ``values``, flattened: a diverged run's NaN or inf is dropped."""
    arr = np.asarray(list(values), dtype=float).ravel()
    return arr[np.isfinite(arr)]


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and two-sided Student-t CI of the finite ``values``.

    n == 1 gives std 0 and ``ci_low == ci_high == mean``; n == 0 gives NaNs (see module doc).
    """
    _check_confidence(confidence)
    x = _finite_values(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, _NAN, _NAN, _NAN, _NAN)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's unequal-variance t-test of ``mean(a) − mean(b)`` with its t-based CI.

    Degenerate inputs (n < 2 on a side, or both variances zero) give NaN t/df/p/CI.
    """
    _check_confidence(confidence)
    xa, xb = _finite_values(a), _finite_values(b)
    na, nb = int(xa.size), int(xb.size)
    diff = float(xa.mean() - xb.mean()) if na and nb else _NAN
    if na < 2 or nb < 2:
        return Difference(diff, _NAN, _NAN, _NAN, _NAN, _NAN, na, nb)
    # Constancy is tested exactly (max == min): float round-off in the mean can leave a
    # ~1e-33 "variance" that would otherwise turn two constant samples into p = 0.
    const_a, const_b = bool(xa.max() == xa.min()), bool(xb.max() == xb.min())
    if const_a and const_b:
        return Difference(diff, _NAN, _NAN, _NAN, _NAN, _NAN, na, nb)
    va = 0.0 if const_a else float(xa.var(ddof=1))
    vb = 0.0 if const_b else float(xb.var(ddof=1))
    sa, sb = va / na, vb / nb
    se2 = sa + sb
    # Welch–Satterthwaite: the df of the t distribution that best matches the
    # distribution of the difference when the two variances are estimated separately.
    df = se2**2 / (sa**2 / (na - 1) + sb**2 / (nb - 1))
    with warnings.catch_warnings():
        # scipy flags a constant side as "catastrophic cancellation"; one constant side is a
        # legitimate Welch input (the other side's variance carries the test).
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(xa, xb, equal_var=False)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * math.sqrt(se2)
    return Difference(
        diff, diff - half, diff + half, float(res.statistic), float(df), float(res.pvalue), na, nb
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given (see the module doc for NaN).

    With the m p-values sorted ascending, p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted value of the i-th is
    max over j ≤ i of min(1, (m − j + 1) · p₍ⱼ₎): the running maximum makes the adjustment
    monotone, so rejecting H₍ᵢ₎ (adjusted p < α) implies rejecting every smaller one, which is
    Holm's step-down procedure. Ties get equal adjusted values.
    """
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return []
    known = ~np.isnan(p)
    if np.any((p[known] < 0.0) | (p[known] > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size  # NaN entries count as tests (see the module doc)
    order = np.argsort(np.where(known, p, np.inf), kind="stable")
    ranked = p[order][: int(known.sum())]  # the finite ones, ascending; NaNs sort last
    scaled = np.minimum(1.0, (m - np.arange(ranked.size)) * ranked)
    adjusted = np.full(m, np.nan)
    adjusted[order[: ranked.size]] = np.maximum.accumulate(scaled)
    return [float(x) for x in adjusted]


def band(
    curves: Sequence[Sequence[float]], confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-epoch mean and t-interval across runs: ``(mean, low, high)`` arrays.

    Ragged curves use per-epoch n (each epoch averages the runs that reached it), so the
    arrays are as long as the longest curve. Non-finite entries count as missing. An epoch
    with n == 1 has a zero-width band; one with n == 0 is NaN.
    """
    _check_confidence(confidence)
    length = max((len(c) for c in curves), default=0)
    if length == 0:
        empty = np.empty(0, dtype=float)
        return empty, empty.copy(), empty.copy()
    mat = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        mat[i, : len(c)] = np.asarray(c, dtype=float)
    mat[~np.isfinite(mat)] = np.nan
    present = ~np.isnan(mat)
    n = present.sum(axis=0)
    filled = np.where(present, mat, 0.0)
    # Hand-rolled nanmean/nanstd: numpy warns on all-NaN columns, which are legitimate here.
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        sq = np.where(present, (mat - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(sq / (n - 1))
        tcrit = stats.t.ppf(0.5 + confidence / 2.0, np.maximum(n - 1, 1))
        half = np.where(n >= 2, tcrit * std / np.sqrt(n), 0.0)
    mean = np.where(n >= 1, mean, np.nan)
    return mean, mean - half, mean + half
