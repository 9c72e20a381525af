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
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

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


def _atomic_write(path: Path, write: Callable[[IO], object], binary: bool = False) -> Path:
    """Write via a temp file in the same directory, then rename: no half-written outputs.

    Same directory because ``os.replace`` is only atomic within one filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # newline="" so the csv module controls line endings (it writes \r\n itself).
        text_kw: dict = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text_kw) as fh:
            write(fh)
        # mkstemp creates 0600; outputs are meant to be shared like any normal file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    out = _atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)
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
    _atomic_write(Path(md_path), lambda fh: fh.write("\n".join(md)))

    fields = ["arm", "label", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    _atomic_write(Path(csv_path), lambda fh: _write_csv(fh, fields, rows))
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
        _atomic_write(diff_path, lambda fh: _write_csv(fh, diff_fields, diff_rows))


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
