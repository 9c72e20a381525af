"""The skeleton every many-run pipeline shares: checks first, a parent run, its children, a report.

    preflight        the forkserver warming up, the data checked, the MLflow store opened
    worker_count     how many processes: as asked (null: one per core), never more than jobs
    parent_run       one MLflow parent run per invocation: started, config logged, always ended
    run_children     training jobs in worker processes, each one an MLflow child of the parent
    log_report       a folder the pipeline writes, logged as the parent's artifacts and metrics
    run_under_parent all of it in order, for a pipeline that trains a list of `Job`s

Worker processes are forked from a forkserver rather than with fork, because the parent has
threads by then (MLflow, SQLAlchemy) and forking a threaded process is unsafe; rather than
spawned, because a spawned worker would import torch, Lightning and MLflow again. The server
imports them once (`PRELOAD`), and every worker is a cheap fork of it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlflow.tracking import MlflowClient

from pipelines.report.results import RunResult, is_finished
from src.config import Config
from src.interrupts import stop_signals
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

# What every training worker needs, MLflow's SQL store included (imported on first use, in
# every worker, otherwise).
PRELOAD = ("src.run", "src.model", "mlflow.store.tracking.sqlalchemy_store")


# --- before anything is written ---------------------------------------------------------------

def forkserver(extra: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started now.

    Called before the parent checks the data and opens the MLflow store, so the server's
    imports run on another core meanwhile instead of when the first worker is needed. The
    preload list only counts for the server's first start in this process.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *extra])
    multiprocessing.forkserver.ensure_running()
    return context


def check_data(config: Config) -> None:
    """Load the data once in the parent: a bad `data.root` fails here, before any MLflow run."""
    from src.run import make_datamodule

    make_datamodule(config)


def open_tracking(config: Config) -> MlflowClient:
    """The MLflow store the config names (created if new): where the parent and children go."""
    return open_store(resolve_uri(config.tracking.uri))


def preflight(config: Config, parallel: bool, preload: Sequence[str] = ()) -> MlflowClient:
    """Everything that can be refused, checked before any run exists; the store's client.

    With `parallel`, the forkserver starts importing first, in the background. (The study
    opens its Optuna storage between the data and the store: it calls the steps itself.)
    """
    if parallel:
        forkserver(preload)
    check_data(config)
    return open_tracking(config)


def worker_count(requested: int | None, jobs: int) -> int:
    """`requested` processes (None: one per CPU core), never more than there are `jobs`."""
    return min(requested or os.cpu_count() or 1, jobs)


# --- the parent run ---------------------------------------------------------------------------

@contextmanager
def parent_run(client: MlflowClient, config: Config, kind: str, headline: str,
               name: str | None = None, tags: Mapping[str, str] | None = None,
               nested_in: str | None = None) -> Iterator[str]:
    """A new MLflow parent run (tag `pipeline=<kind>`, named `tracking.run_name`, else `name`,
    else `kind`) with the config logged; it ends FINISHED, FAILED or KILLED with the block.

    Prints `headline` with the run's id, so a user can find it in the UI while it runs.
    `nested_in`: a run this one is a child of (a study's confirmation under the study's run),
    named `name`, else `kind`.
    """
    run_name = (name or kind) if nested_in else (config.tracking.run_name or name or kind)
    parent = start_run(client, config.tracking.experiment, run_name, parent_run_id=nested_in,
                       tags={"pipeline": kind, **(tags or {})})
    print(f"{headline}; MLflow parent run {parent}", flush=True)
    with run_lifecycle(client, parent):
        log_config(client, parent, config)
        yield parent


def log_report(client: MlflowClient, run_id: str,
               write: Callable[[Path], tuple[Mapping[str, float], T]],
               artifact_path: str = "report") -> tuple[T, str]:
    """`write` fills a fresh folder and returns (metrics, anything); the folder becomes the
    run's `artifact_path/`, the metrics its step-0 metrics. Returns (anything, where the
    folder is: a local path for a local store)."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics, value = write(Path(tmp))
        client.log_artifacts(run_id, tmp, artifact_path)
    log_metric_batch(client, run_id, metrics, step=0)
    where = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + artifact_path
    return value, where.removeprefix("file://")


# --- the children -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One training run of a many-run pipeline: its arm, its seed and its whole config."""

    arm: str
    seed: int
    config: Config
    name: str | None = None  # the MLflow run's name; None: `<arm>/seed=<seed>`


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
                            run_name=job.name or f"{job.arm}/seed={job.seed}",
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
    """Train every job in `workers` processes; the results in the jobs' arm order, by seed."""
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


def run_children(client: MlflowClient, parent_run_id: str, jobs: list[Job],
                 workers: int) -> list[RunResult]:
    """`run_jobs`, and if it is stopped or fails, no child left RUNNING behind it."""
    try:
        return run_jobs(jobs, workers, parent_run_id)
    except BaseException as err:
        # A worker that was killed outright could not close its own run.
        close_orphans(client, parent_run_id, "FAILED" if isinstance(err, Exception) else "KILLED")
        raise


# --- a pipeline of training jobs, start to end -------------------------------------------------

def run_under_parent(config: Config, jobs: list[Job], workers: int, kind: str, headline: str,
                     write: Callable[[Path, list[RunResult]], tuple[Mapping[str, float], T]],
                     tags: Mapping[str, str] | None = None) -> tuple[list[RunResult], T]:
    """Check, run `jobs` as children of one new parent run (with `tags`), then
    `write(folder, results)` the report onto the parent (see `log_report`); prints where it is
    and which runs failed."""
    client = preflight(config, parallel=workers > 1)
    with parent_run(client, config, kind, headline, tags=tags) as parent:
        results = run_children(client, parent, jobs, workers)
        reported, where = log_report(client, parent, lambda folder: write(folder, results))
    for r in results:
        if not is_finished(r):
            print(f"warning: {r.arm} seed={r.seed} did not finish: {r.status}", flush=True)
    print(f"report: {where}", flush=True)
    return results, reported


__all__ = ["PRELOAD", "Job", "check_data", "forkserver", "log_report", "open_tracking",
           "parent_run", "preflight", "run_children", "run_jobs", "run_under_parent",
           "worker_count"]
