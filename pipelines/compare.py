"""A comparison: every arm × seed trained in parallel processes, then one report.

Reached from `python -m src.train +experiment=compare` through `pipeline:` in the config.
MLflow gets one parent run (report, per-arm summaries) with one nested child per arm × seed.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from pipelines.report import RunResult, write_internals, write_report
from pipelines.workers import forkserver
from src.config import CompareConfig, Config, OptimizerConfig, arm_optimizer, to_config
from src.interrupts import stop_signals
from src.run import make_datamodule
from src.tracking import (
    close_orphans,
    log_config,
    log_metric_batch,
    open_store,
    resolve_uri,
    run_lifecycle,
    start_run,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    arm: str
    seed: int
    config: Config


def arm_label(base: OptimizerConfig, optimizer: OptimizerConfig) -> str:
    """β always, then whatever else the arm changes (α, ε, ...), e.g. `β=(0.1, 0.1), α=0.01`;
    the optimizer's name first where it differs from the base's (`adamax, β=(0.9, 0.999)`)."""
    parts = [f"β=({optimizer.betas[0]:g}, {optimizer.betas[1]:g})"]
    if optimizer.name != base.name:
        parts.insert(0, optimizer.name)
    for name, symbol in (("lr", "α"), ("eps", "ε"), ("weight_decay", "wd"),
                         ("eps_mode", "eps_mode"), ("bias_correction", "bias_correction"),
                         ("amsgrad", "amsgrad")):
        value = getattr(optimizer, name)
        if value != getattr(base, name):
            parts.append(f"{symbol}={value:g}" if isinstance(value, float) else
                         f"{symbol}={value}")
    return ", ".join(parts)


def plan(config: Config) -> list[Job]:
    compare = config.compare
    assert compare is not None
    return [Job(arm.name, seed, replace(config, seed=seed, compare=None, pipeline=None,
                                        optimizer=arm_optimizer(config.optimizer, arm)))
            for arm in compare.arms for seed in compare.seeds]


def _worker_init() -> None:
    # Parallelism is across processes: a second torch thread per run only adds contention.
    import torch

    torch.set_num_threads(1)


_stopping = False  # set in a worker once it has been interrupted


def _train_job(job: Job, parent_run_id: str) -> RunResult:
    from src.model import NonFiniteLoss
    from src.run import train

    global _stopping
    if _stopping:
        # The executor may already have handed this worker its next job; a stopped
        # comparison must not start new runs.
        return RunResult(arm=job.arm, seed=job.seed, history={}, final={},
                         status="KILLED: not started")
    with stop_signals():
        try:
            outcome = train(job.config, parent_run_id=parent_run_id,
                            run_name=f"{job.arm}/seed={job.seed}",
                            tags={"arm": job.arm, "seed": str(job.seed)})
        except NonFiniteLoss as err:
            # Divergence is a finding about the arm, not a crash of the comparison.
            return RunResult(arm=job.arm, seed=job.seed, history={}, final={},
                             status=f"FAILED: {err}")
        except BaseException:
            _stopping = True
            raise
    return RunResult(arm=job.arm, seed=job.seed, history=outcome.history, final=outcome.final)


@contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes that are stopped (SIGTERM → their runs end KILLED) if we are."""
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=forkserver(),
                                   initializer=_worker_init)
    try:
        yield executor
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)  # nothing new starts
        for child in multiprocessing.active_children():
            child.terminate()
        executor.shutdown(wait=True)
        raise
    executor.shutdown(wait=True)


def run_jobs(jobs: list[Job], workers: int, parent_run_id: str) -> list[RunResult]:
    results: list[RunResult] = []
    with _pool(workers) as executor:
        futures: dict[Future[RunResult], Job] = {
            executor.submit(_train_job, job, parent_run_id): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            result = future.result()
            results.append(result)
            acc = result.final.get("test/acc")
            shown = f"test/acc={acc:.4f}" if acc is not None else result.status
            print(f"[{done}/{len(jobs)}] {job.arm} seed={job.seed}: {shown}", flush=True)
    return sorted(results, key=lambda r: ([j.arm for j in jobs].index(r.arm), r.seed))


def log_report(client: MlflowClient, run_id: str, results: list[RunResult],
               compare: CompareConfig, labels: dict[str, str]) -> tuple[str | None, str]:
    arms = [arm.name for arm in compare.arms]
    contrast = tuple(compare.contrast) if compare.contrast else tuple(arms[:2])
    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(results, arms, Path(tmp), labels=labels,
                              compare=contrast if len(contrast) == 2 else None,
                              metric=compare.metric)
        write_internals(results, arms, Path(tmp), labels=labels)  # when internals.enabled
        client.log_artifacts(run_id, tmp, "report")
    log_metric_batch(client, run_id, report.summary, step=0)
    where = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/report"
    return report.verdict, where.removeprefix("file://")


def run_under_parent(config: Config, jobs: list[Job], workers: int, kind: str, headline: str,
                     report: Callable[[MlflowClient, str, list[RunResult]], T],
                     ) -> tuple[list[RunResult], T]:
    """Run `jobs` as children of one new MLflow parent run, then `report` onto the parent."""
    if workers > 1:
        forkserver()  # starts importing in the background while we check data and store
    make_datamodule(config)  # a bad data.root fails here, before any MLflow run exists
    client = open_store(resolve_uri(config.tracking.uri))
    parent = start_run(client, config.tracking.experiment, config.tracking.run_name or kind,
                       tags={"pipeline": kind})
    print(f"{headline}; MLflow parent run {parent}", flush=True)
    with run_lifecycle(client, parent):
        log_config(client, parent, config)
        try:
            results = run_jobs(jobs, workers, parent)
        except BaseException as err:
            # A worker that was killed outright could not close its own run.
            close_orphans(client, parent, "FAILED" if isinstance(err, Exception) else "KILLED")
            raise
        reported = report(client, parent, results)
    for r in results:
        if r.status != "FINISHED":
            print(f"warning: {r.arm} seed={r.seed} did not finish: {r.status}", flush=True)
    return results, reported


def main(cfg: DictConfig) -> float | None:
    config = to_config(cfg)
    compare = config.compare
    if compare is None:
        raise SystemExit("pipelines.compare needs a `compare:` section (+experiment=compare)")
    jobs = plan(config)
    workers = min(compare.workers or os.cpu_count() or 1, len(jobs))
    labels = {arm.name: arm_label(config.optimizer, arm_optimizer(config.optimizer, arm))
              for arm in compare.arms}
    headline = (f"compare: {len(compare.arms)} arms × {len(compare.seeds)} seeds = {len(jobs)} "
                f"runs, {workers} worker processes")
    _, (verdict, where) = run_under_parent(
        config, jobs, workers, "compare", headline,
        lambda client, parent, results: log_report(client, parent, results, compare, labels))
    print(f"report: {where}", flush=True)
    if verdict:
        print(f"verdict: {verdict}", flush=True)
    return None


__all__ = ["Job", "arm_label", "main", "plan", "run_jobs", "run_under_parent"]
