"""Training throughput: the project's Lightning run against a hand-written PyTorch loop.

Both train the same model on the same in-memory tensors with batch 32 and a shuffled order;
the plain loop uses torch.optim.Adam (its default implementation), the project its own Adam.
Validation is off in both, so only training steps are timed.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.config import Config
from src.data import MNISTDataModule
from src.model import build_mlp
from src.run import make_datamodule, make_model, make_trainer


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
    trainer.fit(make_model(config, datamodule), datamodule=datamodule)
    return trainer.global_step / clock.seconds


def measure(config: Config, quick: bool = False, threads: tuple[int, ...] = (1, 2),
            repeats: int = 3) -> list[dict[str, object]]:
    config.trainer.max_epochs = 1
    datamodule = make_datamodule(config)
    steps = datamodule.split_sizes()["train"] // config.data.batch_size
    rows: list[dict[str, object]] = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        plain = sorted(plain_loop_steps_per_s(datamodule, config, steps) for _ in range(repeats))
        project = sorted(project_steps_per_s(datamodule, config) for _ in range(repeats))
        rows.append({"threads": n_threads, "plain_steps_per_s": plain[len(plain) // 2],
                     "project_steps_per_s": project[len(project) // 2],
                     "ratio": project[len(project) // 2] / plain[len(plain) // 2]})
    return rows
