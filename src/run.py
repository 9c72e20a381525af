"""One training run: config → data → model with src.optim.Adam → Lightning → one MLflow run.

Pipelines (comparisons, studies) call `train` once per run, in their own processes.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from src.config import Config, require
from src.data import MNISTDataModule, unit_scale
from src.internals import AdamInternals
from src.interrupts import Interrupted, acknowledge, stop_reason
from src.liveness import announce, close_stale_runs
from src.model import Classifier, build_mlp
from src.tracking import (
    EpochLogger,
    log_config,
    log_metric_batch,
    open_store,
    resolve_uri,
    run_lifecycle,
    set_tags,
    start_run,
)

# Lightning's start-up banners (accelerators, a product tip) are info-level noise in every
# run, and ten times over in a comparison; warnings stay visible.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
# "[rank: 0] Received SIGTERM: 15": a stopped comparison's workers get SIGTERM from the parent
# after the user's Ctrl-C; the one `error: interrupted` line already says what happened.
logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector").setLevel(
    logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    history: dict[str, list[float]]  # per-epoch series, e.g. "train/loss", "val/acc"
    final: dict[str, float]  # the last epoch's training loss and validation metrics, the test
    seconds: float
    startup_seconds: float = 0.0  # from `train` being called to the first epoch starting


class EpochClock(pl.Callback):
    """Marks when training proper starts, to split a run's wall time into start-up and training."""

    def __init__(self) -> None:
        self.first_epoch_at: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.first_epoch_at is None:
            self.first_epoch_at = time.perf_counter()


@contextmanager
def subnormals_flushed(enabled: bool) -> Iterator[None]:
    """Subnormal floats read and written as zero on this thread, then torch's default again."""
    if not enabled or not torch.set_flush_denormal(True):  # False: this CPU cannot
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def check_accelerator(name: str) -> None:
    """Refuse an accelerator this machine lacks, naming the ones it has (ConfigError).

    Lightning finds out only while building the Trainer, after the run's MLflow run exists;
    this asks its registry the same question first. The name itself is checked by the config.
    """
    from pytorch_lightning.accelerators import AcceleratorRegistry

    available = sorted(n for n in AcceleratorRegistry.available_accelerators()
                       if AcceleratorRegistry[n]["accelerator"].is_available())
    wanted = {"auto": available, "gpu": ["cuda", "mps"]}.get(name, [name])
    require(any(w in available for w in wanted),
            f"trainer.accelerator={name}: this machine has no {' or '.join(wanted)} device "
            f"(available: {', '.join(available)})")


def make_datamodule(config: Config) -> MNISTDataModule:
    datamodule = MNISTDataModule.from_config(config.data, seed=config.seed,
                                             steps_per_call=config.trainer.steps_per_call)
    datamodule.setup()  # fail on bad data before any MLflow run exists
    return datamodule


def make_model(config: Config, datamodule: MNISTDataModule) -> Classifier:
    m = config.model
    net = build_mlp(datamodule.num_features, m.hidden, m.num_classes, m.dropout, m.init)
    return Classifier(net, config.optimizer, m.num_classes, config.data.batch_size)


def internals_callbacks(config: Config) -> list[pl.Callback]:
    """Adam's internals logger when `internals.enabled` (off: nothing attached, nothing paid)."""
    i = config.internals
    if not i.enabled:
        return []
    return [AdamInternals(i.every_n_epochs, i.max_elements, seed=config.seed)]


def make_trainer(config: Config, logger: pl.loggers.Logger | bool,
                 callbacks: Sequence[pl.Callback], **overrides: object) -> pl.Trainer:
    options: dict[str, object] = dict(
        max_epochs=config.trainer.max_epochs,
        accelerator=config.trainer.accelerator,
        devices=1,
        logger=logger,
        # Internals first: its epoch-end work then falls inside any epoch timing of `callbacks`.
        callbacks=[*internals_callbacks(config), *callbacks],
        deterministic=config.trainer.deterministic,
        enable_checkpointing=False,
        enable_progress_bar=config.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # Lightning counts chunks (see steps_per_call) and warns when an epoch has fewer than
        # this; every metric here is per epoch, so the interval only silences that warning.
        log_every_n_steps=1,
    )
    return pl.Trainer(**{**options, **overrides})  # type: ignore[arg-type]


