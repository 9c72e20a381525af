"""The classifier: the blog's MLP and the LightningModule that trains it with src.optim.Adam."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import Strategy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from src.config import OptimizerConfig
from src.optim import build as build_optimizer

if TYPE_CHECKING:
    from pytorch_lightning.loops.progress import _Progress


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


# Lightning hooks that LightningOptimizer.step and manual_backward call around each step.
_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# What runs between manual_backward / LightningOptimizer.step and loss.backward() /
# optimizer.step(): the strategy's and precision plugin's wrappers and the module's hook.
_WRAPPERS = ((Strategy, ("backward", "pre_backward", "post_backward", "optimizer_step")),
             (Precision, ("backward", "pre_backward", "post_backward", "optimizer_step",
                          "_wrap_closure", "_after_closure")))

StepCalls = tuple[Callable[[], None], Callable[[torch.Tensor], None], Callable[[], object],
                  "_Progress | None"]


def _step_calls(module: pl.LightningModule) -> StepCalls:
    """(zero_grad, backward, step, progress) for one manual-optimization step of `module`.

    Lightning's wrappers (LightningOptimizer.step, manual_backward) cost a few hooks, each
    with a profiler range and two module attribute writes, per step. For a plain 32-bit,
    single-device run with no callback or module overriding the hooks they call, they only
    count steps, so the step calls the optimizer and autograd directly and `progress` (the
    counter behind `trainer.global_step`) is advanced by the caller; otherwise Lightning's own
    calls are returned, with `progress` None, as it counts them itself.
    """
    trainer = module.trainer
    loop = trainer.fit_loop.epoch_loop.manual_optimization
    components = {Strategy: trainer.strategy, Precision: trainer.precision_plugin}
    direct = (
        isinstance(trainer.profiler, PassThroughProfiler)
        and all(getattr(type(components[base]), name) is getattr(base, name)
                for base, names in _WRAPPERS for name in names)
        and all(getattr(type(module), hook) is getattr(pl.LightningModule, hook)
                for hook in (*_STEP_HOOKS, "backward"))
        and not any(getattr(type(callback), hook) is not getattr(pl.Callback, hook)
                    for callback in trainer.callbacks for hook in _STEP_HOOKS)
    )
    if direct:
        optimizer = module.optimizers(use_pl_optimizer=False)
        return optimizer.zero_grad, _scalar_backward(), optimizer.step, loop.optim_step_progress
    wrapped = module.optimizers()
    return wrapped.zero_grad, module.manual_backward, wrapped.step, None


def _scalar_backward() -> Callable[[torch.Tensor], None]:
    """`loss.backward()` for a scalar loss, minus torch.autograd.backward's Python checks.

    That wrapper validates its arguments and makes a new ones-tensor seed on every call, as
    much Python per step as Lightning's wrappers were; this passes one seed per dtype and
    device to the engine entry point it ends in, with Tensor.backward's defaults, so the
    gradients are the same. Tensor.backward where torch lacks that entry point.
    """
    run_backward = getattr(torch.autograd.graph, "_engine_run_backward", None)
    if run_backward is None:
        return torch.Tensor.backward
    seeds: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor]] = {}

    def backward(loss: torch.Tensor) -> None:
        key = (loss.dtype, loss.device)
        seed = seeds.get(key)
        if seed is None:
            seed = seeds[key] = (torch.ones((), dtype=loss.dtype, device=loss.device),)
        run_backward((loss,), seed, False, False, (), allow_unreachable=True,
                     accumulate_grad=True)

    return backward


class Classifier(pl.LightningModule):
    """Cross-entropy classification, trained one minibatch per Adam step.

    Lightning hands `training_step` a chunk of consecutive minibatches (see
    `MNISTDataModule(steps_per_call=...)`) and the step loops over them with manual
    optimization. Lightning's per-call bookkeeping is a sizeable fraction of a whole step of
    this small model (the README's performance section has the numbers), so it is paid once
    per chunk instead of once per step. The minibatches, their order and the updates are the
    same for any chunk size (tested); only Lightning's batch-level hooks see chunks. The epoch's
    training loss is summed once per chunk and logged once per epoch, for the same reason.
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
        self._loss_sum = 0.0
        self._seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.parameters(), self.optimizer_config)

    def on_train_start(self) -> None:
        self._step_calls = _step_calls(self)

    def training_step(self, chunk: tuple[torch.Tensor, torch.Tensor], chunk_idx: int) -> None:
        zero_grad, backward, step, progress = self._step_calls
        x_chunk, y_chunk = chunk
        first_step = self.global_step  # steps done before this chunk
        losses: list[torch.Tensor] = []
        for x, y in zip(x_chunk.split(self.batch_size), y_chunk.split(self.batch_size),
                        strict=True):
            loss = F.cross_entropy(self.net(x), y)
            zero_grad()
            backward(loss)
            step()
            losses.append(loss.detach())
        if progress is not None:
            progress.increment_by(len(losses))  # global_step, as LightningOptimizer.step counts
        self._account(torch.stack(losses), y_chunk, first_step)

    def _account(self, losses: torch.Tensor, y_chunk: torch.Tensor, first_step: int) -> None:
        """Add a chunk's minibatch losses to the epoch's sum; raise NonFiniteLoss naming the
        first step whose loss was NaN or inf. One read of the losses per chunk, instead of a
        host sync per step: a diverged chunk runs to its end, then stops the run."""
        losses = losses.cpu()  # the one host read of the chunk, on an accelerator
        values = losses.tolist()
        if not math.isfinite(sum(values)):  # losses are >= 0: NaN or inf survive the sum
            i = next(i for i, v in enumerate(values) if not math.isfinite(v))
            # A diverged run never recovers: stop now rather than spend the other epochs.
            raise NonFiniteLoss(f"training loss became {values[i]} at epoch "
                                f"{self.current_epoch + 1}, step {first_step + i + 1}")
        n = len(values)
        sizes = [min(self.batch_size, len(y_chunk) - k * self.batch_size) for k in range(n)]
        # Weighted by minibatch size in float32 and summed in order in float64, as a per-step
        # `sum += loss * len(y)` would: the logged epoch loss stays the same to the last bit.
        weighted = losses.mul(torch.tensor(sizes, dtype=losses.dtype)).tolist()
        total = self._loss_sum
        for v in weighted:
            total += v
        self._loss_sum = total
        self._seen += len(y_chunk)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = 0.0
        self._seen = 0

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", torch.tensor(self._loss_sum / max(self._seen, 1),
                                            dtype=torch.float32, device=self.device))

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
