"""A Hydra multirun of `python -m src.train`: one MLflow parent, a child per job, a report.

    python -m src.train -m optimizer.betas='[0.9,0.999]','[0.1,0.1]' seed=0,1,2,3,4

Hydra's sweeper expands the sweep into jobs (lists of overrides); the project's launcher
(hydra_plugins/adam_study/launcher.py, chosen in conf/config.yaml) hands them to `launch`.
Every job's config is composed and validated before anything trains. The jobs then train in
the worker processes of `pipelines.runs`, each an MLflow child of the sweep's parent run,
named by the overrides that vary across the sweep (`optimizer.betas=[0.1,0.1],seed=3`).
Jobs whose overrides differ only in `seed` form one group, and the parent gets the report of
a comparison (`pipelines.compare.write_arms_report`): curves, tables and, with exactly two
groups, Welch's test and the verdict.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict, read_write

from pipelines.compare import write_arms_report
from pipelines.report.results import RunResult
from pipelines.runs import Job, run_under_parent, worker_count
from src.cli import user_errors
from src.config import Config, ConfigError, require, to_config

SEED = "seed"
METRIC = "test/acc"  # the verdict's metric, as in a comparison


def override_key(override: str) -> str:
    """`optimizer.betas=[0.1,0.1]` → `optimizer.betas` (also `+x=1` → `+x`, `~x` → `~x`)."""
    return override.split("=", 1)[0]


def swept_keys(job_overrides: Sequence[Sequence[str]]) -> set[str]:
    """The keys whose override differs between jobs: what the sweep varies."""
    seen: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for override in overrides:
            seen.setdefault(override_key(override), set()).add(override)
    every = [{override_key(o) for o in overrides} for overrides in job_overrides]
    in_all = set.intersection(*every) if every else set()
    return {key for key, values in seen.items() if len(values) > 1 or key not in in_all}


def job_name(overrides: Sequence[str], swept: set[str]) -> str:
    """The job as the sweep sees it: its swept overrides in command-line order."""
    return ",".join(o for o in overrides if override_key(o) in swept) or "all"


def group_name(overrides: Sequence[str], swept: set[str]) -> str:
    """The report's group of a job: its swept overrides other than the seed."""
    return job_name(overrides, swept - {SEED})


def task_config(sweep_config: DictConfig) -> DictConfig:
    """A job's config as the task sees it: without the `hydra` node (as Hydra's run_job does)."""
    task = copy.deepcopy(sweep_config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def compose_jobs(hydra_context: HydraContext, master: DictConfig,
                 job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                 ) -> list[tuple[DictConfig, Config]]:
    """Every job's Hydra config and validated Config; a bad value anywhere raises ConfigError
    naming the job, before anything is trained."""
    composed = []
    swept = swept_keys(job_overrides)
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        sweep_config = hydra_context.config_loader.load_sweep_config(master, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)  # `${hydra:...}` resolves per job
        try:
            config = to_config(task_config(sweep_config))
        except ConfigError as err:
            raise ConfigError(f"multirun job #{idx} ({job_name(overrides, swept)}): {err}"
                              ) from err
        if config.pipeline:
            raise ConfigError(f"multirun job #{idx}: {config.pipeline} is a many-run pipeline "
                              "of its own; run it without -m (a sweep sweeps single runs)")
        composed.append((sweep_config, config))
    HydraConfig.instance().set_config(master)
    stores = {(c.tracking.uri, c.tracking.experiment) for _, c in composed}
    if len(stores) > 1:
        raise ConfigError("the jobs of a sweep go under one parent run: sweep neither "
                          "tracking.uri nor tracking.experiment")
    return composed


def plan(job_overrides: Sequence[Sequence[str]], configs: Sequence[Config]) -> list[Job]:
    """One `Job` per job: grouped by its non-seed swept overrides, named by all swept ones."""
    swept = swept_keys(job_overrides)
    return [Job(group_name(overrides, swept), config.seed, config,
                name=job_name(overrides, swept))
            for overrides, config in zip(job_overrides, configs, strict=True)]


def write_sweep_report(folder: Path, results: list[RunResult], groups: list[str],
                       sweep_file: Path | None) -> tuple[dict[str, float], str | None]:
    """The comparison's report of the groups (Welch's test when there are exactly two), and
    Hydra's `multirun.yaml` beside it."""
    pair = (groups[0], groups[1]) if len(groups) == 2 else None
    summary, verdict = write_arms_report(folder, results, groups, pair, METRIC)
    if sweep_file is not None and sweep_file.is_file():
        shutil.copyfile(sweep_file, folder / sweep_file.name)
    return summary, verdict


def _job_return(overrides: Sequence[str], sweep_config: DictConfig,
                result: RunResult) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), cfg=task_config(sweep_config),
                    hydra_cfg=sweep_config, working_dir=os.getcwd(),
                    task_name=str(sweep_config.hydra.job.name))
    # A run that diverged is a finding about its settings, as in a comparison: reported, and
    # the sweep goes on (its return value is None).
    ret.status = JobStatus.COMPLETED
    ret.return_value = result.final.get("val/acc")
    return ret


def launch(hydra_context: HydraContext, master: DictConfig,
           job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
           workers: int | None) -> list[JobReturn]:
    """Validate, train and report one batch of a sweep (Hydra's basic sweeper sends one batch
    unless `hydra.sweeper.max_batch_size` is set: then each batch is a parent run)."""
    # Messages look as in a single run (Hydra's run_job would set this up per job).
    configure_log(master.hydra.job_logging, master.hydra.verbose)
    with user_errors():
        require(workers is None or workers >= 1,
                f"hydra.launcher.workers={workers}: must be >= 1 (or null: one per core)")
        composed = compose_jobs(hydra_context, master, job_overrides, initial_job_idx)
        jobs = plan(job_overrides, [config for _, config in composed])
        base = to_config(task_config(master))  # the sweep's shared settings, on the parent
        groups = list(dict.fromkeys(job.arm for job in jobs))
        n_workers = worker_count(workers, len(jobs))
        sweep = " ".join(master.hydra.overrides.task)
        sweep_file = Path(str(master.hydra.sweep.dir)) / "multirun.yaml"
        headline = (f"multirun: {len(jobs)} jobs in {len(groups)} group(s), {n_workers} worker "
                    f"processes")
        results, verdict = run_under_parent(
            base, jobs, n_workers, "multirun", headline,
            lambda folder, done: write_sweep_report(folder, done, groups, sweep_file),
            tags={"sweep": sweep})
        if verdict:
            print(f"verdict: {verdict}", flush=True)
    return [_job_return(overrides, sweep_config, result)
            for overrides, (sweep_config, _), result
            in zip(job_overrides, composed, _in_job_order(jobs, results), strict=True)]


def _in_job_order(jobs: list[Job], results: list[RunResult]) -> list[RunResult]:
    """`run_jobs` returns results by group, then seed; put them back in the sweep's order."""
    pool = list(results)
    ordered = []
    for job in jobs:
        match = next(i for i, r in enumerate(pool) if r.arm == job.arm and r.seed == job.seed)
        ordered.append(pool.pop(match))
    return ordered


__all__ = ["compose_jobs", "group_name", "job_name", "launch", "plan", "swept_keys",
           "write_sweep_report"]
