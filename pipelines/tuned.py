"""A tuned comparison: each arm's step size chosen on a grid (on validation), then compared.

Reached from `python -m src.train +experiment=paper_logreg` (or `paper_mlp`) through
`pipeline:` in the config: Kingma & Ba compare optimizers each at its own best step size
("a dense grid search"), which a comparison at one shared α would not. Two phases under one
MLflow parent run, both planned by `pipelines.compare.plan` and trained by `pipelines.runs`:

1. the grid: every arm named in `tune.lr` × each of its step sizes × `tune.seeds`, as arms
   named `<arm>@lr=<α>`;
2. the comparison: every arm at the α with the best mean `tune.metric` (validation) over
   `compare.seeds`, which differ from the grid's seeds.

The report on the parent has the comparison's curves (training cost per epoch, as the
paper's figures), its table (final training loss, validation and test accuracy), the verdict
of its contrast, and the grid's own table and figure (`pipelines.report.tuned`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from pipelines.compare import contrast, plan
from pipelines.report.compare import write_report
from pipelines.report.results import RunResult, is_finished
from pipelines.report.tuned import choose_step_sizes, write_step_size_report
from pipelines.runs import log_report, parent_run, preflight, run_children, worker_count
from src.config import ArmConfig, Config, arm_optimizer, to_config

# The paper's figures plot the training cost; the table adds what a reader checks it against.
CURVES = ("train/loss", "val/loss")
TABLE = ("train/loss", "val/acc", "test/acc", "test/loss")


def grid_arm_name(arm: str, lr: float) -> str:
    return f"{arm}@lr={lr:g}"


def grid_plan(config: Config) -> tuple[Config, dict[str, tuple[str, float]]]:
    """The grid as a comparison config, and per grid arm its (arm, α)."""
    compare, tune = config.compare, config.tune
    assert compare is not None and tune is not None
    arms: list[ArmConfig] = []
    cells: dict[str, tuple[str, float]] = {}
    for arm in compare.arms:
        for lr in tune.lr.get(arm.name, []):
            name = grid_arm_name(arm.name, lr)
            arms.append(ArmConfig(name=name, optimizer={**arm.optimizer, "lr": lr}))
            cells[name] = (arm.name, float(lr))
    grid = replace(compare, arms=arms, seeds=list(tune.seeds), contrast=[])
    return replace(config, compare=grid), cells


def at_step_sizes(config: Config, chosen: dict[str, float]) -> Config:
    """The comparison with each tuned arm at its chosen α (the others as configured)."""
    compare = config.compare
    assert compare is not None
    arms = [replace(arm, optimizer={**arm.optimizer, "lr": chosen[arm.name]})
            if arm.name in chosen else arm for arm in compare.arms]
    return replace(config, compare=replace(compare, arms=arms))


def with_final_train_loss(results: list[RunResult]) -> list[RunResult]:
    """Each run's last epoch's training loss among its final metrics, for the table."""
    return [replace(r, final={**r.final, "train/loss": r.history["train/loss"][-1]})
            if r.history.get("train/loss") else r for r in results]


def labels_at(config: Config) -> dict[str, str]:
    """`<arm> (α=<lr>)` for each arm of a comparison config."""
    compare = config.compare
    assert compare is not None
    return {arm.name: f"{arm.name} (α={arm_optimizer(config.optimizer, arm).lr:g})"
            for arm in compare.arms}


def write_tuned_folder(folder: Path, final: Config, grid_results: list[RunResult],
                       results: list[RunResult], cells: dict[str, tuple[str, float]],
                       chosen: dict[str, float]) -> tuple[dict[str, float], str | None]:
    compare, tune = final.compare, final.tune
    assert compare is not None and tune is not None
    arms = [arm.name for arm in compare.arms]
    report = write_report(with_final_train_loss(results), arms, folder, labels=labels_at(final),
                          compare=contrast(compare), metric=compare.metric, metrics=TABLE,
                          curve_metrics=CURVES)
    grid_summary = write_step_size_report(folder, grid_results, cells, chosen, tune.metric)
    return {**report.summary, **grid_summary}, report.verdict


def main(cfg: DictConfig) -> float | None:
    config = to_config(cfg)
    if config.compare is None or config.tune is None:
        raise SystemExit("pipelines.tuned needs `compare:` and `tune:` sections "
                         "(+experiment=paper_logreg)")
    grid, cells = grid_plan(config)
    grid_jobs = plan(grid)
    n_final = len(config.compare.arms) * len(config.compare.seeds)
    workers = worker_count(config.compare.workers, max(len(grid_jobs), n_final))
    headline = (f"tuned comparison: {len(grid_jobs)} grid runs ({len(cells)} arm × α), then "
                f"{len(config.compare.arms)} arms × {len(config.compare.seeds)} seeds = "
                f"{n_final} runs, {workers} worker processes")
    client = preflight(config, parallel=workers > 1)
    with parent_run(client, config, "tuned", headline) as parent:
        grid_results = run_children(client, parent, grid_jobs, workers)
        chosen = choose_step_sizes(grid_results, cells, config.tune.metric)
        for arm in config.tune.lr:
            shown = f"α={chosen[arm]:g}" if arm in chosen else "every α failed: as configured"
            print(f"step size: {arm} {shown} (best mean {config.tune.metric} on the grid)",
                  flush=True)
        final = at_step_sizes(config, chosen)
        results = run_children(client, parent, plan(final), workers)
        verdict, where = log_report(client, parent, lambda folder: write_tuned_folder(
            folder, final, grid_results, results, cells, chosen))
    for r in grid_results + results:
        if not is_finished(r):
            print(f"warning: {r.arm} seed={r.seed} did not finish: {r.status}", flush=True)
    print(f"report: {where}", flush=True)
    if verdict:
        print(f"verdict: {verdict}", flush=True)
    return None


__all__ = ["at_step_sizes", "grid_arm_name", "grid_plan", "labels_at", "main",
           "with_final_train_loss", "write_tuned_folder"]
