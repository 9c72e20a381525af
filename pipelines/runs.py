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
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from pipelines import lifeline
from pipelines.report.results import RunResult, is_finished
from src.cli import fail
from src.config import Config
from src.interrupts import stop_signals
from src.liveness import announce, close_lost_children, close_stale_runs, describe
from src.tracking import (
    log_config,
    log_metric_batch,
    mask_secrets,
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


def open_tracking(config: Config, close_stale: bool = True) -> MlflowClient:
    """The MLflow store the config names (created if new): where the parent and children go.

    With `close_stale` (an invocation's own start, not its workers'), runs left RUNNING by
    processes that are gone (killed outright) are closed first, and named.
    """
    client = open_store(resolve_uri(config.tracking.uri))
    if close_stale:
        announce(close_stale_runs(client))
    return client


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
    # A file: URI is percent-encoded (é, spaces); the user needs the path itself.
    return value, local_file_uri_to_path(where) if where.startswith("file:") else where


# --- the children -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One training run of a many-run pipeline: its arm, its seed and its whole config."""

    arm: str
    seed: int
    config: Config
    name: str | None = None  # the MLflow run's name; None: `<arm>/seed=<seed>`


def _worker_init(parent: Connection) -> None:
    lifeline.watch_parent(parent)  # a worker does not outlive the pipeline's process
    # Ctrl-C reaches every process of the terminal's group; only the parent acts on it, and
    # stops its workers with SIGTERM (their runs end KILLED). A worker that raised on its own
    # Ctrl-C between jobs, or on a second one, would print a traceback and break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lightning logs every SIGTERM it sees; the parent says once why its workers stopped.
    import logging

    logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector").setLevel(
        logging.WARNING)
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
    with lifeline.job(), stop_signals(signal.SIGTERM):
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


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Cancel what has not started, stop the workers (SIGTERM), and wait until they are gone:
    each ends its own run KILLED, and only then may a run still RUNNING be called lost."""
    executor.shutdown(wait=False, cancel_futures=True)  # nothing new starts
    # (shutdown without waiting forgets the workers: they are joined here instead.)
    workers = multiprocessing.active_children()
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=60)
        if worker.is_alive():  # stuck: its run is closed as lost afterwards
            worker.kill()
            worker.join()


@contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes that are stopped (SIGTERM → their runs end KILLED) if we are, and
    that stop themselves if we die (see `pipelines.lifeline`)."""
    context = forkserver()
    tie = lifeline.Lifeline(context)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                   initializer=_worker_init, initargs=(tie.reader,))
    try:
        yield executor
    except BaseException:
        _stop_workers(executor)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        tie.close()


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


class WorkerLost(Exception):
    """A worker process died (killed or crashed) during a run; the message is one line."""


def run_children(client: MlflowClient, parent_run_id: str, jobs: list[Job],
                 workers: int) -> list[RunResult]:
    """`run_jobs`, and if it is stopped or fails, no child left RUNNING behind it; a worker
    that died is `WorkerLost`, naming the run it took with it."""
    try:
        return run_jobs(jobs, workers, parent_run_id)
    except BrokenProcessPool as err:
        lost = close_lost_children(client, parent_run_id, "FAILED")
        during = (f" during {', '.join(describe(run) for run in lost)}" if lost else "")
        raise WorkerLost(
            f"a worker process died (killed or crashed){during}: that run and the parent "
            "ended FAILED, runs still training were stopped (KILLED); run the command again "
            "for a complete comparison") from err
    except BaseException as err:
        # A worker that was killed outright could not close its own run.
        close_lost_children(client, parent_run_id,
                            "FAILED" if isinstance(err, Exception) else "KILLED")
        raise


# --- a pipeline of training jobs, start to end -------------------------------------------------

def run_under_parent(config: Config, jobs: list[Job], workers: int, kind: str, headline: str,
                     write: Callable[[Path, list[RunResult]], tuple[Mapping[str, float], T]],
                     tags: Mapping[str, str] | None = None,
                     verdict: Callable[[list[RunResult]], str | None] | None = None,
                     ) -> tuple[list[RunResult], T]:
    """Check, run `jobs` as children of one new parent run (with `tags`), then
    `write(folder, results)` the report onto the parent (see `log_report`); prints which runs
    failed, where the report is, and the `verdict` of the results, which is printed even if
    the report cannot be written. A worker process that dies is one `error:` line and exit
    status 1."""
    client = preflight(config, parallel=workers > 1)
    try:
        with parent_run(client, config, kind, headline, tags=tags) as parent:
            results = run_children(client, parent, jobs, workers)
            concluded = verdict(results) if verdict is not None else None
            try:
                reported, where = log_report(client, parent,
                                             lambda folder: write(folder, results))
            except Exception as err:
                _conclude(results, None, concluded)
                text = str(err).strip()
                why = mask_secrets(text.splitlines()[0] if text else type(err).__name__)
                print(f"warning: the report could not be written ({why})"
                      + ("; the verdict above is from the finished runs" if concluded else ""),
                      flush=True)
                raise
    except WorkerLost as err:
        fail(str(err), code=1)
    _conclude(results, where, concluded)
    return results, reported


def _conclude(results: list[RunResult], where: str | None, verdict: str | None) -> None:
    for r in results:
        if not is_finished(r):
            print(f"warning: {r.arm} seed={r.seed} did not finish: {r.status}", flush=True)
    if where is not None:
        print(f"report: {where}", flush=True)
    if verdict:
        print(f"verdict: {verdict}", flush=True)


__all__ = ["PRELOAD", "Job", "WorkerLost", "check_data", "forkserver", "log_report",
           "open_tracking", "parent_run", "preflight", "run_children", "run_jobs",
           "run_under_parent", "worker_count"]