def train(config: Config, *, client: MlflowClient | None = None,
          parent_run_id: str | None = None, run_name: str | None = None,
          tags: Mapping[str, str] | None = None,
          callbacks: Sequence[pl.Callback] = (),
          stops: tuple[type[BaseException], ...] = (),
          started: float | None = None) -> RunOutcome:
    """Train and test once, recorded as one MLflow run (nested under `parent_run_id` if given).

    `callbacks` join the Trainer (e.g. a pruner); exceptions in `stops` end the run FINISHED
    with a `stopped` tag instead of FAILED, and propagate. `started` (a perf_counter value)
    dates the start-up from an earlier point, e.g. before the entry point's imports.
    """
    started = started if started is not None else time.perf_counter()
    check_accelerator(config.trainer.accelerator)
    torch.set_num_threads(config.trainer.num_threads)
    with ThreadPoolExecutor(1) as pool:
        # Reading, hashing and gunzipping the data release the GIL, so they overlap with
        # opening the store (mostly importing MLflow's SQL layer) and shorten every start-up.
        loading = pool.submit(make_datamodule, config)
        client = client or open_store(resolve_uri(config.tracking.uri))
        datamodule = loading.result()  # bad data fails here, before any MLflow run exists
    if parent_run_id is None:  # an invocation of its own: close what killed ones left open
        announce(close_stale_runs(client))
    run_id = start_run(client, config.tracking.experiment, run_name or config.tracking.run_name,
                       parent_run_id=parent_run_id, tags=tags)
    with run_lifecycle(client, run_id, stops), subnormals_flushed(config.trainer.flush_denormal):
        log_config(client, run_id, config)
        # Which bytes were trained on: runs on different data must look different.
        set_tags(client, run_id, {f"data.md5.{Path(p).name}": md5
                                  for p, md5 in datamodule.arrays.md5.items()})

        pl.seed_everything(config.seed, workers=False, verbose=False)
        model = make_model(config, datamodule)
        logger = EpochLogger(client, run_id)
        clock = EpochClock()
        trainer = make_trainer(config, logger, [clock, *callbacks])
        try:
            trainer.fit(model, datamodule=datamodule)
            trainer.test(model, datamodule=datamodule, verbose=False)
        except SystemExit:
            # Lightning answers Ctrl-C and SIGTERM by cleaning up and exiting; give the
            # interrupt back its name so every layer treats it as one.
            if trainer.received_sigterm:
                acknowledge()
                raise Interrupted(stop_reason(signal.SIGTERM)) from None
            if trainer.interrupted:
                acknowledge()
                raise KeyboardInterrupt from None
            raise
        finished = time.perf_counter()
        first_epoch = clock.first_epoch_at or finished
        timing = {"time/startup_s": first_epoch - started, "time/train_s": finished - first_epoch}
        log_metric_batch(client, run_id, timing, step=0)
        if config.tracking.log_model:
            log_model(client, run_id, model, datamodule, config.trainer.max_epochs)
    final = {k: v[-1] for k, v in logger.history.items()
             if k.startswith(("train/", "val/", "test/"))}
    return RunOutcome(run_id=run_id, history={k: list(v) for k, v in logger.history.items()
                                              if not k.startswith("test/")},
                      final=final, seconds=finished - started,
                      startup_seconds=first_epoch - started)


def log_model(client: MlflowClient, run_id: str, model: Classifier,
              datamodule: MNISTDataModule, last_epoch: int) -> None:
    """The trained network as the run's MLflow model `model` (see src.logged_model)."""
    from src.logged_model import EXAMPLE_ROWS, log_network  # lazy: mlflow.pytorch is heavy

    pixels, _ = datamodule.pixels("test")
    log_network(client, run_id, model.net, unit_scale(pixels[:EXAMPLE_ROWS]), step=last_epoch)


def describe(config: Config) -> str:
    o = config.optimizer
    return (f"lr={o.lr:g} betas=({o.betas[0]:g}, {o.betas[1]:g}) eps={o.eps:g} "
            f"eps_mode={o.eps_mode} seed={config.seed}")

