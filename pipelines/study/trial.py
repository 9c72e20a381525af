"""One trial of the study: sample a point, train it as an MLflow child run, say how it ended.

`Objective` is what each worker's `study.optimize` calls; `PruneOnValidation` reports the
watched metric to the trial after every epoch so that the pruner can stop it. A trial ends
COMPLETE (the metric at the last epoch), PRUNED (by the pruner, or because it diverged) or
FAIL (interrupted, or an error); the reason is on the trial and on its MLflow child.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import optuna
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipelines.study.config import StudyRunConfig, point_overrides, suggest
from pipelines.study.storage import COUNTED_STATES
from src.config import Config
from src.interrupts import Interrupted
from src.tracking import mask_secrets, set_tags

if TYPE_CHECKING:
    from src.run import RunOutcome


class SurplusTrial(Exception):
    """The study was already full when this trial started (two workers asked at once)."""


class QuietTrials(logging.Filter):
    """Drops Optuna's failure warnings for trials whose end is already printed in one line,
    and masks URL passwords in the others (an error's message may hold the storage's URL).

    Surplus and interrupted trials: Optuna would log a traceback for each, in every worker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(message.startswith(f"Trial {n} failed") for n in self.numbers):
            return False
        record.msg, record.args = mask_secrets(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


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


class Objective:
    """One trial: sample, train (an MLflow child run), return the metric at the last epoch.

    Divergence (src.model.NonFiniteLoss) ends the trial PRUNED with the reason, NaN reported
    at the epoch it happened: samplers learn nothing from FAIL trials (TPE drops them), and
    would keep proposing the α that diverged; a pruned trial with a NaN is ranked worst.
    How each other way out of training ends a trial is `_ending`'s table.
    """

    def __init__(self, config: StudyRunConfig, parent_run_id: str, client: MlflowClient,
                 quiet: QuietTrials, on_running: Callable[[], None]) -> None:
        self.config = config
        self.parent_run_id = parent_run_id
        self.client = client
        self.quiet = quiet
        self.on_running = on_running  # called once the new trial is RUNNING (and counted)

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_running()  # this trial is RUNNING now: others may count it and go on
        self._refuse_if_full(trial)
        point = self._sample(trial)
        config = self._trial_config(point)
        monitor = PruneOnValidation(trial, self.config.study.metric)
        started = time.perf_counter()
        try:
            outcome = self._train(trial, config, monitor)
        except BaseException as err:
            ending = self._ending(trial, monitor, err)
            if ending is None:
                raise
            state, reason, raised = ending
            self._record(trial, monitor.run_id, state, reason, point, started)
            if raised is err:
                raise
            raise raised from err
        metric = self.config.study.metric
        value = outcome.final[metric]
        self._record(trial, outcome.run_id, TrialState.COMPLETE, f"{metric}={value:.4f}",
                     point, started)
        return value

    def _refuse_if_full(self, trial: optuna.Trial) -> None:
        """End a surplus trial at once: the trials that started before it make up the study."""
        n_trials = self.config.study.n_trials
        taken = trial.study.get_trials(deepcopy=False, states=(*COUNTED_STATES,
                                                                TrialState.RUNNING))
        if sum(t.number < trial.number for t in taken) < n_trials:
            return
        self.quiet.numbers.add(trial.number)
        trial.set_user_attr("reason", "surplus: the study was full when it started")
        print(f"trial {trial.number} not run: the study already holds {n_trials} trials",
              flush=True)
        raise SurplusTrial(f"the study already holds {n_trials} trials")

    def _sample(self, trial: optuna.Trial) -> dict[str, float]:
        """The sampler's point (natural units), with β, the worker and the parent on the trial."""
        point = suggest(trial, self.config.study.space)
        for name in ("beta1", "beta2"):
            if name in point:
                trial.set_user_attr(name, point[name])
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("mlflow_parent_run_id", self.parent_run_id)
        return point

    def _trial_config(self, point: dict[str, float]) -> Config:
        """The training config of this trial: the study's run config with the point's α, β (ε)."""
        base = self.config.run_config()
        optimizer = replace(base.optimizer, **point_overrides(point, base.optimizer))
        return replace(base, optimizer=optimizer)

    def _train(self, trial: optuna.Trial, config: Config,
               monitor: PruneOnValidation) -> RunOutcome:
        from src.run import train

        s = self.config.study
        tags = {"optuna.study": s.name, "optuna.trial": str(trial.number),
                "optuna.state": TrialState.RUNNING.name}
        return train(config, client=self.client, parent_run_id=self.parent_run_id,
                     run_name=f"trial {trial.number}", tags=tags, callbacks=[monitor],
                     stops=(optuna.TrialPruned,))

    def _ending(self, trial: optuna.Trial, monitor: PruneOnValidation, err: BaseException
                ) -> tuple[TrialState, str, BaseException] | None:
        """How a trial whose training raised `err` ends: (state, reason, what Optuna is given).

            pruned                  PRUNED with the pruner's reason; `err` goes on
            diverged                PRUNED with NaN at that epoch; a TrialPruned instead
            interrupted (or exit)   FAIL; a KeyboardInterrupt instead (Optuna marks a trial
                                    FAIL on Exception or KeyboardInterrupt only: anything
                                    else would leave it RUNNING until its heartbeat runs out)
            any other error         FAIL with the error; `err` goes on

        None for anything else (not a trial's ending): it goes on, and nothing is recorded.
        """
        from src.model import NonFiniteLoss

        if isinstance(err, optuna.TrialPruned):
            return TrialState.PRUNED, str(err), err
        if isinstance(err, NonFiniteLoss):
            trial.report(math.nan, monitor.epoch)
            trial.set_user_attr("diverged", str(err))
            reason = f"diverged: {err}"
            return TrialState.PRUNED, reason, optuna.TrialPruned(reason)
        if isinstance(err, KeyboardInterrupt | Interrupted | SystemExit):
            self.quiet.numbers.add(trial.number)  # its one line is printed by _record
            return (TrialState.FAIL, f"interrupted: {str(err) or type(err).__name__}",
                    KeyboardInterrupt(str(err)))
        if isinstance(err, Exception):
            return TrialState.FAIL, f"{type(err).__name__}: {err}", err
        return None

    def _record(self, trial: optuna.Trial, run_id: str | None, state: TrialState, reason: str,
                point: dict[str, float], started: float) -> None:
        """How the trial ended, on the trial, on its MLflow child and as one printed line
        (URL passwords masked in all three)."""
        reason = mask_secrets(reason)
        if state != TrialState.COMPLETE:
            trial.set_user_attr("reason", reason[:2000])
        if run_id is not None:
            set_tags(self.client, run_id, {"optuna.state": state.name,
                                           "optuna.reason": reason[:2000]})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in point.items())
        print(f"trial {trial.number} {state.name} {reason} ({shown}; "
              f"{time.perf_counter() - started:.1f} s)", flush=True)


__all__ = ["Objective", "PruneOnValidation", "QuietTrials", "SurplusTrial"]
