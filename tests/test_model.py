"""src.model: the Classifier's training loop (chunks of steps, loss bookkeeping, divergence,
Lightning hooks) and its logged metrics against hand computations, on tiny data."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.config import Config, DataConfig, OptimizerConfig, TrackingConfig, TrainerConfig
from src.data import InMemoryBatches
from src.model import Classifier, NonFiniteLoss, build_mlp
from src.run import make_datamodule, make_trainer

FEATURES, CLASSES = 12, 10


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def classifier(dropout: float, batch_size: int, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = build_mlp(FEATURES, [32], CLASSES, dropout)
    return Classifier(net, OptimizerConfig(lr=0.05), CLASSES, batch_size)


def trainer(**options: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **options)  # type: ignore[arg-type]


def test_train_loss_is_the_epoch_mean_weighted_by_batch_size() -> None:
    batch_size, steps_per_call = 8, 2
    x, y = synthetic(5 * batch_size + 3)  # the last minibatch has 3 examples
    model = classifier(dropout=0.0, batch_size=batch_size)
    replay = copy.deepcopy(model)
    # As MNISTDataModule serves them: chunks of steps_per_call minibatches, seeded shuffle.
    chunks = InMemoryBatches(x, y, batch_size * steps_per_call, shuffle=True, seed=3)
    fit = trainer(max_epochs=1, limit_val_batches=0)
    fit.fit(model, train_dataloaders=chunks)
    logged = fit.callback_metrics["train/loss"].item()

    # By hand: the same minibatches in the same order, each one's loss taken before its step.
    optimizer = replay.configure_optimizers()
    losses, sizes = [], []
    for xb, yb in InMemoryBatches(x, y, batch_size, shuffle=True, seed=3):
        loss = F.cross_entropy(replay.net(xb), yb)
        losses.append(loss.item())
        sizes.append(len(yb))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sizes == [8, 8, 8, 8, 8, 3]
    weighted = sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
    assert logged == pytest.approx(weighted, rel=1e-5)
    # The test can tell the plausible mistakes apart: an unweighted mean of the batch means,
    # or a sum of batch means divided by the number of examples.
    assert weighted != pytest.approx(sum(losses) / len(losses), rel=1e-3)
    assert weighted != pytest.approx(sum(losses) / sum(sizes), rel=1e-3)


def test_evaluation_metrics_are_those_of_the_net_with_dropout_off() -> None:
    model = classifier(dropout=0.5, batch_size=8)
    x, y = synthetic(50, seed=1)
    batches = InMemoryBatches(x, y, 20)  # 20, 20 and 10 examples
    run = trainer()
    val = run.validate(model, dataloaders=batches, verbose=False)[0]
    test = run.test(model, dataloaders=batches, verbose=False)[0]

    model.net.eval()
    with torch.no_grad():
        logits = model.net(x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    for stage, metrics in (("val", val), ("test", test)):
        assert metrics[f"{stage}/loss"] == pytest.approx(loss, rel=1e-6)
        assert metrics[f"{stage}/acc"] == pytest.approx(acc, abs=1e-6)
    # With dropout on, the loss is another: the comparison above can tell the two apart.
    model.net.train()
    with torch.no_grad():
        assert F.cross_entropy(model.net(x), y).item() != pytest.approx(loss, rel=1e-3)


STEPS_PER_EPOCH = 16  # 500 training images of the tiny set (600 - val 100), batch 32


def tiny_config(root: Path, steps_per_call: int = 5, max_epochs: int = 2) -> Config:
    # Chunks of 5: an epoch's 16 steps come as 5, 5, 5, 1, the last minibatch partial (20).
    return Config(data=DataConfig(root=str(root), val_size=100, download=False),
                  trainer=TrainerConfig(max_epochs=max_epochs, steps_per_call=steps_per_call),
                  tracking=TrackingConfig(uri="sqlite:///:memory:"))


class NaNAt(nn.Module):
    """`net`, except that the training forward pass number `at` (1-based) returns NaNs."""

    def __init__(self, net: nn.Module, at: int) -> None:
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


class StepHooks(pl.Callback):
    """Counts the per-step hooks Lightning's wrappers call; attaching it forces those wrappers."""

    def __init__(self) -> None:
        self.calls = {"on_before_backward": 0, "on_after_backward": 0,
                      "on_before_optimizer_step": 0}

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self.calls["on_before_optimizer_step"] += 1


