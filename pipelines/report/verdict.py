"""The words of a comparison: numbers as a reader sees them, and the one-line verdict.

Accuracies read in percent (differences in percentage points), losses to 4 decimals; the
verdict is direction-aware (lower is better for a loss) and says "not testable" rather than
claim a difference the seeds cannot support (see `pipelines.report.stats`).
"""

from __future__ import annotations

import math

from pipelines.report.results import is_accuracy, lower_is_better
from pipelines.report.stats import Difference

__all__ = ["fmt_value", "format_p", "verdict"]


def format_p(p: float) -> str:
    """``0.021``-style above 1e-3, ``3.2e-05`` below, ``< 1e-300`` at underflow, ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def fmt_value(metric: str, x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    sign = "+" if signed else ""
    return f"{x * 100:{sign}.2f}" if is_accuracy(metric) else f"{x:{sign}.4f}"


def _fmt_interval(metric: str, low: float, high: float) -> str:
    lo, hi = fmt_value(metric, low), fmt_value(metric, high)
    # An en dash between two negative numbers reads as a minus sign; use "to" then.
    return f"{lo}–{hi}" if low >= 0 else f"{lo} to {hi}"


def verdict(diff: Difference, metric: str, a_label: str, b_label: str, alpha: float = 0.01,
            adjusted: tuple[float, int] | None = None) -> str:
    """One line: who beats whom on ``metric`` at level ``alpha``.

    Direction-aware: for loss/error-like metrics lower is better, so a negative A − B means
    A wins. The margin is quoted as a positive number (accuracies in percentage points) with
    its CI flipped to winner − loser. The CI is labelled 95%, the confidence ``welch_test``
    uses by default. NaN p or CI → "not testable" with the reason (n<2 or zero variance).
    ``adjusted=(p, m)``: the test is one of m tested together, and significance is judged on
    its Holm-adjusted p (``stats.holm``), quoted beside Welch's own.
    """
    n = f"n={diff.n_a} vs {diff.n_b}"
    if not (math.isfinite(diff.p_value) and math.isfinite(diff.ci_low)):
        reason = "n<2" if min(diff.n_a, diff.n_b) < 2 else "zero variance in both arms"
        return f"{a_label} vs {b_label} on {metric}: not testable ({reason}; {n})"
    unit = " points" if is_accuracy(metric) else ""
    p = diff.p_value if adjusted is None else adjusted[0]
    holm = "" if adjusted is None else f", Holm p={format_p(p)} over {adjusted[1]} tests"
    stats_txt = f"Welch p={format_p(diff.p_value)}{holm}, {n}"
    if p >= alpha:
        interval = _fmt_interval(metric, diff.ci_low, diff.ci_high)
        return (
            f"no significant difference between {a_label} and {b_label} on {metric} "
            f"(Δ={fmt_value(metric, diff.mean_diff, True)}{unit}, 95% CI {interval}, "
            f"{stats_txt}, α={alpha:g})"
        )
    a_better = (diff.mean_diff < 0) if lower_is_better(metric) else (diff.mean_diff > 0)
    winner, loser = (a_label, b_label) if a_better else (b_label, a_label)
    # Quote the margin as a positive "by X": flip the interval to winner − loser if needed.
    sign = 1.0 if diff.mean_diff >= 0 else -1.0
    margin, low, high = sign * diff.mean_diff, *sorted((sign * diff.ci_low, sign * diff.ci_high))
    return (
        f"{winner} beats {loser} on {metric} by {fmt_value(metric, margin)}{unit} "
        f"(95% CI {_fmt_interval(metric, low, high)}, {stats_txt})"
    )
