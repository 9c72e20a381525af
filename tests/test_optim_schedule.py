"""src.optim.schedule: `optimizer.schedule=inv_sqrt` steps with α/√t at step t, any optimizer."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from src.config import OptimizerConfig, SGDOptions
from src.data import InMemoryBatches
from src.model import Classifier, build_mlp
from src.optim import build


def _param() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))


def test_inv_sqrt_gives_alpha_over_sqrt_t_at_known_steps() -> None:
    p = _param()
    sgd = build([p], OptimizerConfig(name="sgd", lr=0.6, schedule="inv_sqrt"))
    used = {}
    for t in range(1, 101):
        used[t] = sgd.param_groups[0]["lr"]  # what step t will use
        before = p.detach().clone()
        p.grad = torch.ones_like(p)
        sgd.step()
        # plain SGD moves by exactly α_t · g: the step really used α_t
        assert torch.allclose(before - p.detach(), torch.full_like(before, used[t]),
                              rtol=1e-12, atol=0)
    assert used[1] == 0.6 and used[4] == pytest.approx(0.3, rel=1e-12)
    assert used[9] == pytest.approx(0.2, rel=1e-12) and used[100] == pytest.approx(0.06, rel=1e-12)
    assert sgd.param_groups[0]["initial_lr"] == 0.6  # α itself is kept


def test_inv_sqrt_on_this_projects_adam_matches_torch_adam_at_alpha_t() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(4, dtype=torch.float64) for _ in range(50)]
    ours, ref = _param(), _param()
    adam = build([ours], OptimizerConfig(lr=0.1, eps_mode="paper", schedule="inv_sqrt"))
    torch_adam = torch.optim.Adam([ref], lr=0.1, eps=1e-7)
    for t, g in enumerate(grads, start=1):
        for group in torch_adam.param_groups:
            group["lr"] = 0.1 / math.sqrt(t)
        ours.grad, ref.grad = g.clone(), g.clone()
        adam.step()
        torch_adam.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-10, atol=0)


def test_constant_attaches_nothing() -> None:
    sgd = build([_param()], OptimizerConfig(name="sgd", lr=0.5,
                                            sgd=SGDOptions(momentum=0.9, nesterov=True)))
    assert "initial_lr" not in sgd.param_groups[0]
    assert not sgd._optimizer_step_post_hooks  # nothing runs after a step
    p = sgd.param_groups[0]["params"][0]
    for _ in range(3):
        p.grad = torch.ones_like(p)
        sgd.step()
    assert sgd.param_groups[0]["lr"] == 0.5


def test_the_classifier_steps_its_schedule_once_per_minibatch() -> None:
    # Lightning calls training_step with chunks of minibatches (manual optimization): the
    # schedule must count optimizer steps, not Lightning's calls.
    batch_size, steps_per_call, steps = 4, 3, 10
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch_size * steps, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    config = OptimizerConfig(name="adagrad", lr=0.2, schedule="inv_sqrt")
    model = Classifier(build_mlp(6, [], 3, 0.0), config, 3, batch_size)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, max_epochs=2,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=InMemoryBatches(x, y, batch_size * steps_per_call))
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adagrad)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 / math.sqrt(2 * steps + 1))
