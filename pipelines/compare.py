"""A comparison: what it plans (every arm × seed) and what it reports (curves, tables, verdict).

Reached from `python -m src.train +experiment=compare` through `pipeline:` in the config.
MLflow gets one parent run (report, per-arm summaries) with one nested child per arm × seed;
the machinery (checks, worker processes, parent and children) is `pipelines.runs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from omegaconf import DictConfig

from pipelines.report.compare import contrast_verdict, write_report
from pipelines.report.internals import write_internals
from pipelines.report.results import RunResult
from pipelines.runs import Job, run_under_parent, worker_count
from src.config import ArmConfig, CompareConfig, Config, OptimizerConfig, arm_optimizer, to_config
from src.optim.registry import OPTIMIZERS


def arm_label(base: OptimizerConfig, optimizer: OptimizerConfig) -> str:
    """β (for an optimizer that has them), then whatever else the arm changes (α, ε, its
    section's options, ...), e.g. `β=(0.1, 0.1), α=0.01`; the optimizer's name first where it
    differs from the base's (`adamax, β=(0.9, 0.999)`, `sgd, α=0.1, momentum=0.9`)."""
    spec = OPTIMIZERS[optimizer.name]
    parts = [] if optimizer.name == base.name else [optimizer.name]
    if "betas" in spec.fields:
        parts.append(f"β=({optimizer.betas[0]:g}, {optimizer.betas[1]:g})")
    changed: list[tuple[str, object]] = [
        (symbol, getattr(optimizer, name))
        for name, symbol in (("lr", "α"), ("eps", "ε"), ("weight_decay", "wd"),
                             ("eps_mode", "eps_mode"), ("bias_correction", "bias_correction"),
                             ("amsgrad", "amsgrad"), ("schedule", "schedule"))
        if getattr(optimizer, name) != getattr(base, name)]
    if spec.section is not None:  # the section's options that differ from torch's defaults
        options = getattr(optimizer, spec.section)
        defaults = type(options)()
        changed += [(f.name, getattr(options, f.name)) for f in fields(options)
                    if getattr(options, f.name) != getattr(defaults, f.name)]
    parts += [f"{symbol}={value:g}" if isinstance(value, float) else f"{symbol}={value}"
              for symbol, value in changed]
    return ", ".join(parts)


def arm_labels(base: OptimizerConfig, arms: Sequence[ArmConfig]) -> dict[str, str]:
    """Each arm's display label (see `arm_label`), by arm name."""
    return {arm.name: arm_label(base, arm_optimizer(base, arm)) for arm in arms}


def plan(config: Config) -> list[Job]:
    """One job per arm × seed (arm-major), each a plain training config with the arm applied."""
    compare = config.compare
    assert compare is not None
    return [Job(arm.name, seed, replace(config, seed=seed, compare=None, pipeline=None,
                                        optimizer=arm_optimizer(config.optimizer, arm)))
            for arm in compare.arms for seed in compare.seeds]


def contrast(compare: CompareConfig) -> tuple[str, str] | None:
    """The two arms the report tests against each other: `compare.contrast`, else the first
    two arms; None when there is only one arm."""
    arms = [arm.name for arm in compare.arms]
    pair = tuple(compare.contrast) if compare.contrast else tuple(arms[:2])
    return (pair[0], pair[1]) if len(pair) == 2 else None


def write_arms_report(folder: Path, results: list[RunResult], arms: Sequence[str],
                      pair: tuple[str, str] | None, metric: str,
                      labels: Mapping[str, str] | None = None,
                      ) -> tuple[dict[str, float], str | None]:
    """Curves, tables and, for `pair`, Welch's test and the verdict on `metric` (and Adam's
    internals when they were logged) into `folder`; returns the parent's metrics and the
    verdict. What a comparison reports, and a multirun sweep too."""
    report = write_report(results, arms, folder, labels=labels, compare=pair, metric=metric)
    write_internals(results, arms, folder, labels=labels)  # when internals.enabled
    return report.summary, report.verdict


def write_compare_report(folder: Path, results: list[RunResult], compare: CompareConfig,
                         labels: dict[str, str]) -> tuple[dict[str, float], str | None]:
    """`write_arms_report` for the configured arms and contrast."""
    return write_arms_report(folder, results, [arm.name for arm in compare.arms],
                             contrast(compare), compare.metric, labels)


def main(cfg: DictConfig) -> float | None:
    config = to_config(cfg)
    compare = config.compare
    if compare is None:
        raise SystemExit("pipelines.compare needs a `compare:` section (+experiment=compare)")
    jobs = plan(config)
    workers = worker_count(compare.workers, len(jobs))
    labels = arm_labels(config.optimizer, compare.arms)
    headline = (f"compare: {len(compare.arms)} arms × {len(compare.seeds)} seeds = {len(jobs)} "
                f"runs, {workers} worker processes")
    pair = contrast(compare)
    run_under_parent(
        config, jobs, workers, "compare", headline,
        lambda folder, results: write_compare_report(folder, results, compare, labels),
        verdict=lambda results: (None if pair is None else contrast_verdict(
            results, pair, compare.metric, labels)))
    return None


__all__ = ["arm_label", "arm_labels", "contrast", "main", "plan", "write_arms_report",
           "write_compare_report"]
