"""Turn many runs' metrics into a researcher's report: curves, tables, a verdict.

A study runs every arm (an Adam configuration such as β=(0.9, 0.999)) with several seeds.
This module summarises those seeds and says whether one arm really beats another.

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
* ``band`` with ragged curves (a run that stopped early): each epoch uses the runs that reached
  it (per-epoch n), so the curve extends to the longest run; the tail therefore describes only
  the surviving runs and its band widens (or collapses, at n == 1) accordingly.

Only runs whose ``status`` is ``"FINISHED"`` (case-insensitive) enter any statistic or plot:
a FAILED or KILLED run's last logged values are from an arbitrary point of training and would
bias the arm. ``write_report`` lists the excluded runs in the Markdown so none vanish silently.

Units: accuracies are assumed to be fractions in [0, 1] (what torchmetrics logs); the
human-facing outputs (Markdown, verdict, plot) show them in percent / percentage points,
while the CSV keeps the raw values.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from src.files import atomic_write

__all__ = [
    "CURVE_METRICS",
    "TABLE_METRICS",
    "Comparison",
    "Difference",
    "Report",
    "RunResult",
    "Summary",
    "band",
    "compare_arms",
    "format_p",
    "metric_table",
    "plot_curves",
    "summarize",
    "verdict",
    "welch_test",
    "write_report",
    "write_tables",
    # Adam's internals and grids
    "grid_table",
    "has_internals",
    "internals_table",
    "plot_beta_heatmap",
    "plot_bias_correction",
    "plot_internals",
    "write_grid_report",
    "write_internals",
]

FINISHED = "FINISHED"
CURVE_METRICS: tuple[str, ...] = ("train/loss", "val/acc")
TABLE_METRICS: tuple[str, ...] = ("val/acc", "test/acc", "test/loss")

_TAB10 = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
_BLOG_DEFAULT_NAMES = {"blog_default", "default"}
_NICE_TITLES = {
    "train/loss": "Training loss",
    "val/loss": "Validation loss",
    "val/acc": "Validation accuracy",
    "test/acc": "Test accuracy",
    "test/loss": "Test loss",
}


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class RunResult:
    """One training run: which arm, which seed, per-epoch history and final metrics."""

    arm: str
    seed: int
    history: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    status: str = FINISHED


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


@dataclass(frozen=True)
class Comparison:
    """One ``arm_a − arm_b`` difference on one metric, with display labels."""

    arm_a: str
    arm_b: str
    label_a: str
    label_b: str
    metric: str
    diff: Difference


@dataclass(frozen=True)
class Report:
    """Paths of everything ``write_report`` wrote, the verdict, and MLflow-ready numbers."""

    figure: Path
    table_md: Path
    table_csv: Path
    verdict: str | None
    summary: dict[str, float]


# --------------------------------------------------------------------------- statistics

_NAN = float("nan")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float).ravel()
    return arr[np.isfinite(arr)]


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and two-sided Student-t CI of the finite ``values``.

    n == 1 gives std 0 and ``ci_low == ci_high == mean``; n == 0 gives NaNs (see module doc).
    """
    _check_confidence(confidence)
    x = _finite(values)
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
    xa, xb = _finite(a), _finite(b)
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


# --------------------------------------------------------------------------- helpers


def _is_finished(r: RunResult) -> bool:
    return r.status.upper() == FINISHED


def _finished(results: Sequence[RunResult]) -> list[RunResult]:
    return [r for r in results if _is_finished(r)]


def _label(arm: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(arm, arm)


def _is_accuracy(metric: str) -> bool:
    return "acc" in metric.rsplit("/", 1)[-1].lower()


def _lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1].lower()
    return any(k in leaf for k in ("loss", "err", "nll", "ppl", "perplexity"))


def _finals(results: Sequence[RunResult], arm: str, metric: str) -> list[float]:
    return [r.final[metric] for r in _finished(results) if r.arm == arm and metric in r.final]


def _mlflow_key(text: str) -> str:
    # MLflow metric names allow alphanumerics and _ - . / space; anything else becomes "_".
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def _metric_key(metric: str) -> str:
    return _mlflow_key(metric.replace("/", "_"))


# --------------------------------------------------------------------------- plotting


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text.lower())