def fit(config: Config, net: nn.Module | None = None,
        callbacks: list[pl.Callback] | None = None) -> tuple[pl.Trainer, Classifier]:
    datamodule = make_datamodule(config)
    pl.seed_everything(config.seed, verbose=False)
    m = config.model
    net = net or build_mlp(datamodule.num_features, m.hidden, m.num_classes, m.dropout, m.init)
    model = Classifier(net, config.optimizer, m.num_classes, config.data.batch_size)
    trainer = make_trainer(config, logger=False, callbacks=callbacks or [])
    trainer.fit(model, datamodule=datamodule)
    return trainer, model


@pytest.mark.parametrize("hooked", [False, True], ids=["direct", "lightning-wrappers"])
@pytest.mark.parametrize(("at", "epoch", "chunk_end"), [(8, 1, 10), (28, 2, 31)])
def test_a_nan_loss_mid_chunk_stops_the_run_naming_the_step(tiny_mnist: Path, hooked: bool,
                                                            at: int, epoch: int,
                                                            chunk_end: int) -> None:
    config = tiny_config(tiny_mnist)
    torch.manual_seed(0)
    net = NaNAt(build_mlp(784, [128], 10, 0.2), at=at)
    with pytest.raises(NonFiniteLoss, match=re.escape(
            f"training loss became nan at epoch {epoch}, step {at}")):
        fit(config, net, [StepHooks()] if hooked else None)
    # Checked once per chunk: the chunk holding step `at` ran to its end, and no further.
    assert net.calls == chunk_end


def test_direct_calls_train_exactly_as_lightnings_wrappers(tiny_mnist: Path) -> None:
    config = tiny_config(tiny_mnist)
    hooks = StepHooks()
    direct_trainer, direct = fit(config)
    wrapped_trainer, wrapped = fit(config, callbacks=[hooks])
    # Without step hooks the step calls autograd and the optimizer itself, and counts steps.
    assert direct._step_calls[1] != direct.manual_backward and direct._step_calls[3] is not None
    assert wrapped._step_calls[1] == wrapped.manual_backward and wrapped._step_calls[3] is None
    steps = 2 * STEPS_PER_EPOCH
    # A callback with step hooks still gets every one of them.
    assert hooks.calls == dict.fromkeys(hooks.calls, steps)
    assert direct_trainer.global_step == wrapped_trainer.global_step == steps
    for a, b in zip(direct.parameters(), wrapped.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (direct_trainer.callback_metrics["train/loss"]
            == wrapped_trainer.callback_metrics["train/loss"])


def test_the_epoch_loss_is_summed_as_a_per_step_float64_sum_would_be() -> None:
    torch.manual_seed(0)
    model = Classifier(build_mlp(4, [3], 2, 0.0), OptimizerConfig(), 2,
                       batch_size=32)
    model.on_train_epoch_start()
    sizes = [32] * 6 + [7]  # the epoch's last chunk, with its partial minibatch
    reference = torch.zeros((), dtype=torch.float64)
    for _ in range(3):
        losses = torch.rand(len(sizes)) * torch.logspace(-6, 1, len(sizes))
        model._account(losses, torch.zeros(sum(sizes), dtype=torch.long), first_step=0)
        for loss, n in zip(losses, sizes, strict=True):
            reference += loss * n  # what a per-step `sum += loss.detach() * len(y)` did
    assert model._loss_sum == float(reference)
    assert model._seen == 3 * sum(sizes)


def test_an_inf_loss_is_named_with_its_step() -> None:
    model = Classifier(build_mlp(4, [3], 2, 0.0), OptimizerConfig(), 2,
                       batch_size=2)
    model.on_train_epoch_start()
    losses = torch.tensor([0.5, 0.25, float("inf"), float("nan")])
    with pytest.raises(NonFiniteLoss, match=r"became inf at epoch 1, step 103$"):
        model._account(losses, torch.zeros(8, dtype=torch.long), first_step=100)
