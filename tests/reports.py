"""Synthetic runs for the report tests: two arms, a few seeds, curves and final metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.report.results import RunResult

BLUE, ORANGE = "β=(0.9, 0.999)", "β=(0.1, 0.1)"
LABELS = {"blog_default": BLUE, "low_betas": ORANGE}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_runs(
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
                "train/loss": history["train/loss"][-1],  # as src.run reports it: the last epoch's
                "val/acc": acc + rng.normal(0, noise),
                "test/acc": acc + rng.normal(0, noise),
                "test/loss": loss + rng.normal(0, noise),
            }
            out.append(RunResult(arm, seed, history, final))
    return out


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]
