"""The benchmark suite runs (at tiny sizes) and writes its table; timings are never asserted.

Its anchors are checked for what they claim: the compute floor steps as autograd and fused
Adam do, and the plain loops see the project's data in the project's order.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import plain_run, throughput
from benchmarks.compute_floor import BareStep
from src.config import Config, DataConfig, TrainerConfig
from src.data import unit_scale
from src.model import build_mlp
from src.run import make_datamodule
from tests.conftest import REPO, write_tiny_mnist


def test_quick_suite_writes_every_section(tmp_path: Path) -> None:
    data = write_tiny_mnist(tmp_path / "mnist", n_train=2600)
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--data", str(data),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for heading in ("(a) One optimizer step", "(b) Training throughput", "(c) End to end",
                    "(d) Study"):
        assert heading in text
    for row in ("| project Adam |", "| torch fused |", "python -m src.train +experiment=compare",
                "| 2 workers, no pruning |", "| 1 worker, median pruner |", "(existing store",
                "fused plain loop steps/s", "compute floor steps/s", "project ÷ fused |",
                "| python -m benchmarks.plain_run --epochs 1", "| project ÷ fused plain loop |"):
        assert row in text
    assert not out.with_suffix(".tmp").exists()


def test_compute_floor_steps_as_autograd_and_fused_adam_do() -> None:
    torch.manual_seed(0)
    net = build_mlp(784, [16], 10, dropout=0.2)
    reference = copy.deepcopy(net)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-7, fused=True)
    step = BareStep(net, lr=1e-2, betas=(0.9, 0.999), eps=1e-7)
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    for seed in range(3):  # the dropout masks are drawn alike from the same seed
        torch.manual_seed(seed)
        with torch.no_grad():
            bare_loss = step(x, y)
        torch.manual_seed(seed)
        loss = F.cross_entropy(reference(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(bare_loss, loss.detach(), rtol=1e-6, atol=0)
        for bare, p in zip(step.grads, reference.parameters(), strict=True):
            torch.testing.assert_close(bare, p.grad, rtol=1e-5, atol=1e-7)
        for bare, p in zip(net.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(bare, p, rtol=1e-6, atol=1e-8)


def test_the_anchors_train_on_the_projects_data_in_its_order(tmp_path: Path) -> None:
    root = write_tiny_mnist(tmp_path / "mnist")
    config = Config(data=DataConfig(root=str(root), val_size=100, download=False),
                    trainer=TrainerConfig(steps_per_call=5))
    datamodule = make_datamodule(config)
    pixels, labels = datamodule.pixels("train")
    order = torch.cat(list(throughput.project_order(datamodule)))
    chunks = list(datamodule.train_dataloader())  # the project's first epoch
    assert torch.equal(torch.cat([x for x, _ in chunks]), unit_scale(pixels[order]))
    assert torch.equal(torch.cat([y for _, y in chunks]), labels[order])
    # The plain script reads and splits the files as the project does, and starts from the
    # same weights.
    for (x, y), split in zip(plain_run.load(root, 100, config.seed), ("train", "val", "test"),
                             strict=True):
        px, py = datamodule.pixels(split)
        assert torch.equal(x, px) and torch.equal(y, py)
    torch.manual_seed(config.seed)
    plain = plain_run.blog_mlp(784)
    torch.manual_seed(config.seed)
    project = build_mlp(784, config.model.hidden, config.model.num_classes, config.model.dropout,
                        config.model.init)
    assert str(plain) == str(project)
    for a, b in zip(plain.state_dict().values(), project.state_dict().values(), strict=True):
        assert torch.equal(a, b)
