"""A grid of Adam settings: every combination of `grid.beta1`, `grid.beta2` (and optionally
`grid.lr`, `grid.bias_correction`) is one arm of a comparison, trained with every seed.

Reached from `python -m src.train +experiment=beta_grid` (or `bias_correction`) through
`pipeline:` in the config. The arms are run by the comparison's machinery
(`pipelines.compare.plan` / `run_jobs`: worker processes, one MLflow child per cell × seed
under one parent); the report on the parent adds to the comparison's curves and tables a
table per cell (`grid.md`, `grid.csv`) and the figures the grid's shape calls for: a β1 × β2
heatmap with the convergence boundaries overlaid, and the bias-correction figure of the
paper's §6.4 when bias correction is varied (see `pipelines.report.write_grid_report`).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from pipelines.compare import arm_label, plan, run_under_parent
from pipelines.report import (
    RunResult,
    grid_table,
    write_grid_report,
    write_internals,
    write_report,
)
from src.config import ArmConfig, CompareConfig, Config, GridConfig, arm_optimizer, to_config
from src.tracking import log_metric_batch


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


def log_grid_report(client: MlflowClient, run_id: str, results: list[RunResult],
                    cells: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """The comparison's report without a verdict (curves, metrics tables), Adam's internals
    when logged, and the grid's own table and figures, under the parent's `report/`."""
    arms = list(cells)
    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(results, arms, Path(tmp), labels=labels, compare=None,
                              metric="val/loss", curve_metrics=("train/loss", "val/loss"))
        write_internals(results, arms, Path(tmp), labels=labels)
        write_grid_report(results, cells, Path(tmp))
        client.log_artifacts(run_id, tmp, "report")
    summary = dict(report.summary)
    for row in grid_table(results, cells):
        summary[f"{row['arm']}/finished"] = float(row["finished"])
    log_metric_batch(client, run_id, summary, step=0)
    where = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/report"
    return where.removeprefix("file://")


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
    jobs = plan(comparison)
    workers = min(grid.workers or os.cpu_count() or 1, len(jobs))
    assert comparison.compare is not None
    labels = {arm.name: arm_label(config.optimizer, arm_optimizer(config.optimizer, arm))
              for arm in comparison.compare.arms}
    _, where = run_under_parent(
        config, jobs, workers, "grid", describe_grid(grid, len(cells), len(jobs), workers),
        lambda client, parent, results: log_grid_report(client, parent, results, cells, labels))
    print(f"report: {where}", flush=True)
    return None


__all__ = ["arm_name", "as_comparison", "grid_arms", "log_grid_report", "main"]
