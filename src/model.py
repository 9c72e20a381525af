"""The classifier: the blog's MLP and the LightningModule that trains it with src.optim.Adam."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from src.config import OptimizerConfig
from src.optim import Adam


def build_mlp(in_features: int, hidden: Sequence[int], num_classes: int,
              dropout: float, init: str = "keras") -> nn.Sequential:
    """Flatten → [Dense(h, relu) → Dropout]* → Dense(num_classes) logits, as in the blog.

    With no hidden layers it is Flatten → Dense(num_classes): multinomial logistic regression
    on the pixels (softmax in the cross-entropy), the model of Kingma & Ba's §6.1
    (`model=logreg`).

    init="keras" draws weights as Keras's Dense does (Glorot uniform, zero bias) — the
    blog's starting point, and about 2.5× wider than torch's default (Kaiming uniform with
    a=√5) on the 784→128 layer, which shows in the first epoch; init="torch" keeps torch's.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    net = nn.Sequential(*layers)
    if init == "keras":
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    elif init != "torch":
        raise ValueError(f"init={init!r}: expected 'keras' or 'torch'")
    return net


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or inf."""


class Classifier(pl.LightningModule):
    """Cross-entropy classification, trained one minibatch per Adam step.

    Lightning hands `training_step` a chunk of consecutive minibatches (see
    `MNISTDataModule(steps_per_call=...)`) and the step loops over them with manual
    optimization. Lightning's per-call bookkeeping is a sizeable fraction of a whole step of
    this small model (the README's performance section has the numbers), so it is paid once
    per chunk instead of once per step. The minibatches, their order and the updates are the
    same for any chunk size (tested); only Lightning's batch-level hooks see chunks. The epoch's
    training loss is summed in a tensor and logged once, for the same reason.
    """

    def __init__(self, net: nn.Module, optimizer: OptimizerConfig, num_classes: int,
                 batch_size: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.optimizer_config = optimizer
        self.batch_size = batch_size
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Adam:
        o = self.optimizer_config
        return Adam(self.parameters(), lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps,
                    weight_decay=o.weight_decay, eps_mode=o.eps_mode,
                    bias_correction=o.bias_correction)

    def training_step(self, chunk: tuple[torch.Tensor, torch.Tensor], chunk_idx: int) -> None:
        optimizer = self.optimizers()
        assert isinstance(optimizer, pl.core.optimizer.LightningOptimizer)
        x_chunk, y_chunk = chunk
        for x, y in zip(x_chunk.split(self.batch_size), y_chunk.split(self.batch_size),
                        strict=True):
            loss = F.cross_entropy(self.net(x), y)
            if not torch.isfinite(loss):
                # A diverged run never recovers: stop now rather than spend the other epochs.
                raise NonFiniteLoss(f"training loss became {loss.item()} at epoch "
                                    f"{self.current_epoch + 1}, step {self.global_step + 1}")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self._loss_sum += loss.detach() * len(y)
            self._seen += len(y)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._seen = 0

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", (self._loss_sum / max(self._seen, 1)).float())

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str,
                  accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), batch_size=len(y))
        accuracy.update(logits, y)
        self.log(f"{stage}/acc", accuracy, batch_size=len(y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)
