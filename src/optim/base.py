"""What the project's optimizers share: torch.optim's arguments, checks, state layout and step
semantics around an elementwise update rule, run on flat buckets or one tensor at a time.

A subclass names its rule (a function of one θ, its g and its state tensors, written once,
e.g. :func:`src.optim.adam.adam`), the state tensors it keeps, and the rule's keywords for a
group at step t. This class does the rest as ``torch.optim`` does it:

* a parameter whose ``p.grad`` is None is skipped: its t, state and θ stay as they are;
* state is created at a parameter's first gradient: ``"step"`` (a float CPU scalar, t = 0)
  and zeros for each state tensor;
* ``zero_grad()`` sets every gradient to None (``set_to_none=False``: zeroes it in place);
* complex parameters are stepped as pairs of reals (``torch.view_as_real``);
* ``foreach=`` and ``fused=`` choose the implementation (see :meth:`ElementwiseOptimizer.
  uses_flat`) and never the result; ``capturable=True`` fails where torch's fails on CPU,
  ``differentiable=True`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from numbers import Real
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.autograd.profiler import record_function
from torch.optim.optimizer import Optimizer, ParamsT

from src.optim.flat import FlatLayout, Rule
from src.optim.torch_private import (
    check_capturable,
    check_fused,
    hooked_step,
    profiler_enabled,
    set_grad_enabled,
    step_dtype,
    zero_all_,
    zero_grad_range,
)

__all__ = ["EPS_MODES", "ElementwiseOptimizer", "check_hyperparameters"]

EPS_MODES = ("paper", "keras")

# torch.optim's implementation flags, with torch's defaults: kept in every param group (and so in
# state_dict()) as torch keeps them, so state dicts interchange in both directions.
IMPLEMENTATION_DEFAULTS: dict[str, Any] = {
    "foreach": None, "capturable": False, "differentiable": False, "fused": None,
}

# What a group saved without these keys meant: torch.optim's behaviour (our defaults may differ).
_SAVED_WITHOUT: dict[str, Any] = {
    "eps_mode": "paper", "bias_correction": True, "amsgrad": False, "maximize": False,
    "decoupled_weight_decay": False, **IMPLEMENTATION_DEFAULTS,
}

Options = tuple[dict[str, Any], dict[str, Any]]


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def check_hyperparameters(group: dict[str, Any], *, tensor_rules: bool) -> None:
    """Raise ValueError as torch.optim.Adam does (its message first, then ours), per group.

    ``tensor_rules``: torch.optim.Adam's extra rules for tensor lr and betas (Adamax has none).
    """
    lr, betas, eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    foreach_no_capture = bool(group.get("foreach")) and not group.get("capturable")
    if isinstance(lr, Tensor):
        if tensor_rules and foreach_no_capture:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True")
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
    elif not _is_number(lr):
        raise ValueError(f"Invalid learning rate: {lr!r} (lr must be a number >= 0)")
    # `not x >= 0` (rather than `x < 0`) also rejects NaN.
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")
    if not _is_number(eps) or not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps} (eps must be a number >= 0)")
    # Any sequence, so an OmegaConf ListConfig straight from a Hydra config works.
    if (
        not isinstance(betas, Sequence)
        or isinstance(betas, str)
        or len(betas) != 2
        or not all(_is_number(b) or isinstance(b, Tensor) for b in betas)
    ):
        raise ValueError(f"Invalid betas: {betas!r} — must be a pair (beta1, beta2) of numbers")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} "
                             f"(beta{i + 1} (betas[{i}]) must be in [0, 1))")
    if not _is_number(weight_decay) or not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay} "
                         f"(weight_decay must be a number >= 0)")
    if tensor_rules:
        if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
            raise ValueError("betas must be either both floats or both Tensors")
        for i, beta in enumerate(betas):
            if isinstance(beta, Tensor):
                if foreach_no_capture:
                    raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                     "capturable=False and foreach=True")
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
    eps_mode = group["eps_mode"]
    if eps_mode not in EPS_MODES:
        raise ValueError(f"Invalid eps_mode: {eps_mode!r} — must be one of {EPS_MODES}")
    bias_correction = group["bias_correction"]
    if bias_correction is not True and bias_correction is not False:
        raise ValueError(f"Invalid bias_correction: {bias_correction!r} — must be a bool")


def _scalar(x: float | Tensor) -> float | Tensor:
    """A number as a float, a 1-element tensor as a 0-d one (torch's _to_scalar)."""
    if isinstance(x, Tensor):
        return x.squeeze() if x.dim() else x
    return float(x)


class ElementwiseOptimizer(Optimizer):
    """torch.optim.Optimizer for an elementwise rule, on flat buffers or per tensor.

    Subclasses set ``rule`` (the update function), ``sparse_message`` (torch's error for
    sparse gradients) and implement :meth:`state_keys`, :meth:`options` and
    :meth:`check_group`.

    Args (beyond the subclass's hyperparameters):
        flat: keep parameters and state in flat per-(group, device, dtype) buffers and step
            each buffer with the rule once (see src.optim.flat). False: one tensor at a time.
        compile: run the flat rule through ``torch.compile`` (one fused pass over θ, g and
            the state): None compiles it for buckets of at least 2**20 elements, True for
            every bucket, False never. Compiling costs seconds on the first call of a process
            (more with an empty inductor cache, which then lives on disk) and happens once per
            bucket size. Where it fails (e.g. no C++ compiler) a warning is issued once and
            the eager rule is used.
    """

    rule: ClassVar[Rule]
    sparse_message: ClassVar[str]

    def __init__(self, params: ParamsT, defaults: dict[str, Any], *, flat: bool,
                 compile: bool | None) -> None:
        if flat is not True and flat is not False:
            raise ValueError(f"Invalid flat: {flat!r} — must be a bool")
        if compile is not None and compile is not True and compile is not False:
            raise ValueError(f"Invalid compile: {compile!r} — must be None, True or False")
        # Checked here as well as per group so a bad default fails even when every group
        # overrides it, as in torch.
        self.check_group(defaults)
        defaults["betas"] = tuple(_scalar(b) for b in defaults["betas"])
        # Implementation choices of this instance, not hyperparameters: kept out of the param
        # groups, so neither state_dict() nor a loaded state dict carries them.
        self._flat = flat
        self._compile = compile
        self._layout = FlatLayout(type(self).__name__, compile)
        super().__init__(params, defaults)
        # torch's order: these come after the params were checked.
        if defaults.get("fused"):
            if defaults.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if defaults.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self._refuse_differentiable(defaults)

    # ------------------------------------------------------------- subclass hooks

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state tensors (besides "step") the rule keeps for this group, in its order."""
        raise NotImplementedError

    def options(self, group: dict[str, Any], t: float) -> Options:
        """The rule's keywords for this group at (new) step t: (static, values). Values are
        the numbers that may change between steps (compiled runs get them as 0-d tensors)."""
        raise NotImplementedError

    @classmethod
    def check_group(cls, group: dict[str, Any]) -> None:
        """Raise ValueError for invalid hyperparameters (torch's type and message)."""
        raise NotImplementedError

    def kernel(self, group: dict[str, Any]) -> tuple[Rule, Callable[[float], Options]] | None:
        """For ``fused=True``: torch's fused kernel for this group's update, as a rule with its
        options at step t, so that the results are torch's fused optimizer's bit for bit;
        None (the default, and where torch has no kernel for the group's options) runs the
        rule."""
        return None

    # ------------------------------------------------------------------ groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters first (torch only checks the defaults)."""
        if isinstance(param_group, dict):
            self.check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # A list or ListConfig (e.g. from Hydra) would otherwise end up in state_dict.
        group["betas"] = tuple(_scalar(b) for b in group["betas"])

    def uses_flat(self, group: dict[str, Any]) -> bool:
        """Flat buckets unless ``flat=False``, or the group asks for a torch implementation
        other than the fused one (``foreach=True/False`` or ``fused=False``)."""
        return self._flat and group.get("foreach") is None and group.get("fused") is not False

    @staticmethod
    def _refuse_differentiable(group: dict[str, Any]) -> None:
        if group.get("differentiable"):
            raise RuntimeError("differentiable=True is not supported: the update runs without "
                               "autograd; use torch.optim for differentiable optimizer steps")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_flat"], state["_compile"] = self._flat, self._compile
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Unpickled optimizers (and ones pickled before these options) start unplanned; a
        # loaded state dict (also through here) keeps the buckets, which take its values.
        self.__dict__.setdefault("_flat", True)
        self.__dict__.setdefault("_compile", None)
        self.__dict__.setdefault("_layout", FlatLayout(type(self).__name__, self._compile))
        # Groups saved by torch.optim lack our options (and older ones some of torch's): a key
        # missing from a loaded group means what it meant where it was saved.
        fill = {**self.defaults, **_SAVED_WITHOUT}
        for group in self.param_groups:
            for key in self.defaults:
                group.setdefault(key, fill[key])
            for p in group["params"]:
                p_state = self.state.get(p)
                if not p_state or "step" not in p_state:
                    continue
                step = p_state["step"]
                # torch's fused/capturable optimizers keep t on the param's device, and old
                # checkpoints store it as a number; t is read on the host every step here.
                if not torch.is_tensor(step) or step.device.type != "cpu":
                    p_state["step"] = torch.tensor(float(step), dtype=step_dtype())

    # ---------------------------------------------------------------- zero_grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch.optim.Optimizer.zero_grad; its profiler range only while one is enabled."""
        if profiler_enabled():
            with record_function(zero_grad_range(self)):
                self._zero_grad(set_to_none)
        else:
            self._zero_grad(set_to_none)

    def _zero_grad(self, set_to_none: bool) -> None:
        grads: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if grad.grad_fn is not None:
                    grad.detach_()
                else:
                    grad.requires_grad_(False)
                if grad.is_sparse:
                    grad.zero_()
                else:
                    grads.setdefault((grad.device, grad.dtype), []).append(grad)
        for same in grads.values():
            zero_all_(same)

    # --------------------------------------------------------------------- step

    @hooked_step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimisation step; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_was_enabled = torch.is_grad_enabled()
        set_grad_enabled(False)
        try:
            for index, group in enumerate(self.param_groups):
                self._step_group(index, group)
        finally:
            set_grad_enabled(grad_was_enabled)
        return loss

    def _step_group(self, index: int, group: dict[str, Any]) -> None:
        if group.get("differentiable"):
            self._refuse_differentiable(group)
        params = group["params"]
        if group.get("capturable") and not group.get("fused"):
            for p in params:
                if p.grad is not None:
                    check_capturable(p, foreach=bool(group.get("foreach")))
        keys = self.state_keys(group)
        ready, rest = ([], params)
        if self.uses_flat(group):
            ready, rest = self._layout.prepare(self.state, self.param_groups, index, keys)
        # Every check before any update, so that an error leaves the group as it was.
        tensors = self._init_tensors(group, rest, keys) if rest else []
        kernel = self.kernel(group) if group.get("fused") else None
        rule, options = kernel or (type(self).rule, partial(self.options, group))
        if ready:
            self._layout.run(ready, rule, options, kernel=kernel is not None)
        if tensors:
            self._step_tensors(tensors, rule, options)

    def _init_tensors(self, group: dict[str, Any], params: list[Tensor],
                      keys: tuple[str, ...]) -> list[tuple[Tensor, ...]]:
        """(θ, g, step, *state) of each param with a gradient, state created where new."""
        out: list[tuple[Tensor, ...]] = []
        for p in params:
            grad = p.grad
            if grad is None:
                # No g_t means no iteration for this θ: its t and state stay as they are.
                continue
            if grad.is_sparse:
                raise RuntimeError(self.sparse_message)
            state = self.state[p]
            if not state:
                if group.get("fused"):
                    check_fused(p)
                state["step"] = torch.tensor(0.0, dtype=step_dtype())
            for key in keys:
                if key not in state:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append((p, grad, state["step"], *(state[k] for k in keys)))
        return out

    @staticmethod
    def _step_tensors(tensors: list[tuple[Tensor, ...]], rule: Rule,
                      options: Callable[[float], Options]) -> None:
        """The per-tensor path: the rule once per parameter, with its own t."""
        by_t: dict[float, Options] = {}
        for p, grad, step, *state in tensors:
            step += 1  # t ← t + 1
            t = float(step)
            known = by_t.get(t)
            if known is None:
                known = by_t[t] = options(t)
            static, values = known
            if torch.is_complex(p):
                # As torch does: treat ℂ as ℝ², so g_t² is squared per real component.
                p, grad, *state = (torch.view_as_real(x) for x in (p, grad, *state))
            rule(p, grad, *state, scratch=None, **static, **values)
