"""Tests of src.model: the Classifier's logged metrics against hand computations, on tiny data."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.config import OptimizerConfig
from src.data import InMemoryBatches
from src.model import Classifier, build_mlp

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
