"""Every figure of the reports, drawn with matplotlib: curves, Adam's internals, β grids.

The one module of `pipelines.report` that imports matplotlib; the statistics, tables and
verdict do not need it. Figures are drawn on a `Figure` with its own Agg canvas (no pyplot
state) and written atomically, so a crash leaves no half-written PNG. The figures share one
style, palette and writer, which is why they live in one file rather than one per report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipelines.report.results import (
    RunResult,
    finished_runs,
    is_accuracy,
    label_of,
    lower_is_better,
)
from pipelines.report.stats import band
from src.files import atomic_write

__all__ = ["CURVE_METRICS", "INTERNALS_PANELS", "INTERNALS_PREFIX", "plot_beta_heatmap",
           "plot_bias_correction", "plot_curves", "plot_internals", "plot_ranking",
           "plot_step_sizes"]

CURVE_METRICS: tuple[str, ...] = ("train/loss", "val/acc")
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
            (a for a in arms if pattern in _norm(label_of(a, labels)) or pattern in _norm(a)), None
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
    finished = finished_runs(results)
    arm_colors = _arm_colors(arms, labels, colors)
    # Figure + Agg canvas directly: no pyplot global state, no backend switching, no leaks.
    fig = Figure(figsize=(5.5 * max(len(metrics), 1), 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        scale = 100.0 if is_accuracy(metric) else 1.0
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
                label=f"{label_of(arm, labels)} (n={len(curves)})",
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
        if lower_is_better(metric) and lows.size and np.all(lows > 0):
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(
        f"Mean over seeds; shaded: {confidence:.0%} t-interval across seeds", fontsize="medium"
    )
    return _save(fig, path)


INTERNALS_PANELS: tuple[tuple[str, str], ...] = (
    ("step", "effective step |α·m̂/(√v̂+ε)|"),
    ("inv_sqrt_v", "1/(√v̂+ε)"),
    ("update_ratio", "update/weight |Δθ|/|θ|"),
)
INTERNALS_PREFIX = "internals/"  # the metrics src.internals logs


def _internals_series(results: Sequence[RunResult], arm: str, key: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, mean over seeds per logged epoch) of `internals/<key>` for one arm."""
    runs = [r for r in finished_runs(results)
            if r.arm == arm and r.history.get(INTERNALS_PREFIX + key)]
    if not runs:
        return np.empty(0), np.empty(0)
    mean, _, _ = band([r.history[INTERNALS_PREFIX + key] for r in runs])
    longest = max(runs, key=lambda r: len(r.history[INTERNALS_PREFIX + key]))
    epochs = longest.history.get(INTERNALS_PREFIX + "epoch") or list(range(1, mean.size + 1))
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
                    label=f"{label_of(arm, labels)}")
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
    return _save(fig, path)


_CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over 10 classes


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
        acc = is_accuracy(metric)
        scale = 100.0 if acc else 1.0
        grid = np.full((len(beta1s), len(beta2s)), np.nan)
        for (b1, b2), r in by_cell.items():
            grid[beta1s.index(b1), beta2s.index(b2)] = r.get(f"{metric}_mean", math.nan) * scale
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
            value, std = grid[i, j], r.get(f"{metric}_std", math.nan) * scale
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
    return _save(fig, path)


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
            scale = 100.0 if is_accuracy(metric) else 1.0
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
            if lower_is_better(metric) and drawn and min(drawn) > 0 and \
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
    return _save(fig, path)


def plot_ranking(rows: Sequence[Mapping], path: Path, metric: str, title: str) -> Path:
    """Arms top to bottom in the order of `rows`: mean `metric` (dot) and its 95% CI (bar).

    Each row has label, mean, ci_low, ci_high, note (text right of the bar), baseline (drawn
    grey, its mean a dashed line through the plot) and winner (blue, the label in bold).
    """
    scale = 100.0 if is_accuracy(metric) else 1.0
    fig = Figure(figsize=(9, 1.4 + 0.55 * max(len(rows), 1)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for y, row in enumerate(rows):
        mean = float(row["mean"]) * scale
        if not math.isfinite(mean):
            ax.text(0.02, y, "no finished run", va="center", transform=ax.get_yaxis_transform())
            continue
        low, high = float(row["ci_low"]) * scale, float(row["ci_high"]) * scale
        color = "tab:blue" if row.get("winner") else "tab:gray" if row.get("baseline") else "black"
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=color,
                    capsize=4, lw=1.6)
        if row.get("baseline"):
            ax.axvline(mean, color="tab:gray", ls="--", lw=1, alpha=0.7)
        if row.get("note"):
            ax.annotate(str(row["note"]), (high, y), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize="small", color=color)
    ax.set_yticks(range(len(rows)), [str(r["label"]) for r in rows])
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.get("winner"):
            tick.set_fontweight("bold")
    ax.invert_yaxis()  # the first row on top
    ax.margins(x=0.25)
    ax.set_xlabel(f"{metric} (%)" if scale != 1.0 else metric)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title, fontsize="medium", loc="left")
    return _save(fig, path)


def plot_step_sizes(rows: Sequence[Mapping], path: Path, metric: str) -> Path:
    """A step-size grid: mean `metric` against α (log axis) per arm, error bars = std over
    seeds, a ring around each arm's chosen α. Rows: arm, lr, n, mean, std, chosen."""
    scale = 100.0 if is_accuracy(metric) else 1.0
    arms = list(dict.fromkeys(str(r["arm"]) for r in rows))
    arm_colors = _arm_colors(arms, None, None)
    fig = Figure(figsize=(6.5, 4.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for arm in arms:
        mine = sorted((r for r in rows if r["arm"] == arm and r["n"] > 0), key=lambda r: r["lr"])
        if not mine:
            continue
        lrs = [float(r["lr"]) for r in mine]
        means = np.array([float(r["mean"]) for r in mine]) * scale
        stds = np.array([float(r["std"]) for r in mine]) * scale
        color = arm_colors[arm]
        ax.errorbar(lrs, means, yerr=stds, color=color, marker="o", ms=4, lw=1.5, capsize=3,
                    label=arm)
        for r, mean in zip(mine, means, strict=True):
            if r.get("chosen"):
                ax.plot(float(r["lr"]), mean, marker="o", ms=12, mfc="none", mec=color, mew=2)
    ax.set_xscale("log")
    if lower_is_better(metric) and all(float(r["mean"]) > 0 for r in rows if r["n"] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step size α")
    ax.set_ylabel(f"{metric} (%)" if scale != 1.0 else metric)
    ax.grid(True, alpha=0.3, which="both")
    if arms:
        ax.legend(loc="best", fontsize="small")
    ax.set_title(f"Step-size grid: final {metric}, mean ± std over seeds; ringed: chosen",
                 fontsize="medium")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120), True)
