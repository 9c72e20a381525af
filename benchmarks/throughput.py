"""Training throughput: the project's run against plain PyTorch loops and the compute floor.

Every contender trains the same model (the project's `build_mlp`, seeded alike) for one epoch
of batch-32 steps, in this process, with validation off, so only training steps are timed:

* plain loop: torch.optim.Adam's default implementation on a float copy of the set, in a
  random order of its own (the first anchor, kept for continuity);
* fused plain loop, the strongest loop a user would write: torch.optim.Adam(fused=True),
  subnormals flushed, `zero_grad(set_to_none=True)`, uint8 pixels scaled per batch as the
  project scales them, and the project's minibatches in the project's order;
* compute floor: the same step's kernels without autograd, modules or optimizer classes
  (benchmarks.compute_floor), on the same batches, cut and scaled beforehand;
* the project: `make_trainer` + `Classifier` with its own Adam, as `src.run.train` runs it.

The contenders run interleaved, repeat after repeat, so a change in the machine's load hits
all of them alike; each ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from benchmarks.compute_floor import BareStep
from benchmarks.compute_floor import steps_per_s as floor_steps_per_s
from src.config import Config
from src.data import MNISTDataModule, unit_scale
from src.model import build_mlp
from src.run import make_datamodule, make_model, make_trainer, subnormals_flushed


def _net(config: Config, in_features: int) -> torch.nn.Sequential:
    torch.manual_seed(config.seed)  # what pl.seed_everything does to torch before make_model
    m = config.model
    return build_mlp(in_features, m.hidden, m.num_classes, m.dropout, m.init)


def plain_loop_steps_per_s(datamodule: MNISTDataModule, config: Config, steps: int) -> float:
    torch.manual_seed(config.seed)
    x, y = datamodule.tensors("train")
    m, o = config.model, config.optimizer
    net = build_mlp(x.shape[1], m.hidden, m.num_classes, m.dropout, m.init)
    optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, betas=(o.betas[0], o.betas[1]),
                                 eps=o.eps)
    batch = config.data.batch_size
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(steps):
        lo = (i * batch) % (len(x) - batch)
        idx = perm[lo:lo + batch]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def project_order(datamodule: MNISTDataModule) -> Iterator[torch.Tensor]:
    """The indices of the project's first-epoch training minibatches, in its order."""
    loader = datamodule.train_dataloader()
    perm = torch.randperm(len(loader.x), generator=torch.Generator().manual_seed(loader.seed))
    return iter(perm.split(datamodule.batch_size))


def fused_loop_steps_per_s(datamodule: MNISTDataModule, config: Config) -> float:
    """The strongest plain loop over the project's first epoch (see the module docstring)."""
    pixels, labels = datamodule.pixels("train")
    net = _net(config, pixels.shape[1])
    o = config.optimizer
    optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, betas=(o.betas[0], o.betas[1]),
                                 eps=o.eps, fused=True)
    batches = list(project_order(datamodule))
    with subnormals_flushed(True):
        start = time.perf_counter()
        for idx in batches:
            loss = F.cross_entropy(net(unit_scale(pixels[idx])), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    return len(batches) / seconds


def floor_steps(datamodule: MNISTDataModule, config: Config) -> float:
    """The compute floor over the same batches, cut and scaled before the clock starts."""
    pixels, labels = datamodule.pixels("train")
    o = config.optimizer
    step = BareStep(_net(config, pixels.shape[1]), lr=o.lr, betas=(o.betas[0], o.betas[1]),
                    eps=o.eps, weight_decay=o.weight_decay)
    batches = [(unit_scale(pixels[idx]), labels[idx]) for idx in project_order(datamodule)]
    with subnormals_flushed(True), torch.no_grad():
        return floor_steps_per_s(step, batches)


class _TrainClock(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def project_steps_per_s(datamodule: MNISTDataModule, config: Config) -> float:
    pl.seed_everything(config.seed, verbose=False)
    clock = _TrainClock()
    trainer = make_trainer(config, logger=False, callbacks=[clock], max_epochs=1,
                           limit_val_batches=0)
    with subnormals_flushed(config.trainer.flush_denormal):
        trainer.fit(make_model(config, datamodule), datamodule=datamodule)
    return trainer.global_step / clock.seconds


def _spread(values: list[float]) -> float:
    """(max - min) / median: how much the repeats disagree."""
    return (max(values) - min(values)) / statistics.median(values)


def measure(config: Config, quick: bool = False, threads: tuple[int, ...] = (1, 2),
            repeats: int = 5) -> list[dict[str, object]]:
    config.trainer.max_epochs = 1
    datamodule = make_datamodule(config)
    steps = datamodule.split_sizes()["train"] // config.data.batch_size
    contenders: dict[str, Callable[[], float]] = {
        "plain": lambda: plain_loop_steps_per_s(datamodule, config, steps),
        "fused": lambda: fused_loop_steps_per_s(datamodule, config),
        "floor": lambda: floor_steps(datamodule, config),
        "project": lambda: project_steps_per_s(datamodule, config),
    }
    rows: list[dict[str, object]] = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, run in contenders.items():
                samples[name].append(run())
        row: dict[str, object] = {"threads": n_threads, "repeats": repeats}
        for name, values in samples.items():
            row[f"{name}_steps_per_s"] = statistics.median(values)
        for anchor in ("plain", "fused", "floor"):
            ratios = [p / a for p, a in zip(samples["project"], samples[anchor], strict=True)]
            row[f"vs_{anchor}"] = statistics.median(ratios)
            row[f"vs_{anchor}_spread"] = _spread(ratios)
        rows.append(row)
    return rows
