"""A grid of Adam settings: what it plans (every combination of `grid.beta1`, `grid.beta2`,
optionally `grid.lr`, `grid.bias_correction`, as the arms of a comparison) and what it reports.

Reached from `python -m src.train +experiment=beta_grid` (or `bias_correction`) through
`pipeline:` in the config. The arms are expanded by the comparison's `plan` and run by
`pipelines.runs` (worker processes, one MLflow child per cell × seed under one parent); the
report on the parent adds to the comparison's curves and tables a table per cell (`grid.md`,
`grid.csv`) and the figures the grid's shape calls for: a β1 × β2 heatmap with the
convergence boundaries overlaid, and the bias-correction figure of the paper's §6.4 when
bias correction is varied (see `pipelines.report.grids`).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipelines.compare import arm_labels, plan
from pipelines.report.compare import write_report
from pipelines.report.grids import grid_table, write_grid_report
from pipelines.report.internals import write_internals
from pipelines.report.results import RunResult
from pipelines.runs import run_under_parent, worker_count
from src.config import ArmConfig, CompareConfig, Config, GridConfig, arm_optimizer, to_config


def arm_name(coords: dict[str, Any]) -> str:
    """e.g. `beta_0.9_0.999`, `beta_0.9_0.999_lr_0.001_bc_off`."""
    name = f"beta_{coords['beta1']:g}_{coords['beta2']:g}"
    if "lr" in coords:
        name += f"_lr_{coords['lr']:g}"
    if "bias_correction" in coords:
        name += "_bc_" + ("on" if coords["bias_correction"] else "off")
    return name


def grid_arms(config: Config) -> tuple[list[ArmConfig], dict[str, dict[str, Any]]]:
    """The arms of the grid (β1-major, then β2, α, bias correction) and, per arm name, the
    cell's coordinates: β1, β2, α and bias correction as the arm trains them."""
    grid = config.grid
    assert grid is not None
    axes: dict[str, list[Any]] = {"beta1": list(grid.beta1), "beta2": list(grid.beta2)}
    if grid.lr is not None:
        axes["lr"] = list(grid.lr)
    if grid.bias_correction is not None:
        axes["bias_correction"] = list(grid.bias_correction)
    arms: list[ArmConfig] = []
    cells: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*axes.values()):
        coords = dict(zip(axes, values, strict=True))
        overrides: dict[str, Any] = {"betas": [coords["beta1"], coords["beta2"]]}
        overrides.update({k: v for k, v in coords.items() if k in ("lr", "bias_correction")})
        arm = ArmConfig(name=arm_name(coords), optimizer=overrides)
        optimizer = arm_optimizer(config.optimizer, arm)  # validated, as compare's arms
        arms.append(arm)
        cells[arm.name] = {"beta1": optimizer.betas[0], "beta2": optimizer.betas[1],
                           "lr": optimizer.lr, "bias_correction": optimizer.bias_correction}
    return arms, cells


def as_comparison(config: Config) -> tuple[Config, dict[str, dict[str, Any]]]:
    """The grid as a comparison config (what `pipelines.compare.plan` expands) and its cells."""
    grid = config.grid
    assert grid is not None
    arms, cells = grid_arms(config)
    compare = CompareConfig(arms=arms, seeds=list(grid.seeds), workers=grid.workers,
                            metric="val/loss")
    return replace(config, compare=compare, grid=None), cells


def write_grid_folder(folder: Path, results: list[RunResult], cells: dict[str, dict[str, Any]],
                      labels: dict[str, str]) -> tuple[dict[str, float], None]:
    """The comparison's report without a verdict (curves, metrics tables), Adam's internals
    when logged, and the grid's own table and figures, into `folder`; the parent's metrics."""
    arms = list(cells)
    report = write_report(results, arms, folder, labels=labels, compare=None,
                          metric="val/loss", curve_metrics=("train/loss", "val/loss"))
    write_internals(results, arms, folder, labels=labels)
    write_grid_report(results, cells, folder)
    summary = dict(report.summary)
    for row in grid_table(results, cells):
        summary[f"{row['arm']}/finished"] = float(row["finished"])
    return summary, None


def describe_grid(grid: GridConfig, cells: int, runs: int, workers: int) -> str:
    axes = [f"β1 {list(grid.beta1)}", f"β2 {list(grid.beta2)}"]
    if grid.lr is not None:
        axes.append(f"α {list(grid.lr)}")
    if grid.bias_correction is not None:
        axes.append(f"bias correction {list(grid.bias_correction)}")
    return (f"grid: {' × '.join(axes)} = {cells} cells × {len(grid.seeds)} seeds = {runs} runs, "
            f"{workers} worker processes")


def main(cfg: DictConfig) -> float | None:
    config = to_config(cfg)
    grid = config.grid
    if grid is None:
        raise SystemExit("pipelines.grid needs a `grid:` section (+experiment=beta_grid)")
    comparison, cells = as_comparison(config)
    assert comparison.compare is not None
    jobs = plan(comparison)
    workers = worker_count(grid.workers, len(jobs))
    labels = arm_labels(config.optimizer, comparison.compare.arms)
    run_under_parent(
        config, jobs, workers, "grid", describe_grid(grid, len(cells), len(jobs), workers),
        lambda folder, results: write_grid_folder(folder, results, cells, labels))
    return None


__all__ = ["arm_name", "as_comparison", "describe_grid", "grid_arms", "main",
           "write_grid_folder"]
