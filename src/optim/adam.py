"""Adam: Algorithm 1 of Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014,
arXiv:1412.6980), with AMSGrad, maximize and decoupled weight decay (AdamW), written once.

:func:`adam` is the loop body of Algorithm 1 for one θ; every path runs it: one tensor at a
time, once per flat bucket (src.optim.flat), and compiled by ``torch.compile`` for large
buckets. A variant of the update is an edit of that one function. The one exception is asked
for by name: ``fused=True`` hands the update to torch's own fused kernel instead
(src.optim.torch_private.fused_adam), for results identical to ``torch.optim.Adam(fused=True)``
bit for bit; a variant of :func:`adam` does not reach that path.

With default arguments :class:`Adam` is a drop-in for ``torch.optim.Adam``: the same update,
options, argument checks and ``state_dict`` layout, so the study can swap the two freely.
:class:`AdamW` is ``Adam(decoupled_weight_decay=True)`` with torch's AdamW defaults.

Where ε goes is the one thing the popular implementations disagree on:

* ``eps_mode="paper"`` (PyTorch): ε is added to the bias-corrected √v̂_t, exactly as in
  Algorithm 1: θ_t = θ_{t-1} - α·m̂_t / (√v̂_t + ε).
* ``eps_mode="keras"`` (Keras/TensorFlow): ε is added to the *uncorrected* √v_t, i.e. it
  plays the role of the paper's ε̂ from the "more efficient" ordering at the end of §2:
  θ_t = θ_{t-1} - α_t·m_t / (√v_t + ε̂) with α_t = α·√(1-β2^t)/(1-β1^t). That equals
  Algorithm 1 with an effective ε/√(1-β2^t), which is much larger than ε during the first
  ~1/(1-β2) steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from src.optim.base import ElementwiseOptimizer, Options, check_hyperparameters
from src.optim.flat import Rule
from src.optim.torch_private import fused_adam

__all__ = ["Adam", "AdamW", "adam", "bias_corrected_step", "moving_average_"]


def adam(
    theta: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None = None,
    *,
    one_minus_beta1: float | Tensor,
    beta2: float | Tensor,
    one_minus_beta2: float | Tensor,
    step_size: float | Tensor,
    eps_hat: float | Tensor,
    weight_decay: float = 0.0,
    decay: float | Tensor | None = None,
    maximize: bool = False,
    scratch: Tensor | None = None,
) -> None:
    """One iteration of Algorithm 1's loop body for θ (t already advanced by the caller).

    θ, m (``exp_avg``), v (``exp_avg_sq``) and, for AMSGrad, v_max (``max_exp_avg_sq``) are
    updated in place; ``grad`` is read only. ``step_size`` and ``eps_hat`` are α_t and ε̂ of
    :func:`bias_corrected_step`. ``weight_decay`` is the L2 coefficient λ (into g_t, as
    torch.optim.Adam), ``decay`` the decoupled factor 1 - α·λ (AdamW), at most one of them
    set. Numbers are Python floats when run eagerly and 0-d tensors when compiled, so that
    new values (every step, for α_t) do not recompile. ``scratch``, if given, is a buffer
    shaped like θ for the one temporary, √v_t.
    """
    # g_t ← ∇θ f_t(θ_{t-1}), or -∇θ to ascend (maximize); out of place: p.grad stays the gradient.
    g = -grad if maximize else grad
    if weight_decay:
        # L2: g_t ← g_t + λ·θ_{t-1}, so the penalty passes through m and v.
        g = g.add(theta, alpha=weight_decay)
    if decay is not None:
        # Decoupled (AdamW): θ_{t-1} ← (1 - α·λ)·θ_{t-1}, outside the moment estimates.
        theta.mul_(decay)

    # m_t ← β1·m_{t-1} + (1-β1)·g_t
    moving_average_(exp_avg, g, one_minus_beta1)

    # v_t ← β2·v_{t-1} + (1-β2)·g_t²
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)

    # AMSGrad (Reddi et al., 2018): v_max,t ← max(v_max,t-1, v_t) takes v_t's place below,
    # so the per-element step size α/√v never grows. As torch does, the max is of the
    # uncorrected v_t, and the bias correction is applied to it afterwards.
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq

    # m̂_t ← m_t/(1-β1^t),  v̂_t ← v_t/(1-β2^t),  θ_t ← θ_{t-1} - α·m̂_t/(√v̂_t + ε),
    # evaluated as θ_t ← θ_{t-1} - α_t·m_t/(√v_t + ε̂) (see bias_corrected_step). The
    # denominator is the one temporary the update cannot avoid, since v_t must survive.
    denom = torch.sqrt(v, out=scratch).add_(eps_hat)
    theta.addcdiv_(exp_avg, denom, value=-step_size)


def moving_average_(average: Tensor, x: Tensor, weight: float | Tensor) -> Tensor:
    """average ← (1-weight)·average + weight·x, in place: a lerp, the same convex combination
    in one pass; spelt out for a tensor weight (compiled), where lerp would keep both of its
    formulas and pick one per element."""
    if isinstance(weight, Tensor):
        return average.add_((x - average) * weight)
    return average.lerp_(x, weight)


def bias_corrected_step(t: float, *, lr: float, beta1: float, beta2: float, eps: float,
                        eps_mode: str, bias_correction: bool) -> tuple[float, float]:
    """(α_t, ε̂) for iteration t: Algorithm 1's bias corrections folded into two numbers.

    m̂_t = m_t/(1-β1^t) and v̂_t = v_t/(1-β2^t) are never materialised: following the
    efficient ordering of §2, the corrections are cheap host floats from t, via
        α·m̂_t/(√v̂_t + ε) = α_t·m_t/(√v_t + ε̂),  α_t = α·√(1-β2^t)/(1-β1^t),
    with ε̂ = ε·√(1-β2^t) for the paper's ε and ε̂ = ε for Keras's. That saves two passes
    and two temporaries over computing m̂_t and v̂_t, and one pass over torch's Adam, which
    still divides √v_t by √(1-β2^t). ``bias_correction=False`` uses m_t and v_t as they are.
    """
    if bias_correction:
        bias_correction1 = 1.0 - beta1**t
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)
    else:
        bias_correction1 = bias_correction2_sqrt = 1.0
    step_size = lr * bias_correction2_sqrt / bias_correction1
    eps_hat = eps * bias_correction2_sqrt if eps_mode == "paper" else eps
    return step_size, eps_hat


class Adam(ElementwiseOptimizer):
    """Adam (Kingma & Ba, 2014, Algorithm 1) as ``torch.optim.Adam``, with optional Keras ε.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: step size α (a number, or a 1-element tensor as torch accepts on CPU).
        betas: (β1, β2), exponential decay rates of the moment estimates, each in [0, 1)
            (numbers, or both 1-element tensors).
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ: an L2 penalty added to the gradient, or with
            ``decoupled_weight_decay`` a decay of θ outside the moments (AdamW).
        amsgrad: the AMSGrad variant: the running maximum of v_t in the denominator.
        foreach: torch's per-tensor implementations; any value but None steps this group one
            tensor at a time (the result is the same). torch's rule that a tensor lr needs
            ``foreach`` off applies.
        maximize: ascend the objective instead of descending it.
        capturable: refused on CPU with torch's error (t is read on the host).
        differentiable: refused (the update runs without autograd).
        fused: True: torch's fused Adam kernel steps the flat buffers (and any parameter
            stepped alone), so the results are ``torch.optim.Adam(fused=True)``'s bit for
            bit, where torch has the update (``eps_mode="paper"``, ``bias_correction=True``;
            otherwise the rule). None: the rule on flat buffers. False: the rule per tensor.
            torch's checks of the combination apply.
        decoupled_weight_decay: decoupled weight decay, as AdamW.
        eps_mode: ``"paper"`` adds ε to √v̂_t (PyTorch); ``"keras"`` adds it to √v_t
            (Keras/TensorFlow). See the module docstring.
        bias_correction: if False, use m_t and v_t in place of m̂_t and v̂_t.
        flat, compile: implementation choices, see :class:`ElementwiseOptimizer`.

    State per parameter matches ``torch.optim.Adam`` (``"step"``: float scalar tensor on CPU
    holding t, ``"exp_avg"``: m_t, ``"exp_avg_sq"``: v_t, with AMSGrad ``"max_exp_avg_sq"``),
    so state dicts can be exchanged with it in either direction.
    """

    rule = staticmethod(adam)
    sparse_message = "Adam does not support sparse gradients, please consider SparseAdam instead"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        eps_mode: str = "paper",
        bias_correction: bool = True,
        flat: bool = True,
        compile: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
            "capturable": capturable, "differentiable": differentiable, "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay, "eps_mode": eps_mode,
            "bias_correction": bias_correction,
        }
        super().__init__(params, defaults, flat=flat, compile=compile)

    @classmethod
    def check_group(cls, group: dict[str, Any]) -> None:
        check_hyperparameters(group, tensor_rules=True)

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        if group["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    def options(self, group: dict[str, Any], t: float) -> Options:
        b1, b2 = group["betas"]
        beta1, beta2, lr = float(b1), float(b2), float(group["lr"])
        weight_decay = float(group["weight_decay"])
        step_size, eps_hat = bias_corrected_step(
            t, lr=lr, beta1=beta1, beta2=beta2, eps=float(group["eps"]),
            eps_mode=group["eps_mode"], bias_correction=group["bias_correction"],
        )
        static: dict[str, Any] = {"maximize": bool(group["maximize"])}
        # 1 - β computed here in float64: a compiled run gets the values in θ's precision.
        values = {"one_minus_beta1": 1.0 - beta1, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
                  "step_size": step_size, "eps_hat": eps_hat}
        if weight_decay:
            if group["decoupled_weight_decay"]:
                values["decay"] = 1.0 - lr * weight_decay
            else:
                static["weight_decay"] = weight_decay
        return static, values


    def kernel(self, group: dict[str, Any]) -> tuple[Rule, Callable[[float], Options]] | None:
        """torch's fused Adam kernel, for the updates torch has: the paper's ε placement with
        bias correction (any other option the kernel takes as torch.optim.Adam does)."""
        if group["eps_mode"] != "paper" or not group["bias_correction"]:
            return None
        return fused_adam, partial(self._kernel_options, group)

    @staticmethod
    def _kernel_options(group: dict[str, Any], t: float) -> Options:
        b1, b2 = group["betas"]
        static = {"maximize": bool(group["maximize"]),
                  "decoupled": bool(group["decoupled_weight_decay"])}
        values = {"lr": float(group["lr"]), "beta1": float(b1), "beta2": float(b2),
                  "eps": float(group["eps"]), "weight_decay": float(group["weight_decay"]),
                  # The kernel reads t as a number from a tensor. (torch's fused Adam keeps t
                  # in float32 always, this project in the default dtype: under a float64
                  # default the two differ only past 2**24 steps, where float32 rounds t.)
                  "step": torch.tensor(t)}
        return static, values


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and torch.optim.AdamW's
    defaults (``weight_decay=1e-2``); the keyword arguments are :class:`Adam`'s but
    ``decoupled_weight_decay``, which is always on."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **kwargs: Any) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         decoupled_weight_decay=True, **kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True  # as torch.optim.AdamW
