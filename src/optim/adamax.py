"""AdaMax: Algorithm 2 of Kingma & Ba (2014, §7.1), Adam with the infinity norm, written once.

Generalising v_t from the L2 to the Lp norm of past gradients and letting p → ∞ gives the
exponentially weighted infinity norm u_t = max(β2·u_{t-1}, |g_t|): no square root, no bias
correction of u (it has none, §7.1), and a step bounded by α/(1-β1^t) in every element.
:func:`adamax` is the loop body for one θ; it runs per tensor, per flat bucket and compiled,
as :func:`src.optim.adam.adam` does. With default arguments :class:`AdaMax` is a drop-in for
``torch.optim.Adamax``.

Algorithm 2 has no ε; implementations add one so that u_t = 0 cannot divide by zero, and
again disagree on where:

* ``eps_mode="paper"`` (PyTorch, the default here): inside the max,
  u_t = max(β2·u_{t-1}, |g_t| + ε), θ_t = θ_{t-1} - (α/(1-β1^t))·m_t/u_t.
* ``eps_mode="keras"`` (Keras/TensorFlow): in the denominator,
  u_t = max(β2·u_{t-1}, |g_t|), θ_t = θ_{t-1} - (α/(1-β1^t))·m_t/(u_t + ε).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from src.optim.adam import moving_average_
from src.optim.base import ElementwiseOptimizer, Options, check_hyperparameters

__all__ = ["AdaMax", "adamax"]


def adamax(
    theta: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_inf: Tensor,
    *,
    one_minus_beta1: float | Tensor,
    beta2: float | Tensor,
    step_size: float | Tensor,
    eps: float,
    eps_mode: str = "paper",
    weight_decay: float = 0.0,
    maximize: bool = False,
    scratch: Tensor | None = None,
) -> None:
    """One iteration of Algorithm 2's loop body for θ (t already advanced by the caller).

    θ, m (``exp_avg``) and u (``exp_inf``) are updated in place; ``grad`` is read only.
    ``step_size`` is α/(1-β1^t) (α without bias correction); ``weight_decay`` the L2
    coefficient λ, into g_t as torch.optim.Adamax does. Numbers are Python floats when run
    eagerly and 0-d tensors when compiled; ``scratch``, if given, is a buffer shaped like θ
    for the one temporary, |g_t|.
    """
    # g_t ← ∇θ f_t(θ_{t-1}), or -∇θ to ascend (maximize); out of place: p.grad stays the gradient.
    g = -grad if maximize else grad
    if weight_decay:
        g = g.add(theta, alpha=weight_decay)  # L2: g_t ← g_t + λ·θ_{t-1}

    # m_t ← β1·m_{t-1} + (1-β1)·g_t, as in Adam
    moving_average_(exp_avg, g, one_minus_beta1)

    # u_t ← max(β2·u_{t-1}, |g_t|) — with ε inside the max for eps_mode="paper" (torch).
    abs_g = torch.abs(g, out=scratch)
    if eps_mode == "paper":
        abs_g.add_(eps)
    torch.maximum(exp_inf.mul_(beta2), abs_g, out=exp_inf)

    # θ_t ← θ_{t-1} - (α/(1-β1^t))·m_t/u_t — u needs no bias correction (§7.1).
    denom = exp_inf if eps_mode == "paper" else torch.add(exp_inf, eps, out=scratch)
    theta.addcdiv_(exp_avg, denom, value=-step_size)


class AdaMax(ElementwiseOptimizer):
    """AdaMax (Kingma & Ba, 2014, Algorithm 2) as ``torch.optim.Adamax``.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: step size α (the paper's default, 0.002, is torch's; a 1-element tensor works).
        betas: (β1, β2): decay rates of the first moment and of the infinity norm, in [0, 1).
        eps: ε, see the module docstring for where it goes.
        weight_decay: λ, an L2 penalty added to the gradient.
        foreach: torch's per-tensor implementations; any value but None steps one tensor at
            a time (the result is the same).
        maximize: ascend the objective instead of descending it.
        differentiable, capturable: refused as in :class:`src.optim.Adam`.
        eps_mode: ``"paper"`` puts ε inside the max (PyTorch), ``"keras"`` in the denominator
            (Keras/TensorFlow).
        bias_correction: if False, step by α·m_t/u_t instead of (α/(1-β1^t))·m_t/u_t.
        flat, compile: implementation choices, see :class:`ElementwiseOptimizer`.

    State per parameter matches ``torch.optim.Adamax``: ``"step"`` (t), ``"exp_avg"`` (m_t)
    and ``"exp_inf"`` (u_t).
    """

    rule = staticmethod(adamax)
    sparse_message = "Adamax does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        eps_mode: str = "paper",
        bias_correction: bool = True,
        flat: bool = True,
        compile: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
            "capturable": capturable, "eps_mode": eps_mode, "bias_correction": bias_correction,
        }
        super().__init__(params, defaults, flat=flat, compile=compile)

    @classmethod
    def check_group(cls, group: dict[str, Any]) -> None:
        check_hyperparameters(group, tensor_rules=False)

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def options(self, group: dict[str, Any], t: float) -> Options:
        beta1, beta2 = (float(b) for b in group["betas"])
        lr = float(group["lr"])
        step_size = lr / (1.0 - beta1**t) if group["bias_correction"] else lr
        static = {"eps": float(group["eps"]), "eps_mode": group["eps_mode"],
                  "weight_decay": float(group["weight_decay"]),
                  "maximize": bool(group["maximize"])}
        return static, {"one_minus_beta1": 1.0 - beta1, "beta2": beta2, "step_size": step_size}
