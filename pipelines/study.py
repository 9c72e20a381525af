"""`python -m pipelines.study [overrides]`: an Optuna study over Adam's α, β1 and β2.

    python -m pipelines.study study.n_trials=40 trainer.max_epochs=3 study.workers=2
    python -m pipelines.study study.n_trials=60      # same name: resumes, runs the 20 missing

One invocation: validate everything → open the persistent storage → create or load the study
→ an MLflow parent run → `study.workers` processes, each pulling the next trial from the
storage as soon as its last one ends, until the study holds `study.n_trials` finished
(complete or pruned) trials → plots and the best trial on the parent run → the best trial
as a Hydra experiment, `conf/experiment/best_<name>.yaml`, for `python -m src.train`.

Every trial is one `src.run.train` call: a nested MLflow child run with per-epoch metrics,
reported to the trial after each validation so the pruner can stop it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import optuna
import pytorch_lightning as pl
import sqlalchemy.exc
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from pipelines import study_config
from pipelines.study_config import (
    StudyConfig,
    StudyRunConfig,
    first_difference,
    from_optuna_params,
    make_pruner,
    make_sampler,
    suggest,
    to_optuna_params,
    to_study_config,
    trial_settings,
)
from pipelines.workers import forkserver
from src.cli import EXIT_INTERRUPTED, USER_ERRORS, hydra_entry, user_errors
from src.config import ConfigError
from src.files import atomic_write
from src.interrupts import Interrupted, stop_signals
from src.tracking import (
    PROJECT_ROOT,
    STORE_DIR,
    TrackingError,
    flatten,
    log_metric_batch,
    log_params,
    mask_secrets,
    open_store,
    resolve_uri,
    run_lifecycle,
    set_tags,
    sqlite_path,
    start_run,
    use_wal,
)

study_config.register()

DEFAULT_STORAGE = f"sqlite:///{STORE_DIR / 'optuna.db'}"
DEFAULT_EXPORT_DIR = PROJECT_ROOT / "conf" / "experiment"
# What `study.n_trials` counts. FAIL is left out: a crashed or killed trial measured nothing,
# so it is replaced (now, or by the next resume) rather than counted.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# What a study worker imports beyond a training run's stack (see pipelines.workers).
_PRELOAD = ("optuna",)

# --- storage and study -----------------------------------------------------------------------

def storage_url(study: StudyConfig) -> str:
    return study.storage or DEFAULT_STORAGE


class _SQLiteStorage(optuna.storages.RDBStorage):
    """RDBStorage whose trial state changes are serialized across processes by a lock file.

    A worker claims an enqueued (WAITING) trial by reading its state and writing RUNNING.
    Other databases lock the row (SELECT ... FOR UPDATE); SQLite ignores that, and Python's
    sqlite3 runs the read outside any transaction, so two workers could both claim the same
    trial (seen here: both ran trial 0). Every check-and-set goes through this method.
    """

    def __init__(self, url: str, lock_path: Path, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._lock_path = lock_path

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if the process dies
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _create_storage(url: str, path: Path | None, heartbeat: dict[str, int],
                    attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage, retried while another worker is creating the same schema.

    Workers started together (a SLURM array, several machines) on an empty database all run
    Optuna's CREATE TABLEs; on PostgreSQL the losers fail with a unique violation on the
    catalog. Once the winner is done the tables exist, so a retry simply opens them.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                if path is None:
                    return optuna.storages.RDBStorage(url, **heartbeat)
                return _SQLiteStorage(url, path.with_name(path.name + ".lock"),
                                      engine_kwargs={"connect_args": {"timeout": 60}},
                                      **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(study: StudyConfig) -> optuna.storages.RDBStorage:
    """The study's RDB storage with heartbeats (a dead worker's trial turns FAIL).

    SQLite files are put in WAL mode, as the MLflow store is, so that workers, the dashboard
    and the `optuna` CLI read while one writes; SQLite's own lock queue absorbs the rest.
    """
    url = storage_url(study)
    shown = mask_secrets(url)
    path = sqlite_path(url)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        heartbeat = {"heartbeat_interval": study.heartbeat_interval,
                     "grace_period": study.grace_period}
        storage = _create_storage(url, path, heartbeat)
        if path is not None:
            use_wal(path, timeout=60)
    except Exception as err:  # SQLAlchemy, drivers and the OS raise many types: all "unusable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"cannot open the Optuna storage {shown}: "
                            f"{mask_secrets(first)}") from err
    return storage


def open_study(config: StudyRunConfig, storage: optuna.storages.BaseStorage
               ) -> tuple[optuna.Study, bool]:
    """Load the study of this name, or create it (enqueueing `study.enqueue`); True if created.

    A study is resumed only with the settings it was created with (see `trial_settings`):
    otherwise its trials would not be comparable, and nothing is written.
    """
    s = config.study
    settings = json.loads(json.dumps(trial_settings(config)))
    try:
        study = optuna.load_study(study_name=s.name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=s.name, storage=storage, load_if_exists=True,
                                    direction=s.resolved_direction)
        if "settings" not in study.user_attrs:
            study.set_user_attr("settings", settings)
            if s.enqueue and s.sampler.name == "grid":
                print("note: study.enqueue is ignored by the grid sampler", flush=True)
            elif s.enqueue:
                for point in s.enqueue:
                    chosen = {k: v for k, v in asdict(point).items() if v is not None}
                    study.enqueue_trial(to_optuna_params(chosen))
            return study, True
    old = study.user_attrs.get("settings")
    key = first_difference(old, settings) if old is not None else None
    if key is not None:
        raise ConfigError(
            f"study {s.name!r} was created with {key}={_lookup(old, key)!r}, this run has "
            f"{_lookup(settings, key)!r}: trials would not be comparable; keep the setting or "
            "choose another study.name")
    return study, False


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def counts(study: optuna.Study) -> dict[TrialState, int]:
    tally = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        tally[trial.state] += 1
    return tally


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def has_room(study: optuna.Study, n_trials: int, poll_seconds: float) -> bool:
    """Whether another trial may start without the study passing `n_trials` finished trials.

    Running trials (any worker's) count as places taken. While they alone could fill the
    study, wait: each either finishes, or its heartbeat stops and it turns FAIL after the
    grace period, which frees its place. This is what makes the total exact with workers
    racing, and what keeps a killed worker's trial from being lost or counted.
    """
    while True:
        fail_stale_trials(study)
        tally = counts(study)
        finished = sum(tally[state] for state in FINISHED)
        if finished >= n_trials:
            return False
        if finished + tally[TrialState.RUNNING] < n_trials:
            return True
        time.sleep(poll_seconds)


# --- one trial -------------------------------------------------------------------------------

class SurplusTrial(Exception):
    """The study was already full when this trial started (two workers asked at once)."""


class _QuietTrials(logging.Filter):
    """Drops Optuna's failure warnings for trials whose end is already printed in one line.

    Surplus and interrupted trials: Optuna would log a traceback for each, in every worker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed") for n in self.numbers)


class PruneOnValidation(pl.Callback):
    """Reports the watched validation metric to the trial after each epoch; prunes on request.

    optuna-integration's PyTorchLightningPruningCallback is written against the `lightning`
    package and rejects this project's `pytorch_lightning` Trainer, hence this equivalent.
    Steps are epochs counted from 1, the MLflow steps of the same curves.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.epoch = 1  # the epoch under way, 1-based
        self.run_id: str | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Link the trial to its MLflow child now, so that even a killed trial can be found.
        version = trainer.logger.version if trainer.logger is not None else None
        if isinstance(version, str):
            self.run_id = version
            self.trial.set_user_attr("mlflow_run_id", version)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        step = trainer.current_epoch + 1
        self.trial.report(float(value), step)
        # Never after the last epoch: pruning saves nothing then, and would throw away a
        # complete result that tells the sampler more than a pruned one.
        if step < (trainer.max_epochs or step + 1) and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {step}: {self.monitor}="
                                     f"{float(value):.4g}")


@dataclass(frozen=True)
class WorkerJob:
    config: StudyRunConfig
    parent_run_id: str
    index: int
    seed: int


class Objective:
    """One trial: sample, train (an MLflow child run), return the metric at the last epoch.

    Divergence (src.model.NonFiniteLoss) ends the trial PRUNED with the reason, NaN reported
    at the epoch it happened: samplers learn nothing from FAIL trials (TPE drops them), and
    would keep proposing the α that diverged; a pruned trial with a NaN is ranked worst.
    """

    def __init__(self, job: WorkerJob, client: MlflowClient, quiet: _QuietTrials,
                 turnstile: Turnstile) -> None:
        self.job = job
        self.client = client
        self.quiet = quiet
        self.turnstile = turnstile

    def __call__(self, trial: optuna.Trial) -> float:
        from src.model import NonFiniteLoss
        from src.run import train

        self.turnstile.release()  # this trial is RUNNING now: others may count it and go on
        s = self.job.config.study
        if self._study_full(trial):
            self.quiet.numbers.add(trial.number)
            trial.set_user_attr("reason", "surplus: the study was full when it started")
            print(f"trial {trial.number} not run: the study already holds {s.n_trials} trials",
                  flush=True)
            raise SurplusTrial(f"the study already holds {s.n_trials} trials")
        point = suggest(trial, s.space)
        for name in ("beta1", "beta2"):
            trial.set_user_attr(name, point[name])
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("mlflow_parent_run_id", self.job.parent_run_id)
        base = self.job.config.run_config()
        optimizer = replace(base.optimizer, lr=point["lr"], betas=[point["beta1"], point["beta2"]],
                            **({"eps": point["eps"]} if "eps" in point else {}))
        monitor = PruneOnValidation(trial, s.metric)
        started = time.perf_counter()
        tags = {"optuna.study": s.name, "optuna.trial": str(trial.number),
                "optuna.state": TrialState.RUNNING.name}
        try:
            outcome = train(replace(base, optimizer=optimizer), client=self.client,
                            parent_run_id=self.job.parent_run_id,
                            run_name=f"trial {trial.number}", tags=tags, callbacks=[monitor],
                            stops=(optuna.TrialPruned,))
        except optuna.TrialPruned as pruned:
            self._record(trial, monitor.run_id, TrialState.PRUNED, str(pruned), point, started)
            raise
        except NonFiniteLoss as err:
            trial.report(math.nan, monitor.epoch)
            trial.set_user_attr("diverged", str(err))
            reason = f"diverged: {err}"
            self._record(trial, monitor.run_id, TrialState.PRUNED, reason, point, started)
            raise optuna.TrialPruned(reason) from err
        except (KeyboardInterrupt, Interrupted, SystemExit) as stop:
            # Optuna marks a trial FAIL on Exception or KeyboardInterrupt only; anything else
            # would leave it RUNNING until its heartbeat runs out.
            self.quiet.numbers.add(trial.number)
            self._record(trial, monitor.run_id, TrialState.FAIL,
                         f"interrupted: {str(stop) or type(stop).__name__}", point, started)
            raise KeyboardInterrupt(str(stop)) from stop
        except Exception as err:
            self._record(trial, monitor.run_id, TrialState.FAIL, f"{type(err).__name__}: {err}",
                         point, started)
            raise
        value = outcome.final[s.metric]
        self._record(trial, outcome.run_id, TrialState.COMPLETE, f"{s.metric}={value:.4f}",
                     point, started)
        return value

    def _study_full(self, trial: optuna.Trial) -> bool:
        """Whether the trials that started before this one already make up the study."""
        taken = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(t.number < trial.number for t in taken) >= self.job.config.study.n_trials

    def _record(self, trial: optuna.Trial, run_id: str | None, state: TrialState, reason: str,
                point: dict[str, float], started: float) -> None:
        if state != TrialState.COMPLETE:
            trial.set_user_attr("reason", reason[:2000])
        if run_id is not None:
            set_tags(self.client, run_id, {"optuna.state": state.name,
                                           "optuna.reason": reason[:2000]})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in point.items())
        print(f"trial {trial.number} {state.name} {reason} ({shown}; "
              f"{time.perf_counter() - started:.1f} s)", flush=True)


# --- workers ---------------------------------------------------------------------------------

class Turnstile:
    """Lets one worker of this machine at a time from "is there room?" to its next trial.

    Optuna creates the next trial (study.ask) between the callback that checks for room and
    the objective; two workers finishing together would both see room for the last trial
    and both start one. The lock is taken before the check and released by the objective,
    once the new trial is RUNNING and counted. (Workers on other machines are not covered:
    the objective's own check ends such a surplus trial as FAIL.) A lock file, so that a
    killed holder releases it with its death.
    """

    def __init__(self, storage: str, study_name: str) -> None:
        db = sqlite_path(storage)
        key = hashlib.sha256(f"{storage}\0{study_name}".encode()).hexdigest()[:16]
        # Beside an SQLite file (not the storage's own lock: flock would block its holder).
        self.path = (db.with_name(f"{db.name}.{study_name}.turn") if db is not None else
                     Path(tempfile.gettempdir()) / f"optuna-study-{key}.turn")
        self._held: Any = None

    def acquire(self) -> None:
        if self._held is None:
            self._held = open(self.path, "a")  # noqa: SIM115 (held across calls on purpose)
            fcntl.flock(self._held, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held.close()
            self._held = None


def work(job: WorkerJob) -> None:
    """One worker: pull trials from the shared storage until the study is full."""
    s = job.config.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = _QuietTrials()
    optimize_log = logging.getLogger("optuna.study._optimize")  # where failures are logged
    optimize_log.addFilter(quiet)
    storage = open_storage(s)
    study = optuna.load_study(study_name=s.name, storage=storage,
                              sampler=make_sampler(s, job.seed),
                              pruner=make_pruner(s, job.config.trainer.max_epochs))
    client = open_store(resolve_uri(job.config.tracking.uri))
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
            study.optimize(Objective(job, client, quiet, turnstile), callbacks=[stop_when_full],
                           catch=(SurplusTrial,), gc_after_trial=False)
    finally:
        turnstile.release()
        optimize_log.removeFilter(quiet)


def _worker_process(job: WorkerJob) -> None:
    """A worker process's body: exit codes instead of tracebacks for interrupts, user errors."""
    import torch

    torch.set_num_threads(job.config.trainer.num_threads)  # parallelism is across processes
    try:
        with stop_signals():
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
    context = forkserver(_PRELOAD)
    processes = [context.Process(target=_worker_process, args=(job,),
                                 name=f"study-worker-{job.index}") for job in jobs]
    with _stopped_on_exit(processes):
        for p in processes:
            p.start()
        for p in processes:
            p.join()
    return [p.exitcode if p.exitcode is not None else -1 for p in processes]


def worker_seeds(seed: int, trials_so_far: int, workers: int) -> list[int]:
    """Distinct sampler seeds per worker and per invocation, all derived from `seed`.

    The same seed in every worker would make them propose the same random start-up points,
    and the same seed on a resume would repeat the first invocation's.
    """
    states = [np.random.SeedSequence([seed, trials_so_far, i]).generate_state(1)[0]
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


# --- report and export -----------------------------------------------------------------------

@dataclass(frozen=True)
class StudyOutcome:
    name: str
    storage: str  # masked
    parent_run_id: str
    states: dict[str, int]  # COMPLETE, PRUNED, FAIL, ... over the whole study
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, float]  # natural units: lr, beta1, beta2 (eps)
    importances: dict[str, float]  # Optuna parameter → importance, most important first
    exported: Path | None
    seconds: float
    worker_exit_codes: list[int]


def _figures(study: optuna.Study, out: Path) -> list[str]:
    """The parent run's plots as PNG; a plot that the trials so far cannot support is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    betas = ["1-beta1", "1-beta2"]
    wanted = {
        "optimization_history.png": lambda: plots.plot_optimization_history(study),
        "param_importances.png": lambda: plots.plot_param_importances(study),
        "contour_beta1_beta2.png": lambda: plots.plot_contour(study, params=betas),
        "slice.png": lambda: plots.plot_slice(study),
    }
    skipped = []
    for name, draw in wanted.items():
        try:
            # Optuna warns (and logs) about thin data, e.g. a parameter with one value so far.
            with warnings.catch_warnings(), _optuna_verbosity(optuna.logging.ERROR):
                warnings.simplefilter("ignore")
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            skipped.append(f"{name} ({err})")
            continue
        figure = np.asarray(axes).flat[0].figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), 6)
        figure.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(figure)
    return skipped


@contextmanager
def _optuna_verbosity(level: int) -> Iterator[None]:
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _importances(study: optuna.Study) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # too few complete trials to tell
    return {k: float(v) for k, v in found.items()}


def report(study: optuna.Study, client: MlflowClient, parent_run_id: str,
           config: StudyRunConfig) -> tuple[FrozenTrial | None, dict[str, float]]:
    """Best value and params, counts, plots, importances and the trial table → parent run."""
    s = config.study
    tally = counts(study)
    metrics = {f"trials/{state.name.lower()}": float(n) for state, n in tally.items() if n}
    try:
        best: FrozenTrial | None = study.best_trial
    except ValueError:  # no complete trial yet
        best = None
    importances = _importances(study)
    if best is not None and best.value is not None:
        metrics[f"best/{s.metric}"] = best.value
        natural = from_optuna_params(best.params)
        log_params(client, parent_run_id, {"best.trial": str(best.number),
                                           **{f"best.{k}": repr(v) for k, v in natural.items()}})
    metrics.update({f"importance/{k}": v for k, v in importances.items()})
    log_metric_batch(client, parent_run_id, metrics, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        skipped = _figures(study, out) if best is not None else ["all plots (no complete trial)"]
        (out / "importances.json").write_text(json.dumps(importances, indent=2) + "\n")
        study.trials_dataframe().to_csv(out / "trials.csv", index=False)
        client.log_artifacts(parent_run_id, tmp, "study")
    for item in skipped:
        print(f"note: plot skipped: {item}", flush=True)
    return best, importances


def export_dir(study: StudyConfig) -> Path:
    if study.export_dir is None:
        return DEFAULT_EXPORT_DIR
    path = Path(study.export_dir).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def export_best(best: FrozenTrial, config: StudyRunConfig) -> Path:
    """Write the best trial as a Hydra experiment (`+experiment=best_<name>`), atomically."""
    s = config.study
    natural = from_optuna_params(best.params)
    optimizer = asdict(config.optimizer) | {"lr": natural["lr"],
                                            "betas": [natural["beta1"], natural["beta2"]]}
    if "eps" in natural:
        optimizer["eps"] = natural["eps"]
    data = {k: getattr(config.data, k) for k in ("name", "val_size", "batch_size", "limit_train")}
    settings = {"optimizer": optimizer, "model": asdict(config.model), "data": data,
                "trainer": {"max_epochs": config.trainer.max_epochs,
                            "deterministic": config.trainer.deterministic},
                "seed": config.seed}
    header = (f"# @package _global_\n"
              f"# Best trial of Optuna study '{s.name}': trial {best.number}, "
              f"{s.metric}={best.value:.6g} (written by pipelines.study).\n"
              f"#   python -m src.train +experiment=best_{s.name} data.root=...\n")
    target = export_dir(s) / f"best_{s.name}.yaml"
    text = header + OmegaConf.to_yaml(OmegaConf.create(settings))
    atomic_write(target, lambda fh: fh.write(text))
    return target


def replay_command(path: Path, config: StudyRunConfig) -> str:
    name = path.stem
    where = "" if path.parent == DEFAULT_EXPORT_DIR else (
        f" hydra.searchpath=[file://{path.parent.parent}]" if path.parent.name == "experiment"
        else f"  # copy {path} into conf/experiment/ first")
    return f"python -m src.train +experiment={name} data.root={config.data.root}{where}"


# --- the invocation --------------------------------------------------------------------------

def run_study(config: StudyRunConfig) -> StudyOutcome:
    """Create or resume the study, run it to `study.n_trials` with the workers, report."""
    from src.run import make_datamodule

    started = time.perf_counter()
    s = config.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = mask_secrets(storage_url(s))
    print(f"study {s.name!r}: storage {shown}", flush=True)
    # Everything that can be refused is checked before the study is written to: the data,
    # the storage (a new one gets Optuna's empty tables), the MLflow store, the settings.
    if s.workers != 1 and (os.cpu_count() or 1) > 1:
        forkserver(_PRELOAD)  # imports in the background while data and storages are opened
    make_datamodule(config)
    storage = open_storage(s)
    client = open_store(resolve_uri(config.tracking.uri))
    study, created = open_study(config, storage)
    fail_stale_trials(study)
    tally = counts(study)
    finished = sum(tally[state] for state in FINISHED)
    to_run = s.n_trials - finished - tally[TrialState.RUNNING]
    n_workers = 0 if finished >= s.n_trials else min(s.workers or os.cpu_count() or 1,
                                                     max(to_run, 1))
    seeds = worker_seeds(s.sampler.seed, len(study.trials), n_workers)
    parent = start_run(client, config.tracking.experiment, config.tracking.run_name or s.name,
                       tags={"pipeline": "study", "optuna.study": s.name,
                             "optuna.storage": shown})
    print(f"study {s.name!r} {'created' if created else 'resumed'}: {finished} of {s.n_trials} "
          f"trials finished, {tally[TrialState.RUNNING]} running elsewhere; "
          f"{n_workers} worker(s), sampler {s.sampler.name}, pruner {s.pruner.name}; "
          f"MLflow parent run {parent}", flush=True)
    with stop_signals(), run_lifecycle(client, parent):
        resolved: Any = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
        log_params(client, parent, flatten(resolved))
        client.log_text(parent, OmegaConf.to_yaml(OmegaConf.structured(config)), "config.yaml")
        jobs = [WorkerJob(config, parent, i, seed) for i, seed in enumerate(seeds)]
        try:
            exit_codes = run_workers(jobs) if jobs else []
        except BaseException:
            # A worker that had to be killed could not close its trial or its MLflow run.
            settle(study, client, config.tracking.experiment, parent, status="KILLED")
            raise
        settle(study, client, config.tracking.experiment, parent)
        best, importances = report(study, client, parent, config)
        exported = export_best(best, config) if best is not None else None
        if exported is not None:
            client.log_artifact(parent, str(exported), "study")
        seconds = time.perf_counter() - started
        log_metric_batch(client, parent, {"wall_seconds": seconds}, step=0)
    tally = counts(study)
    outcome = StudyOutcome(
        name=s.name, storage=shown, parent_run_id=parent,
        states={state.name: n for state, n in tally.items() if n},
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=from_optuna_params(best.params) if best else {},
        importances=importances, exported=exported, seconds=seconds,
        worker_exit_codes=exit_codes)
    _summarize(outcome, config)
    return outcome


def _summarize(outcome: StudyOutcome, config: StudyRunConfig) -> None:
    s = config.study
    states = ", ".join(f"{n} {state.lower()}" for state, n in outcome.states.items())
    print(f"study {s.name!r}: {states} ({outcome.seconds:.0f} s)", flush=True)
    if outcome.best_value is not None:
        params = ", ".join(f"{k}={v:.6g}" for k, v in outcome.best_params.items())
        print(f"best: trial {outcome.best_trial}, {s.metric}={outcome.best_value:.4f}, {params}",
              flush=True)
    if outcome.importances:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in outcome.importances.items()),
              flush=True)
    if outcome.exported is not None:
        print(f"replay: {replay_command(outcome.exported, config)}", flush=True)
    bad = [code for code in outcome.worker_exit_codes if code != 0]
    if bad:
        print(f"warning: {len(bad)} worker(s) exited abnormally (exit codes {bad})", flush=True)
    finished = sum(outcome.states.get(state.name, 0) for state in FINISHED)
    if finished < s.n_trials:
        print(f"warning: the study holds {finished} of {s.n_trials} finished trials; run the "
              "same command again to resume it", flush=True)
        raise SystemExit(1)


@hydra.main(version_base="1.3", config_path="../conf", config_name="study_config")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        return run_study(to_study_config(cfg)).best_value


__all__ = ["DEFAULT_STORAGE", "Objective", "PruneOnValidation", "StudyOutcome", "WorkerJob",
           "export_best", "has_room", "main", "open_storage", "open_study", "run_study",
           "storage_url", "work", "worker_seeds"]


if __name__ == "__main__":
    hydra_entry(main)
