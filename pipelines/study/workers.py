"""The study's workers: processes that each pull the next trial from the storage until it is full.

`run_workers` starts them (forked from `pipelines.runs`' forkserver; one worker runs in the
calling process), `Turnstile` lets one of this machine's workers at a time claim a place,
and `settle` closes, after they are gone, whatever a killed worker left RUNNING.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from pipelines import lifeline
from pipelines.runs import forkserver, open_tracking
from pipelines.study.config import StudyRunConfig, make_pruner, make_sampler
from pipelines.study.storage import LockFile, has_room, lock_path, open_storage, storage_url
from pipelines.study.trial import Objective, QuietTrials, SurplusTrial
from src.cli import EXIT_INTERRUPTED, USER_ERRORS
from src.interrupts import Interrupted, stop_signals
from src.tracking import mask_secrets, set_tags

# What a study worker imports beyond a training run's stack (see pipelines.runs.PRELOAD).
PRELOAD = ("optuna",)


@dataclass(frozen=True)
class WorkerJob:
    """What one worker is given: the config, the invocation's parent run, its sampler seed."""

    config: StudyRunConfig
    parent_run_id: str
    index: int
    seed: int


class Turnstile(LockFile):
    """Lets one worker of this machine at a time from "is there room?" to its next trial.

    Optuna creates the next trial (study.ask) between the callback that checks for room and
    the objective; two workers finishing together would both see room for the last trial
    and both start one. The lock is taken before the check and released by the objective,
    once the new trial is RUNNING and counted. (Workers on other machines are not covered:
    the objective's own check ends such a surplus trial as FAIL.) A lock file, so that a
    killed holder releases it with its death; the study's own file (see `lock_path`), which
    each invocation removes as it leaves.
    """

    def __init__(self, storage: str, study_name: str) -> None:
        super().__init__(lock_path(storage, study_name))


def work(job: WorkerJob) -> None:
    """One worker: pull trials from the shared storage until the study is full."""
    s = job.config.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = QuietTrials()
    optimize_log = logging.getLogger("optuna.study._optimize")  # where failures are logged
    optimize_log.addFilter(quiet)
    storage = open_storage(s)
    study = optuna.load_study(study_name=s.name, storage=storage,
                              sampler=make_sampler(s, job.seed),
                              pruner=make_pruner(s, job.config.trainer.max_epochs))
    client = open_tracking(job.config, close_stale=False)  # the invocation did, at its start
    poll = min(1.0, s.heartbeat_interval)
    turnstile = Turnstile(storage_url(s), s.name)

    def room() -> bool:
        turnstile.acquire()  # held on True until the objective runs; released on False
        if has_room(study, s.n_trials, poll):
            return True
        turnstile.release()
        return False

    def stop_when_full(study: optuna.Study, trial: FrozenTrial) -> None:
        if not room():
            study.stop()

    try:
        if room():
            objective = Objective(job.config, job.parent_run_id, client, quiet,
                                  on_running=turnstile.release)
            study.optimize(objective, callbacks=[stop_when_full], catch=(SurplusTrial,),
                           gc_after_trial=False)
    finally:
        turnstile.release()
        turnstile.remove()  # whichever worker leaves last leaves no lock file behind
        optimize_log.removeFilter(quiet)


def _worker_process(job: WorkerJob, parent: Connection) -> None:
    """A worker process's body: exit codes instead of tracebacks for interrupts, user errors.

    It stops (its trial FAIL, its run KILLED) if the invocation's process dies. Ctrl-C is
    left to that process, which stops its workers with SIGTERM.
    """
    import torch

    lifeline.watch_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(job.config.trainer.num_threads)  # parallelism is across processes
    try:
        with lifeline.job(), stop_signals(signal.SIGTERM):
            work(job)
    except (KeyboardInterrupt, Interrupted):
        raise SystemExit(EXIT_INTERRUPTED) from None
    except USER_ERRORS as err:
        print(f"error: worker {job.index}: {mask_secrets(str(err))}", flush=True)
        raise SystemExit(2) from None


@contextmanager
def _stopped_on_exit(processes: list[multiprocessing.process.BaseProcess]) -> Iterator[None]:
    """If the parent is stopped, its workers are too (SIGTERM: their trials end FAIL)."""
    try:
        yield
    except BaseException:
        started = [p for p in processes if p.pid is not None]  # a failed start has none
        for p in started:
            if p.is_alive():
                p.terminate()
        for p in started:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        raise


def run_workers(jobs: list[WorkerJob]) -> list[int]:
    """Run the workers to the end; their exit codes (one worker runs in this process)."""
    if len(jobs) == 1:
        work(jobs[0])  # no process start-up for the common single-worker case
        return [0]
    context = forkserver(PRELOAD)
    tie = lifeline.Lifeline(context)
    processes = [context.Process(target=_worker_process, args=(job, tie.reader),
                                 name=f"study-worker-{job.index}") for job in jobs]
    try:
        with _stopped_on_exit(processes):
            for p in processes:
                p.start()
            for p in processes:
                p.join()
    finally:
        tie.close()
    return [p.exitcode if p.exitcode is not None else -1 for p in processes]


def worker_seeds(seed: int, invocation: str, workers: int) -> list[int]:
    """Distinct sampler seeds per worker and per invocation, all derived from `seed`.

    The same seed in every worker would make them propose the same random start-up points,
    and the same seed in two invocations would repeat each other's: invocations started
    together (a SLURM array) see the same study, so only their own id (`invocation`, the
    MLflow parent run's id) tells them apart.
    """
    entropy = int(hashlib.sha256(invocation.encode()).hexdigest()[:32], 16)
    states = [np.random.SeedSequence([seed, entropy, i]).generate_state(1)[0]
              for i in range(workers)]
    return [int(s) for s in states]


def settle(study: optuna.Study, client: MlflowClient, experiment: str,
           parent_run_id: str, status: str = "FAILED") -> None:
    """After the workers: no trial of theirs stays RUNNING, no MLflow child of a dead one either.

    Every worker of this invocation has exited, so a RUNNING trial it started (its worker
    was killed) is FAIL now rather than after the grace period. Children of FAIL trials from
    any invocation that are still RUNNING in MLflow are closed with `status` (KILLED when
    this invocation was stopped).
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("mlflow_parent_run_id") == parent_run_id:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    failed = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    found = client.get_experiment_by_name(experiment)
    if found is None or not failed:
        return
    name = study.study_name.replace("'", "")
    for run in client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`optuna.study` = '{name}' and attributes.status = 'RUNNING'"):
        if run.data.tags.get("optuna.trial") in failed:
            set_tags(client, run.info.run_id, {
                "optuna.state": TrialState.FAIL.name,
                "failure": "the worker process died during this trial (Optuna: FAIL)"})
            client.set_terminated(run.info.run_id, status)


__all__ = ["PRELOAD", "Turnstile", "WorkerJob", "run_workers", "settle", "work", "worker_seeds"]
