"""Adam's internals during training: how large each parameter's step is, and why.

The blog claims that v_t sets Adam's effective learning rate. For every parameter element i
the update of step t is (Kingma & Ba, Algorithm 1)

    Δθ_i = -α · m̂_i / (√v̂_i + ε),    m̂ = m_t / (1 - β1^t),   v̂ = v_t / (1 - β2^t),

so α/(√v̂_i + ε) is parameter i's own learning rate. :class:`AdamInternals` reads m_t, v_t
and t from the optimizer's state (``exp_avg``, ``exp_avg_sq``, ``step``) at the end of a
training epoch and logs the distribution over all parameter elements of

* ``internals/step_*``:  the effective step |α·m̂_i/(√v̂_i + ε)| — exactly |Δθ_i| of the
  epoch's last optimizer step (L2 weight decay, if any, is already inside m_t; AdamW's
  decoupled decay of θ is not counted);
* ``internals/inv_sqrt_v_*``:  the per-parameter scale 1/(√v̂_i + ε);
* ``internals/update_ratio_*``:  the element-wise update-to-weight ratio |Δθ_i| / |θ_i|,
  θ being the weights after that step;

each as its 10th, 50th and 90th percentile (``_p10``, ``_p50``, ``_p90``), plus

* ``internals/update_norm_ratio``:  ‖Δθ‖₂ / ‖θ‖₂ over all parameters together (the usual
  "update/weight ≈ 1e-3" rule of thumb);
* ``internals/frozen_frac``:  the fraction of elements with v_t = 0. Their update is exactly
  zero (no gradient has reached them within v's memory, e.g. weights from MNIST's always-
  black border pixels), and 1/ε would swamp the upper percentiles, so they are left out of
  the three distributions; the ratio also leaves out elements with θ_i = 0;
* ``internals/epoch``:  the (1-based) epoch the values belong to.

ε is placed as the optimizer places it: ``eps_mode="paper"`` adds ε to √v̂ as above;
``"keras"`` adds it to √v_t, i.e. uses ε/√(1-β2^t) in the formula; with
``bias_correction=False`` both use m̂ = m_t, v̂ = v_t; with ``amsgrad`` v_t is the running
maximum the step divides by (``max_exp_avg_sq``). Groups without those keys (e.g.
``torch.optim.Adam``) are read as the paper's Adam; optimizers without Adam's state (AdaMax's
``exp_inf``) log no internals.

Cost: a few passes over the state and three sorts per logged epoch (about 20 ms for the
blog's MLP, 1 % of its epoch), and nothing at all when the callback is not attached
(``internals.enabled=false``, the default). Percentiles are exact up to ``max_elements``
parameter elements (default 2**18), else taken over a uniform random sample of that many,
drawn from the callback's own generator, so enabling it never changes a run's random stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["QUANTILES", "AdamInternals", "ParamInternals", "internals_metrics", "param_internals"]

QUANTILES: tuple[tuple[str, float], ...] = (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))
DISTRIBUTIONS: tuple[str, ...] = ("step", "inv_sqrt_v", "update_ratio")
PREFIX = "internals/"
# Exact percentiles up to this many parameter elements (the blog's MLP has 0.1M, the paper's
# 1.8M): three sorts of 2**18 floats take ~50 ms, ~1 % of an epoch of the larger model.
DEFAULT_MAX_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class ParamInternals:
    """One parameter tensor's internals: the distributions hold its (sampled) elements with
    v_t > 0, flattened; the sums and counts cover all its elements."""

    step: Tensor  # |α·m̂/(√v̂ + ε)|
    inv_sqrt_v: Tensor  # 1/(√v̂ + ε)
    update_ratio: Tensor  # |Δθ|/|θ|, elements with θ ≠ 0 only
    update_sq: float  # Σ Δθ² over all elements (frozen ones contribute 0)
    weight_sq: float  # Σ θ² over all elements
    numel: int
    frozen: int  # elements with v_t = 0


def param_internals(theta: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, t: float, *,
                    lr: float, beta1: float, beta2: float, eps: float, eps_mode: str = "paper",
                    bias_correction: bool = True, sample: Tensor | None = None) -> ParamInternals:
    """The internals of one parameter tensor from its Adam state (m_t, v_t, t).

    `sample` (flat element indices) restricts the three distributions to those elements;
    the norms and the frozen count always cover the whole tensor.
    """
    if bias_correction:
        correction1, correction2 = 1.0 - beta1**t, 1.0 - beta2**t
    else:
        correction1 = correction2 = 1.0
    # Keras adds ε to √v_t: in terms of v̂ that is ε/√(1-β2^t).
    eps_hat = eps if eps_mode == "paper" else eps / math.sqrt(correction2)
    theta, m, v = (x.detach().reshape(-1) for x in (theta, exp_avg, exp_avg_sq))
    if torch.is_complex(theta):
        theta, m, v = (torch.view_as_real(x).reshape(-1) for x in (theta, m, v))
    inv = (v / correction2).sqrt_().add_(eps_hat).reciprocal_()
    step = (m / correction1).abs_().mul_(inv).mul_(lr)
    frozen = v == 0  # no gradient within v's memory: Δθ = 0 exactly (0·1/ε)
    step.masked_fill_(frozen, 0.0)
    update_sq = float(torch.linalg.vector_norm(step, dtype=torch.float64) ** 2)
    weight_sq = float(torch.linalg.vector_norm(theta, dtype=torch.float64) ** 2)
    n_frozen = int(frozen.sum())
    if sample is not None:
        theta, step, inv, frozen = theta[sample], step[sample], inv[sample], frozen[sample]
    if n_frozen:
        live = ~frozen
        theta, step, inv = theta[live], step[live], inv[live]
    nonzero = theta != 0
    ratio = (step / theta.abs()) if bool(nonzero.all()) else step[nonzero] / theta[nonzero].abs()
    return ParamInternals(step=step, inv_sqrt_v=inv, update_ratio=ratio, update_sq=update_sq,
                          weight_sq=weight_sq, numel=m.numel(), frozen=n_frozen)


def _adam_states(optimizer: Optimizer) -> Iterator[tuple[Tensor, dict, dict]]:
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "exp_avg" in state and "exp_avg_sq" in state and "step" in state:
                yield p, state, group


def _quantiles(values: Tensor) -> list[float]:
    if values.numel() == 0:
        return [math.nan] * len(QUANTILES)
    q = torch.tensor([q for _, q in QUANTILES], dtype=values.dtype)
    return torch.quantile(values, q).tolist()


def internals_metrics(optimizer: Optimizer, max_elements: int = DEFAULT_MAX_ELEMENTS,
                      generator: torch.Generator | None = None) -> dict[str, float]:
    """The `internals/*` numbers (see the module docstring) of an Adam optimizer's state.

    Beyond `max_elements` parameter elements in all, the percentiles come from a uniform
    random sample of that many (drawn with `generator`, per tensor in proportion to its size).
    """
    entries = [(p, state, group) for p, state, group in _adam_states(optimizer)
               if float(state["step"]) > 0]
    if not entries:
        return {}
    total = sum(p.numel() for p, _, _ in entries)
    per_param: list[ParamInternals] = []
    with torch.no_grad():
        for p, state, group in entries:
            sample = None
            if total > max_elements:
                k = max(1, round(max_elements * p.numel() / total))
                sample = torch.randint(p.numel(), (k,), generator=generator)
            beta1, beta2 = group["betas"]
            # AMSGrad divides by the running maximum of v_t, so that is the v of its step.
            v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
            per_param.append(param_internals(
                p, state["exp_avg"], v, float(state["step"]),
                lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                eps=float(group["eps"]), eps_mode=group.get("eps_mode", "paper"),
                bias_correction=bool(group.get("bias_correction", True)), sample=sample))
        metrics: dict[str, float] = {}
        for name in DISTRIBUTIONS:
            values = torch.cat([getattr(x, name) for x in per_param])
            for (suffix, _), value in zip(QUANTILES, _quantiles(values), strict=True):
                metrics[f"{PREFIX}{name}_{suffix}"] = value
    weight_sq = sum(x.weight_sq for x in per_param)
    metrics[f"{PREFIX}update_norm_ratio"] = (
        math.sqrt(sum(x.update_sq for x in per_param) / weight_sq) if weight_sq > 0 else math.nan)
    metrics[f"{PREFIX}frozen_frac"] = (sum(x.frozen for x in per_param)
                                       / sum(x.numel for x in per_param))
    return metrics


class AdamInternals(pl.Callback):
    """Logs `internals/*` (through the LightningModule, so to MLflow with the epoch as step)
    after every `every_n_epochs`-th training epoch and after the last one."""

    def __init__(self, every_n_epochs: int = 1, max_elements: int = DEFAULT_MAX_ELEMENTS,
                 seed: int = 0) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs}: must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.max_elements = max_elements
        # Own generator: subsampling must not move the training's global random stream.
        self.generator = torch.Generator().manual_seed(seed)
        self.logged: list[dict[str, float]] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        max_epochs = trainer.max_epochs
        last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        metrics: dict[str, float] = {}
        for optimizer in _optimizers(trainer):
            metrics.update(internals_metrics(optimizer, self.max_elements, self.generator))
        if not metrics:
            return
        metrics[f"{PREFIX}epoch"] = float(trainer.current_epoch + 1)
        self.logged.append(metrics)
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=False, on_epoch=True)


def _optimizers(trainer: pl.Trainer) -> Iterable[Optimizer]:
    return [o for o in trainer.optimizers if isinstance(o, Optimizer)]