def _arm_colors(
    arms: Sequence[str], labels: Mapping[str, str] | None, colors: Mapping[str, str] | None
) -> dict[str, str]:
    """Blue for the blog's default β, orange for β=(0.1, 0.1), tab10 for the rest."""
    out: dict[str, str] = {a: c for a, c in (colors or {}).items() if a in arms}
    used = set(out.values())

    def claim(arm: str | None, color: str) -> None:
        if arm is not None and arm not in out and color not in used:
            out[arm] = color
            used.add(color)

    def find(pattern: str) -> str | None:
        return next(
            (a for a in arms if pattern in _norm(_label(a, labels)) or pattern in _norm(a)), None
        )

    default = find("(0.9,0.999)") or next((a for a in arms if a in _BLOG_DEFAULT_NAMES), None)
    claim(default, "tab:blue")
    claim(find("(0.1,0.1)"), "tab:orange")
    if arms:
        claim(arms[0], "tab:blue")
    free = [c for c in _TAB10 if c not in used] or list(_TAB10)
    for i, arm in enumerate(a for a in arms if a not in out):
        out[arm] = free[i % len(free)]
    return out


def plot_curves(
    results: Sequence[RunResult],
    arms: Sequence[str],
    path: Path,
    labels: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    metrics: Sequence[str] = CURVE_METRICS,
    confidence: float = 0.95,
) -> Path:
    """One PNG with a subplot per metric: per-arm mean over seeds and shaded t-band.

    Accuracies are drawn in percent. A loss axis is logarithmic when every plotted value is
    positive, because late-training differences between arms are invisible on a linear scale.
    """
    finished = _finished(results)
    arm_colors = _arm_colors(arms, labels, colors)
    # Figure + Agg canvas directly: no pyplot global state, no backend switching, no leaks.
    fig = Figure(figsize=(5.5 * max(len(metrics), 1), 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        scale = 100.0 if _is_accuracy(metric) else 1.0
        drawn: list[np.ndarray] = []
        for arm in arms:
            curves = [r.history[metric] for r in finished if r.arm == arm and r.history.get(metric)]
            if not curves:
                continue
            mean, low, high = band(curves, confidence)
            epochs = np.arange(1, mean.size + 1)
            color = arm_colors[arm]
            ax.plot(
                epochs,
                mean * scale,
                color=color,
                lw=1.8,
                marker="o" if mean.size <= 20 else None,
                ms=3.5,
                label=f"{_label(arm, labels)} (n={len(curves)})",
            )
            ax.fill_between(epochs, low * scale, high * scale, color=color, alpha=0.2, lw=0)
            drawn.append(low[np.isfinite(low)])
        ax.set_title(_NICE_TITLES.get(metric, metric))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (%)" if scale != 1.0 else metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        lows = np.concatenate(drawn)
        if _lower_is_better(metric) and lows.size and np.all(lows > 0):
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(
        f"Mean over seeds; shaded: {confidence:.0%} t-interval across seeds", fontsize="medium"
    )
    out = atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)
    return out


# --------------------------------------------------------------------------- tables


def metric_table(
    results: Sequence[RunResult],
    arms: Sequence[str],
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> list[dict]:
    """Rows (arm-major, in ``arms`` order) of final-metric summaries over FINISHED runs.

    Keys: arm, label, metric, n, mean, std, ci_low, ci_high. An arm without values gets a
    row with n = 0 and NaNs, so a missing arm is visible rather than silently absent.
    """
    rows: list[dict] = []
    for arm in arms:
        for metric in metrics:
            s = summarize(_finals(results, arm, metric), confidence)
            rows.append(
                {
                    "arm": arm,
                    "label": _label(arm, labels),
                    "metric": metric,
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                }
            )
    return rows


def compare_arms(
    results: Sequence[RunResult],
    arm_a: str,
    arm_b: str,
    metrics: Sequence[str] = TABLE_METRICS,
    labels: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> list[Comparison]:
    """Welch ``arm_a − arm_b`` for each metric, over FINISHED runs."""
    return [
        Comparison(
            arm_a,
            arm_b,
            _label(arm_a, labels),
            _label(arm_b, labels),
            metric,
            welch_test(
                _finals(results, arm_a, metric), _finals(results, arm_b, metric), confidence
            ),
        )
        for metric in metrics
    ]


def format_p(p: float) -> str:
    """``0.021``-style above 1e-3, ``3.2e-05`` below, ``< 1e-300`` at underflow, ``n/a``."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def _fmt_value(metric: str, x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    sign = "+" if signed else ""
    return f"{x * 100:{sign}.2f}" if _is_accuracy(metric) else f"{x:{sign}.4f}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_rows(rows: Sequence[Mapping], confidence: float) -> list[str]:
    ci = f"{confidence:.0%} CI"
    lines = [
        f"| Arm | Metric | n | Mean ± std | {ci} |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        metric = r["metric"]
        unit = " %" if _is_accuracy(metric) else ""
        if r["n"] == 0 or not math.isfinite(r["mean"]):
            value, interval = "n/a", "n/a"
        else:
            value = f"{_fmt_value(metric, r['mean'])} ± {_fmt_value(metric, r['std'])}{unit}"
            interval = f"[{_fmt_value(metric, r['ci_low'])}, {_fmt_value(metric, r['ci_high'])}]"
        label = r.get("label", r["arm"])
        arm = label if label == r["arm"] else f"{label} (`{r['arm']}`)"
        lines.append(f"| {_md_cell(arm)} | {metric} | {r['n']} | {value} | {interval} |")
    return lines


def _md_differences(differences: Sequence[Comparison], confidence: float) -> list[str]:
    lines = [
        f"| A − B | Metric | n (A, B) | Δ mean | {confidence:.0%} CI | Welch t | df | p |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in differences:
        d, m = c.diff, c.metric
        unit = " pts" if _is_accuracy(m) else ""
        interval = (
            f"[{_fmt_value(m, d.ci_low, True)}, {_fmt_value(m, d.ci_high, True)}]"
            if math.isfinite(d.ci_low)
            else "n/a"
        )
        t = f"{d.t:.3f}" if math.isfinite(d.t) else "n/a"
        df = f"{d.df:.1f}" if math.isfinite(d.df) else "n/a"
        lines.append(
            f"| {_md_cell(c.label_a)} − {_md_cell(c.label_b)} | {m} | {d.n_a}, {d.n_b} | "
            f"{_fmt_value(m, d.mean_diff, True)}{unit} | {interval} | {t} | {df} | "
            f"{format_p(d.p_value)} |"
        )
    return lines


def write_tables(
    rows: Sequence[Mapping],
    differences: Sequence[Comparison],
    md_path: Path,
    csv_path: Path,
    *,
    confidence: float = 0.95,
    alpha: float = 0.01,
    notes: Sequence[str] = (),
) -> None:
    """Markdown for humans (accuracies in %, losses to 4 decimals) and CSV for machines.

    The CSV holds ``rows`` verbatim (full float precision, header row). When ``differences``
    is non-empty they also go to ``<csv stem>_differences.csv`` next to it, and the Markdown
    gets a "Difference" section with one verdict line per comparison.
    """
    md = ["# Results", ""]
    md.append(
        f"Mean ± sample std across seeds (FINISHED runs only); {confidence:.0%} CI is the "
        "Student t interval. Accuracies in %, differences in percentage points."
    )
    md += ["", *_md_rows(rows, confidence), ""]
    if differences:
        md += ["## Difference", "", *_md_differences(differences, confidence), ""]
        md += [
            f"- {verdict(c.diff, c.metric, c.label_a, c.label_b, alpha=alpha)}" for c in differences
        ]
        md.append("")
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    atomic_write(Path(md_path), lambda fh: fh.write("\n".join(md)))

    fields = ["arm", "label", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    atomic_write(Path(csv_path), lambda fh: _write_csv(fh, fields, rows))
    if differences:
        diff_fields = [
            "arm_a",
            "arm_b",
            "label_a",
            "label_b",
            "metric",
            "n_a",
            "n_b",
            "mean_diff",
            "ci_low",
            "ci_high",
            "t",
            "df",
            "p_value",
        ]
        diff_rows = [
            {
                "arm_a": c.arm_a,
                "arm_b": c.arm_b,
                "label_a": c.label_a,
                "label_b": c.label_b,
                "metric": c.metric,
                "n_a": c.diff.n_a,
                "n_b": c.diff.n_b,
                "mean_diff": c.diff.mean_diff,
                "ci_low": c.diff.ci_low,
                "ci_high": c.diff.ci_high,
                "t": c.diff.t,
                "df": c.diff.df,
                "p_value": c.diff.p_value,
            }
            for c in differences
        ]
        csv_path = Path(csv_path)
        diff_path = csv_path.with_name(f"{csv_path.stem}_differences{csv_path.suffix}")
        atomic_write(diff_path, lambda fh: _write_csv(fh, diff_fields, diff_rows))


def _write_csv(fh: IO[str], fields: Sequence[str], rows: Sequence[Mapping]) -> None:
    # repr() of a Python float round-trips exactly; csv writes floats via str() == repr().
    writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()})


# --------------------------------------------------------------------------- verdict


def _fmt_interval(metric: str, low: float, high: float) -> str:
    lo, hi = _fmt_value(metric, low), _fmt_value(metric, high)
    # An en dash between two negative numbers reads as a minus sign; use "to" then.
    return f"{lo}–{hi}" if low >= 0 else f"{lo} to {hi}"


def verdict(diff: Difference, metric: str, a_label: str, b_label: str, alpha: float = 0.01) -> str:
    """One line: who beats whom on ``metric`` at level ``alpha``.

    Direction-aware: for loss/error-like metrics lower is better, so a negative A − B means
    A wins. The margin is quoted as a positive number (accuracies in percentage points) with
    its CI flipped to winner − loser. The CI is labelled 95%, the confidence ``welch_test``
    uses by default. NaN p or CI → "not testable" with the reason (n<2 or zero variance).
    """
    n = f"n={diff.n_a} vs {diff.n_b}"
    if not (math.isfinite(diff.p_value) and math.isfinite(diff.ci_low)):
        reason = "n<2" if min(diff.n_a, diff.n_b) < 2 else "zero variance in both arms"
        return f"{a_label} vs {b_label} on {metric}: not testable ({reason}; {n})"
    unit = " points" if _is_accuracy(metric) else ""
    stats_txt = f"Welch p={format_p(diff.p_value)}, {n}"
    if diff.p_value >= alpha:
        interval = _fmt_interval(metric, diff.ci_low, diff.ci_high)
        return (
            f"no significant difference between {a_label} and {b_label} on {metric} "
            f"(Δ={_fmt_value(metric, diff.mean_diff, True)}{unit}, 95% CI {interval}, "
            f"{stats_txt}, α={alpha:g})"
        )
    a_better = (diff.mean_diff < 0) if _lower_is_better(metric) else (diff.mean_diff > 0)
    winner, loser = (a_label, b_label) if a_better else (b_label, a_label)
    # Quote the margin as a positive "by X": flip the interval to winner − loser if needed.
    sign = 1.0 if diff.mean_diff >= 0 else -1.0
    margin, low, high = sign * diff.mean_diff, *sorted((sign * diff.ci_low, sign * diff.ci_high))
    return (
        f"{winner} beats {loser} on {metric} by {_fmt_value(metric, margin)}{unit} "
        f"(95% CI {_fmt_interval(metric, low, high)}, {stats_txt})"
    )


# --------------------------------------------------------------------------- report


def write_report(
    results: Sequence[RunResult],
    arms: Sequence[str],
    out_dir: Path,
    labels: Mapping[str, str] | None = None,
    compare: tuple[str, str] | None = None,
    metric: str = "test/acc",
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    curve_metrics: Sequence[str] = CURVE_METRICS,
    alpha: float = 0.01,
    colors: Mapping[str, str] | None = None,
) -> Report:
    """Figure, tables and verdict into ``out_dir`` (created); FINISHED runs only.

    Writes ``curves.png``, ``metrics.md``, ``metrics.csv`` (and ``metrics_differences.csv``
    when ``compare`` is given). ``summary`` has MLflow-safe flat keys such as
    ``"{arm}/test_acc_mean"``, ``"{arm}/test_acc_std"``, ``"{arm}/n_finished"`` and, with
    ``compare``, ``"diff/test_acc_mean"``, ``"diff/test_acc_p"``, …; non-finite values are
    left out because not every MLflow backend stores NaN.
    """
    arms = list(arms)
    if not arms:
        raise ValueError("write_report needs at least one arm")
    if compare is not None:
        missing = [a for a in compare if a not in arms]
        if missing:
            raise ValueError(f"compare arms {missing} are not among arms {arms}")
    metrics = list(metrics) + ([metric] if metric not in metrics else [])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    finished = _finished(results)
    notes = [
        f"excluded run arm={r.arm} seed={r.seed} (status {r.status})"
        for r in results
        if not _is_finished(r) and r.arm in arms
    ]

    figure = plot_curves(
        finished,
        arms,
        out_dir / "curves.png",
        labels=labels,
        colors=colors,
        metrics=curve_metrics,
    )
    rows = metric_table(finished, arms, metrics, labels)
    comparisons = compare_arms(finished, *compare, metrics, labels) if compare else []
    table_md, table_csv = out_dir / "metrics.md", out_dir / "metrics.csv"
    write_tables(rows, comparisons, table_md, table_csv, alpha=alpha, notes=notes)

    summary: dict[str, float] = {}
    for arm in arms:
        summary[f"{_mlflow_key(arm)}/n_finished"] = float(sum(1 for r in finished if r.arm == arm))
    for r in rows:
        prefix = f"{_mlflow_key(r['arm'])}/{_metric_key(r['metric'])}"
        for stat in ("mean", "std", "ci_low", "ci_high"):
            summary[f"{prefix}_{stat}"] = float(r[stat])
        summary[f"{prefix}_n"] = float(r["n"])

    text: str | None = None
    for c in comparisons:
        d, prefix = c.diff, f"diff/{_metric_key(c.metric)}"
        summary.update(
            {
                f"{prefix}_mean": d.mean_diff,
                f"{prefix}_ci_low": d.ci_low,
                f"{prefix}_ci_high": d.ci_high,
                f"{prefix}_t": d.t,
                f"{prefix}_df": d.df,
                f"{prefix}_p": d.p_value,
            }
        )
        if c.metric == metric:
            text = verdict(d, metric, c.label_a, c.label_b, alpha=alpha)
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    return Report(figure, table_md, table_csv, text, summary)


# --------------------------------------------------------------------------- Adam's internals
#
# Runs with `internals.enabled=true` log `internals/*` per epoch (src.internals): quantiles
# over parameter elements of the effective step, of 1/(√v̂+ε) and of the update-to-weight
# ratio. The figure shows, per arm, the mean over seeds of the median with the mean p10–p90
# range shaded; the table the same numbers at the last logged epoch.

INTERNALS_PANELS: tuple[tuple[str, str], ...] = (
    ("step", "effective step |α·m̂/(√v̂+ε)|"),
    ("inv_sqrt_v", "1/(√v̂+ε)"),
    ("update_ratio", "update/weight |Δθ|/|θ|"),
)
_INTERNALS = "internals/"


def has_internals(results: Sequence[RunResult]) -> bool:
    """Whether any FINISHED run logged `internals/*` (i.e. ran with internals enabled)."""
    return any(k.startswith(_INTERNALS) for r in _finished(results) for k in r.history)


def _internals_series(results: Sequence[RunResult], arm: str, key: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, mean over seeds per logged epoch) of `internals/<key>` for one arm."""
    runs = [r for r in _finished(results) if r.arm == arm and r.history.get(_INTERNALS + key)]
    if not runs:
        return np.empty(0), np.empty(0)
    mean, _, _ = band([r.history[_INTERNALS + key] for r in runs])
    longest = max(runs, key=lambda r: len(r.history[_INTERNALS + key]))
    epochs = longest.history.get(_INTERNALS + "epoch") or list(range(1, mean.size + 1))
    return np.asarray(epochs[: mean.size], dtype=float), mean


def plot_internals(
    results: Sequence[RunResult],
    arms: Sequence[str],
    path: Path,
    labels: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    bands: bool | None = None,
) -> Path:
    """One PNG, a log-scale panel per distribution: median (line) and p10–p90 (shaded;
    ``bands=None`` shades them for up to 4 arms, beyond which they would hide each other)."""
    bands = len(arms) <= 4 if bands is None else bands
    arm_colors = _arm_colors(arms, labels, colors)
    fig = Figure(figsize=(5.2 * len(INTERNALS_PANELS), 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(INTERNALS_PANELS), squeeze=False)[0]
    for ax, (key, title) in zip(axes, INTERNALS_PANELS, strict=True):
        drawn = False
        p10_lows: list[float] = []  # to bound the axis below
        p50_lows: list[float] = []
        for arm in arms:
            epochs, p50 = _internals_series(results, arm, f"{key}_p50")
            if not epochs.size:
                continue
            _, p10 = _internals_series(results, arm, f"{key}_p10")
            _, p90 = _internals_series(results, arm, f"{key}_p90")
            color = arm_colors[arm]
            ax.plot(epochs, p50, color=color, lw=1.8, marker="o", ms=3.5,
                    label=f"{_label(arm, labels)}")
            if bands and p10.size == p50.size and p90.size == p50.size:
                # p10 can be 0 (a step of exactly 0): clip to the log axis' visible range.
                low = np.where(p10 > 0, p10, np.nan)
                ax.fill_between(epochs, low, p90, color=color, alpha=0.18, lw=0)
                p10_lows += [float(np.nanmin(low))] if np.isfinite(low).any() else []
            finite = p50[np.isfinite(p50) & (p50 > 0)]
            p50_lows += [float(finite.min())] if finite.size else []
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.set_yscale("log")
            if p50_lows:
                # A p10 can sit 20 decades down (m_t of a weight that has not seen a gradient
                # for a long time decays geometrically): show at most 3 decades below the
                # lowest median and let the band run off the axis.
                ax.set_ylim(bottom=max(min(p10_lows, default=0.0), min(p50_lows) / 1e3))
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    shaded = ", 10th–90th percentile (shaded)" if bands else ""
    fig.suptitle("Adam's internals over parameter elements at the end of each epoch: median "
                 f"(line){shaded}; mean over seeds", fontsize="medium")
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)


def internals_table(
    results: Sequence[RunResult], arms: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[dict]:
    """Per arm, the mean over seeds of every `internals/*` value at the last logged epoch."""
    keys = [f"{k}_{q}" for k, _ in INTERNALS_PANELS for q in ("p10", "p50", "p90")]
    keys += ["update_norm_ratio", "frozen_frac"]
    rows: list[dict] = []
    for arm in arms:
        row: dict = {"arm": arm, "label": _label(arm, labels)}
        runs = [r for r in _finished(results) if r.arm == arm]
        row["n"] = sum(1 for r in runs if r.history.get(_INTERNALS + "step_p50"))
        epochs = [r.history[_INTERNALS + "epoch"][-1] for r in runs
                  if r.history.get(_INTERNALS + "epoch")]
        row["epoch"] = max(epochs) if epochs else _NAN
        for key in keys:
            values = [r.history[_INTERNALS + key][-1] for r in runs
                      if r.history.get(_INTERNALS + key)]
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
        lines = [_md_cell(r["label"]), str(r["n"]), epoch, *cells,
                 _sci(r["update_norm_ratio"]), frozen]
        md.append("| " + " | ".join(lines) + " |")
    md.append("")
    atomic_write(out_dir / "internals.md", lambda fh: fh.write("\n".join(md)))
    fields = list(rows[0]) if rows else ["arm"]
    atomic_write(out_dir / "internals.csv", lambda fh: _write_csv(fh, fields, rows))
    return figure


# --------------------------------------------------------------------------- grids
#
# A grid (pipelines.grid) is a comparison whose arms are every combination of a few
# optimizer settings; `cells` maps each arm to its coordinates, e.g.
# {"beta1": 0.9, "beta2": 0.999, "lr": 0.001, "bias_correction": True}.

GRID_METRICS: tuple[str, ...] = ("val/loss", "val/acc", "test/acc")
_CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over 10 classes
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
        finished = _finished(runs)
        row: dict = {"arm": arm, **coords, "runs": len(runs), "finished": len(finished)}
        columns = [(m, [r.final[m] for r in finished if m in r.final]) for m in metrics]
        columns += [(f"{m}@1", [r.history[m][0] for r in finished if r.history.get(m)])
                    for m in _EPOCH1]
        for name, values in columns:
            s = summarize(values)
            row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"] = s.mean, s.std, s.n
        rows.append(row)
    return rows


def _grid_axis(values: Sequence[float]) -> np.ndarray:
    """−log10(1−β): the coordinate in which β grids (0.9, 0.99, 0.999, …) are evenly spaced."""
    return -np.log10(1.0 - np.asarray(values, dtype=float))


def _boundary(beta1s: Sequence[float], beta2s: Sequence[float], power: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates (x: β2 index, y: β1 index) of the curve β1 = β2**power, interpolated
    between cell centres in −log10(1−β); NaN where β1 is outside the grid's range."""
    u1, u2 = _grid_axis(beta1s), _grid_axis(beta2s)
    u = np.linspace(u2[0], u2[-1], 600)
    beta2 = 1.0 - 10.0 ** (-u)
    beta1 = beta2**power
    x = np.interp(u, u2, np.arange(len(beta2s)))
    y = np.interp(_grid_axis(np.minimum(beta1, 1 - 1e-15)), u1, np.arange(len(beta1s)))
    y[(beta1 < beta1s[0] - 1e-9) | (beta1 > beta1s[-1] + 1e-9)] = np.nan
    return x, y


def plot_beta_heatmap(
    rows: Sequence[Mapping], path: Path, metrics: Sequence[str] = ("val/loss", "val/acc"),
    title: str | None = None,
) -> Path:
    """β1 × β2 heatmaps of final ``metrics`` (mean over seeds, annotated with ± std), with
    the convergence boundaries β1 = √β2 (Zhang et al. 2022) and β1²/√β2 = 1 (Kingma & Ba
    2014) overlaid. ``rows`` come from :func:`grid_table` and must share every other
    coordinate. A cell whose runs all diverged is grey and says so."""
    from matplotlib.colors import LogNorm, Normalize

    beta1s = sorted({float(r["beta1"]) for r in rows})
    beta2s = sorted({float(r["beta2"]) for r in rows})
    by_cell = {(float(r["beta1"]), float(r["beta2"])): r for r in rows}
    fig = Figure(figsize=(0.95 * len(beta2s) * len(metrics) + 1.6 * len(metrics) + 0.6,
                          0.75 * len(beta1s) + 2.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        acc = _is_accuracy(metric)
        scale = 100.0 if acc else 1.0
        grid = np.full((len(beta1s), len(beta2s)), np.nan)
        for (b1, b2), r in by_cell.items():
            grid[beta1s.index(b1), beta2s.index(b2)] = r.get(f"{metric}_mean", _NAN) * scale
        # Colour: loss on a log scale capped at chance level (a diverged 1e19 would flatten
        # the rest); accuracy by its error rate 100 − acc on a log scale, so that 97.5 % vs
        # 96 % shows as clearly as 90 % vs 30 %. Good is yellow in both panels.
        shade = 100.0 - grid if acc else grid
        finite = shade[np.isfinite(shade) & (shade > 0)]
        norm: Normalize
        if finite.size and finite.min() < finite.max():
            top = finite.max() if acc else min(finite.max(), max(_CHANCE_LOSS, finite.min() * 2))
            norm = LogNorm(finite.min(), top, clip=True)
        else:
            norm = Normalize(0, 1)
        ax.set_facecolor("0.85")
        image = ax.imshow(np.ma.masked_invalid(np.where(shade > 0, shade, np.nan)),
                          origin="lower", cmap="viridis_r", norm=norm, aspect="auto")
        cbar = fig.colorbar(image, ax=ax, shrink=0.9, extend="neither" if acc else "max")
        if acc and isinstance(norm, LogNorm):
            ticks = [e for e in (1, 2, 3, 5, 10, 20, 50, 90) if norm.vmin <= e <= norm.vmax]
            cbar.set_ticks(ticks, labels=[f"{100 - e:g}" for e in ticks])
            cbar.minorticks_off()
        cbar.set_label(f"final {metric}" + (" (%)" if acc else ""))
        for (b1, b2), r in by_cell.items():
            i, j = beta1s.index(b1), beta2s.index(b2)
            value, std = grid[i, j], r.get(f"{metric}_std", _NAN) * scale
            if math.isfinite(value):
                big = abs(value) >= 1000
                text = (f"{value:.1f}\n±{std:.1f}" if acc else
                        f"{value:.2g}\n±{std:.2g}" if big else f"{value:.3f}\n±{std:.3f}")
                rgba = image.cmap(norm(shade[i, j])) if shade[i, j] > 0 else (1, 1, 1, 1)
                dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                color = "white" if dark else "black"
            else:
                text, color = "diverged", "black"
            if r.get("finished", 0) < r.get("runs", 0):
                text += f"\n({r['finished']}/{r['runs']} finished)"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
        if len(beta1s) > 1 and len(beta2s) > 1:
            for power, style, label in (
                (0.5, "-", "β1 = √β2 (Zhang et al. 2022)"),
                (0.25, "--", "β1²/√β2 = 1 (Kingma & Ba 2014)"),
            ):
                x, y = _boundary(beta1s, beta2s, power)
                ax.plot(x, y, style, color="crimson", lw=2.0, label=label)
            ax.set_xlim(-0.5, len(beta2s) - 0.5)
            ax.set_ylim(-0.5, len(beta1s) - 0.5)
        ax.set_xticks(range(len(beta2s)), [f"{b:g}" for b in beta2s])
        ax.set_yticks(range(len(beta1s)), [f"{b:g}" for b in beta1s])
        ax.set_xlabel("β2")
        ax.set_ylabel("β1")
        ax.set_title(f"final {_NICE_TITLES.get(metric, metric).lower()}")
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize="small",
                   title="convergence boundaries: below a curve (β1 smaller) is the safe side",
                   title_fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)


def plot_bias_correction(
    rows: Sequence[Mapping], path: Path, metrics: Sequence[str] = ("val/loss", "val/acc"),
) -> Path:
    """The paper's §6.4 picture: ``metrics`` (columns) after the first and after the last
    epoch (rows; a pair of rows per β1 if several) against α on a log axis, a colour per β2,
    solid with bias correction and dashed without; error bars ± std over seeds. Cells whose
    runs all diverged have no point."""
    beta1s = sorted({float(r["beta1"]) for r in rows})
    beta2s = sorted({float(r["beta2"]) for r in rows})
    panel_rows = [(b1, suffix, when) for b1 in beta1s
                  for suffix, when in (("@1", "after epoch 1"), ("", "after the last epoch"))]
    fig = Figure(figsize=(5.0 * len(metrics), 3.3 * len(panel_rows) + 0.9), dpi=120,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panel_rows), len(metrics), squeeze=False)
    colors = dict(zip(beta2s, _TAB10, strict=False))
    for row_axes, (b1, suffix, when) in zip(axes, panel_rows, strict=True):
        for ax, metric in zip(row_axes, metrics, strict=True):
            key = metric + suffix
            scale = 100.0 if _is_accuracy(metric) else 1.0
            drawn: list[float] = []
            for b2 in beta2s:
                for corrected, style in ((True, "-"), (False, "--")):
                    points = sorted(
                        (float(r["lr"]), r[f"{key}_mean"] * scale, r[f"{key}_std"] * scale)
                        for r in rows
                        if float(r["beta1"]) == b1 and float(r["beta2"]) == b2
                        and bool(r["bias_correction"]) == corrected
                        and math.isfinite(r[f"{key}_mean"]))
                    if not points:
                        continue
                    lr, mean, std = (np.asarray(c) for c in zip(*points, strict=True))
                    ax.errorbar(lr, mean, yerr=std, fmt=style, marker="o", ms=3.5, capsize=2,
                                color=colors[b2], lw=1.6,
                                label=f"β2={b2:g}, {'with' if corrected else 'without'}")
                    drawn += list(mean)
            ax.set_xscale("log")
            ax.set_xlabel("α (lr)")
            ax.set_ylabel(f"{metric} (%)" if scale != 1.0 else metric)
            if _lower_is_better(metric) and drawn and min(drawn) > 0 and \
                    max(drawn) / min(drawn) > 3:
                ax.set_yscale("log")
            ax.set_title(f"{metric} {when}" + (f", β1={b1:g}" if len(beta1s) > 1 else ""),
                         fontsize="medium")
            ax.grid(True, alpha=0.3, which="both")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=len(beta2s),
                   fontsize="small", title="solid: with bias correction, dashed: without",
                   title_fontsize="small")
    fig.suptitle("Bias correction (Kingma & Ba §6.4 design): mean ± std over seeds",
                 fontsize="medium")
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)


def _mean_std(row: Mapping, key: str, acc: bool) -> str:
    mean, std = row.get(f"{key}_mean", _NAN), row.get(f"{key}_std", _NAN)
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
    acc = _is_accuracy(metric)
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
    acc = _is_accuracy(metric)
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
        d = welch_test(_finals(results, off.get("arm", ""), metric),
                       _finals(results, on.get("arm", ""), metric))
        delta = _fmt_value(metric, d.mean_diff, True) if math.isfinite(d.mean_diff) else "n/a"
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
            figures.append(plot_beta_heatmap(group, out_dir / f"{_mlflow_key(name)}.png",
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
    atomic_write(out_dir / "grid.csv", lambda fh: _write_csv(fh, fields, rows))
    atomic_write(out_dir / "grid.md", lambda fh: fh.write("\n".join(md)))
    return figures
