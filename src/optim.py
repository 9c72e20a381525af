"""The project's own Adam: Algorithm 1 of Kingma & Ba, "Adam: A Method for
Stochastic Optimization" (2014, arXiv:1412.6980).

With default arguments :class:`Adam` is a drop-in replacement for
``torch.optim.Adam`` (same update, same L2 weight decay, same ``state_dict``
layout), so the study can swap the two freely.

Where ε goes is the one thing the popular implementations disagree on:

* ``eps_mode="paper"`` (PyTorch): ε is added to the bias-corrected √v̂_t, exactly
  as in Algorithm 1: θ_t = θ_{t-1} - α·m̂_t / (√v̂_t + ε).
* ``eps_mode="keras"`` (Keras/TensorFlow): ε is added to the *uncorrected* √v_t,
  i.e. it plays the role of the paper's ε̂ from the "more efficient" ordering at
  the end of §2: θ_t = θ_{t-1} - α_t·m_t / (√v_t + ε̂) with
  α_t = α·√(1-β2^t)/(1-β1^t). That equals Algorithm 1 with an effective
  ε/√(1-β2^t), which is much larger than ε during the first ~1/(1-β2) steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adam"]

_EPS_MODES = ("paper", "keras")

# Incrementing CPU scalar tensors by a Python number makes the foreach fallback wrap
# the number into a new tensor for every parameter; one shared tensor avoids that.
_ONE = torch.tensor(1.0)

# torch.optim.Adam options that change the update rule and that this class lacks;
# loading a state_dict that enables one of them would silently change the algorithm.
_UNSUPPORTED_TORCH_OPTIONS = ("amsgrad", "maximize", "decoupled_weight_decay")


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _validate_hyperparameters(group: dict[str, Any]) -> None:
    """Raise ValueError naming the offending argument, like torch (but per group)."""
    lr, betas, eps = group["lr"], group["betas"], group["eps"]
    weight_decay, eps_mode = group["weight_decay"], group["eps_mode"]
    # `not x >= 0` (rather than `x < 0`) also rejects NaN.
    if not _is_number(lr) or not lr >= 0.0:
        raise ValueError(f"Invalid learning rate (lr): {lr!r} — must be a number >= 0")
    if not _is_number(eps) or not eps >= 0.0:
        raise ValueError(f"Invalid epsilon (eps): {eps!r} — must be a number >= 0")
    # Any sequence, so an OmegaConf ListConfig straight from a Hydra config works.
    if (
        not isinstance(betas, Sequence)
        or isinstance(betas, str)
        or len(betas) != 2
        or not all(_is_number(b) for b in betas)
    ):
        raise ValueError(f"Invalid betas: {betas!r} — must be a pair of numbers (beta1, beta2)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta{i + 1} (betas[{i}]): {beta!r} — must be in [0, 1)")
    if not _is_number(weight_decay) or not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} — must be a number >= 0")
    if eps_mode not in _EPS_MODES:
        raise ValueError(f"Invalid eps_mode: {eps_mode!r} — must be one of {_EPS_MODES}")
    bias_correction = group["bias_correction"]
    if bias_correction is not True and bias_correction is not False:
        raise ValueError(f"Invalid bias_correction: {bias_correction!r} — must be a bool")


def _adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    eps_mode: str,
    bias_correction: bool,
) -> None:
    """One iteration of Algorithm 1's loop body for same-device, same-dtype tensors.

    All tensor work is multi-tensor (``torch._foreach_*``) ops, so the kernel-launch
    cost is per bucket rather than per parameter, and θ, m and v are updated in place.
    """
    # t ← t + 1
    torch._foreach_add_(steps, _ONE, alpha=1.0)

    # g_t ← ∇θ f_t(θ_{t-1}). L2 weight decay enters through the gradient (as in
    # torch.optim.Adam, not AdamW); out of place so the caller's p.grad stays intact.
    if weight_decay != 0.0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)

    # m_t ← β1·m_{t-1} + (1-β1)·g_t — lerp is the same convex combination in one pass.
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)

    # v_t ← β2·v_{t-1} + (1-β2)·g_t²
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)

    # m̂_t = m_t/(1-β1^t) and v̂_t = v_t/(1-β2^t) are never materialised: following
    # the efficient ordering of §2, the corrections are folded into two scalars per
    # tensor (cheap Python floats from t), using the identity
    #     α·m̂_t/(√v̂_t + ε) = α_t·m_t/(√v_t + ε̂),  α_t = α·√(1-β2^t)/(1-β1^t),
    # with ε̂ = ε·√(1-β2^t) for the paper's ε and ε̂ = ε for Keras's.
    # That saves two passes and two temporaries over computing m̂_t and v̂_t, and one
    # pass over torch's foreach Adam, which still divides √v_t by √(1-β2^t).
    step_sizes: list[float] = []
    eps_hats: list[float] = []
    for t in (step.item() for step in steps):
        if bias_correction:
            bias_correction1 = 1.0 - beta1**t
            bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)
        else:
            bias_correction1 = bias_correction2_sqrt = 1.0
        # Negated so the update is a single in-place addcdiv.
        step_sizes.append(-lr * bias_correction2_sqrt / bias_correction1)
        eps_hats.append(eps * bias_correction2_sqrt if eps_mode == "paper" else eps)

    # θ_t ← θ_{t-1} - α_t·m_t/(√v_t + ε̂). The denominator is the one temporary
    # the update cannot avoid, since v_t must survive for the next step.
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps_hats)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2014, Algorithm 1) with optional Keras-style ε.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: step size α.
        betas: (β1, β2), exponential decay rates of the moment estimates, each in [0, 1).
        eps: ε, added to the denominator for numerical stability.
        weight_decay: L2 penalty coefficient added to the gradient (not decoupled).
        eps_mode: ``"paper"`` adds ε to √v̂_t (PyTorch); ``"keras"`` adds it to √v_t
            (Keras/TensorFlow). See the module docstring.
        bias_correction: if False, use m_t and v_t in place of m̂_t and v̂_t.

    State per parameter matches ``torch.optim.Adam`` (``"step"``: float32 scalar
    tensor on CPU holding t, ``"exp_avg"``: m_t, ``"exp_avg_sq"``: v_t), so state
    dicts can be exchanged with it in either direction.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        eps_mode: str = "paper",
        bias_correction: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "eps_mode": eps_mode,
            "bias_correction": bias_correction,
        }
        # Checked here as well as per group so a bad default fails even when every
        # group overrides it, matching torch.
        _validate_hyperparameters(defaults)
        defaults["betas"] = (float(betas[0]), float(betas[1]))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters (torch only checks the defaults)."""
        if isinstance(param_group, dict):
            _validate_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # A list or ListConfig (e.g. from Hydra) would otherwise end up in state_dict.
        group["betas"] = (float(group["betas"][0]), float(group["betas"][1]))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from this class or from ``torch.optim.Adam``."""
        for group in state_dict["param_groups"]:
            enabled = [k for k in _UNSUPPORTED_TORCH_OPTIONS if group.get(k)]
            if enabled:
                raise ValueError(f"Cannot load a state dict that enables {enabled}")
        super().load_state_dict(state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            # Groups saved by torch.optim.Adam lack our options; its defaults are ours.
            group.setdefault("eps_mode", "paper")
            group.setdefault("bias_correction", True)
            for p in group["params"]:
                p_state = self.state.get(p)
                if not p_state or "step" not in p_state:
                    continue
                step = p_state["step"]
                # torch's fused/capturable Adam keeps t on the param's device and old
                # checkpoints store it as a number; we read t on the host every step.
                if not torch.is_tensor(step) or step.device.type != "cpu":
                    p_state["step"] = torch.tensor(float(step), dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimisation step; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            # foreach kernels want homogeneous lists, so bucket by (device, dtype).
            buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], ...]] = {}
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    # No g_t means no iteration for this θ: its t, m and v stay as they are.
                    continue
                if grad.is_sparse:
                    raise RuntimeError(
                        "Adam does not support sparse gradients; use torch.optim.SparseAdam"
                    )
                state = self.state[p]
                if not state:
                    # Algorithm 1: m_0 ← 0, v_0 ← 0, t ← 0.
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if torch.is_complex(p):
                    # As torch does: treat ℂ as ℝ², so g_t² is squared per real
                    # component rather than as a complex number.
                    p, grad, exp_avg, exp_avg_sq = (
                        torch.view_as_real(x) for x in (p, grad, exp_avg, exp_avg_sq)
                    )
                key = (p.device, p.dtype)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = ([], [], [], [], [])
                bucket[0].append(p)
                bucket[1].append(grad)
                bucket[2].append(exp_avg)
                bucket[3].append(exp_avg_sq)
                bucket[4].append(state["step"])

            beta1, beta2 = group["betas"]
            for params, grads, exp_avgs, exp_avg_sqs, steps in buckets.values():
                _adam(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    steps,
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    eps_mode=group["eps_mode"],
                    bias_correction=group["bias_correction"],
                )
        return loss
