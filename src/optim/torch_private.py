"""The one place that leans on torch's private API: step hooks and profiler ranges, torch's
fused and capturable checks and its fused Adam kernel, the dtype torch gives the step counter,
the multi-tensor copy and zero ops, and tensors' version counters.

Everything here mirrors what ``torch.optim.Optimizer`` and ``torch.optim.Adam`` do, so the
project's optimizers behave the same; if a torch upgrade moves one of these names, this file
is where it shows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import chain
from operator import attrgetter
from typing import Any

import torch
from torch import Tensor
from torch.autograd.profiler import record_function
from torch.optim.optimizer import (
    Optimizer,
    _device_dtype_check_for_fused,
    _get_capturable_supported_devices,
    _get_scalar_dtype,
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)

__all__ = [
    "check_capturable", "check_fused", "copy_all_", "fused_adam", "hooked_step", "profiler_enabled",
    "set_grad_enabled", "step_dtype", "version", "zero_all_", "zero_grad_range",
]

# What @torch.no_grad() does, without building its context-manager objects every step.
set_grad_enabled: Callable[[bool], None] = torch._C._set_grad_enabled

# One op over lists of same-device tensors (torch.optim's own zero_grad uses them).
copy_all_: Callable[[list[Tensor], list[Tensor]], None] = torch._foreach_copy_
zero_all_: Callable[[list[Tensor]], None] = torch._foreach_zero_

# A tensor's version counter: bumped by autograd and by every in-place op on it or its views.
version: Callable[[Tensor], int] = attrgetter("_version")


def profiler_enabled() -> bool:
    return torch._C._autograd._profiler_enabled()


def step_dtype() -> torch.dtype:
    """The dtype of ``state["step"]`` in torch's non-fused optimizers (float32, or float64
    under ``torch.set_default_dtype(torch.float64)``)."""
    return _get_scalar_dtype()


def check_fused(p: Tensor) -> None:
    """Raise torch's RuntimeError where ``fused=True`` cannot take ``p`` (e.g. complex)."""
    _device_dtype_check_for_fused(p)


def _listed(x: Tensor | list[Tensor]) -> list[Tensor]:
    return x if isinstance(x, list) else [x]


def fused_adam(theta: Tensor | list[Tensor], grad: Tensor | list[Tensor],
               exp_avg: Tensor | list[Tensor], exp_avg_sq: Tensor | list[Tensor],
               max_exp_avg_sq: Tensor | list[Tensor] | None = None, *, lr: float, beta1: float,
               beta2: float, eps: float, weight_decay: float, decoupled: bool, maximize: bool,
               step: Tensor, scratch: Tensor | None = None) -> None:
    """One Adam step by the kernel of ``torch.optim.Adam(fused=True)`` (AdamW's with
    ``decoupled``), called as the update rule is: for one θ, or for lists of tensors (each
    parameter's views) at the same t; ``step`` is t, already advanced.

    The kernel takes t and the hyperparameters as torch's Adam hands them, so every tensor
    comes out as torch's fused Adam leaves it, bit for bit. It must see the parameters one by
    one, never one flat buffer: it steps the last few elements of each tensor with scalar
    code, which rounds weight decay and the step differently from its vector body.
    ``scratch`` is unused (the kernel needs none).
    """
    thetas = _listed(theta)
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(thetas, _listed(grad), _listed(exp_avg), _listed(exp_avg_sq),
           [] if max_exp_avg_sq is None else _listed(max_exp_avg_sq), [step] * len(thetas),
           lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps,
           amsgrad=max_exp_avg_sq is not None, maximize=maximize)


def check_capturable(p: Tensor, foreach: bool) -> None:
    """``capturable=True`` without ``fused``: torch's AssertionError on the devices torch
    refuses (its foreach path names one device fewer); elsewhere a RuntimeError, since these
    optimizers read t on the host."""
    devices = _get_capturable_supported_devices(supports_xla=not foreach)
    if p.device.type not in devices:
        raise AssertionError(
            f"If capturable=True, params and state_steps must be on supported devices: {devices}."
        )
    raise RuntimeError("capturable=True is not implemented here (t is read on the host every "
                       "step); use torch.optim's optimizer for CUDA-graph capture")


def zero_grad_range(optimizer: Optimizer) -> str:
    """The profiler range torch opens around ``zero_grad`` (set by Optimizer.__init__)."""
    return optimizer._zero_grad_profile_name


def hooked_step(step: Callable[..., Any]) -> Callable[..., Any]:
    """torch.optim.Optimizer.profile_hook_step, minus its cost while nobody profiles.

    torch wraps every optimizer's ``step`` in a profiler range plus the step hooks. The
    range (``record_function``) builds its objects on every call even with no profiler
    running, a share of a small model's step worth saving. This runs the same hooks in the
    same order, and opens the same range only while a profiler is enabled. Marked
    ``hooked``, so that Optimizer._patch_step_function does not wrap it again.
    """

    def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self = args[0]
        for pre_hook in chain(
            _global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()
        ):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"{step} must return None or a tuple of (new_args, new_kwargs), "
                        f"but got {result}."
                    )
                args, kwargs = result
        out = step(*args, **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(
            self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()
        ):
            post_hook(self, args, kwargs)
        return out

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if profiler_enabled():
            with record_function(f"Optimizer.step#{type(args[0]).__name__}.step"):
                return call(args, kwargs)
        return call(args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper
