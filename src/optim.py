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

Flat buffers (``flat=True``, the default)
-----------------------------------------
Adam's update is a handful of elementwise passes over θ, g, m and v, so on a CPU its
cost is the per-op overhead times the number of tensors, plus memory traffic. At the
first step, the parameters of each param group that have a gradient are therefore
laid out back to back, per (device, dtype), in four contiguous 1-D buffers (θ, g, m,
v): each parameter's storage is *re-pointed* (``p.data``) to a view of the flat θ
buffer, ``p.grad`` becomes a view of the flat g buffer, and ``state[p]["exp_avg"]`` /
``["exp_avg_sq"]`` are views of the flat m / v buffers (``state[p]["step"]`` is a 0-d
view of one small float32 buffer), so ``state_dict()`` still has per-parameter
tensors of torch's shapes and dtypes. A step is then a few ops on whole buffers
(:func:`_adam_flat`); buckets of ≥ 2**20 elements run it through ``torch.compile``,
which fuses it into one pass (see ``compile`` in :class:`Adam`).

What that costs:

* A parameter's storage is no longer its own: other tensors that shared it stop
  seeing its updates (parameters that visibly share or overlap storage, e.g. tied by
  ``.data`` assignment, are left out of the flat buffers for that reason), and saving
  one parameter alone with ``torch.save`` writes its whole bucket.
* :meth:`Adam.zero_grad` zeroes each bucket's gradient buffer in one op and keeps the
  ``p.grad`` views, so autograd accumulates into them in place: ``set_to_none`` is
  ignored for flattened parameters that require grad (frozen ones get None, as in
  torch). A parameter that then gets no gradient from ``backward()`` is updated with
  g_t = 0, where torch (whose default is ``set_to_none=True``) would skip it: models
  with parameters unused on some steps should call ``model.zero_grad(set_to_none=True)``
  instead (each new gradient is then copied into the buffer: one more pass per step),
  or pass ``flat=False``. Accumulating in place also costs ``backward()`` a
  read-modify-write where torch would adopt the new gradient tensor as is.
* Moving the model to another device after the first step is not supported (as with
  torch's fused Adam, whose state stays behind). A cast (``model.double()``) re-builds
  the buckets and casts the state along; torch would fail on the mixed dtypes instead.

The per-tensor path (:func:`_adam`, ``torch._foreach_*`` ops) still runs, and is
exact torch semantics, for: parameters without a gradient at the step that built
the buckets (they stay out of them), complex or non-contiguous parameters, and a
whole bucket on any step where one of its parameters has no gradient (skipped, as
torch skips it) or its step counters t differ (e.g. after that, or after loading a
state dict with unequal counters). Whatever replaced a view in between — a new
``p.grad`` tensor (e.g. after ``model.zero_grad(set_to_none=True)`` and
``backward()``), a new ``p.data``, a loaded optimizer state — is copied back into
the flat buffers at the next step and the views are restored, so the flat path
resumes as soon as the bucket's counters agree again. (So, unlike torch, a loaded
state dict's tensors are copied, never aliased, and a ``p.grad`` set by hand is
replaced by a view holding its values.)
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain
from numbers import Real
from operator import attrgetter, is_, itemgetter
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.autograd.profiler import record_function
from torch.optim.optimizer import (
    Optimizer,
    ParamsT,
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)

__all__ = ["Adam"]

_EPS_MODES = ("paper", "keras")

# Incrementing CPU scalar tensors by a Python number makes the foreach fallback wrap
# the number into a new tensor for every parameter; one shared tensor avoids that.
_ONE = torch.tensor(1.0)

# torch.optim.Adam options that change the update rule and that this class lacks;
# loading a state_dict that enables one of them would silently change the algorithm.
_UNSUPPORTED_TORCH_OPTIONS = ("amsgrad", "maximize", "decoupled_weight_decay")

# compile=None compiles the flat update of buckets at least this large: there one fused
# pass is ~3x faster than eager ops, while below it the step is too short to repay
# torch.compile's first-call cost (seconds; see Adam).
_AUTO_COMPILE_NUMEL = 1 << 20

_grad_of = attrgetter("grad")
_exp_avg_of = itemgetter("exp_avg")
_exp_avg_sq_of = itemgetter("exp_avg_sq")
_step_of = itemgetter("step")


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


def _step_scalars(
    t: float, *, lr: float, beta1: float, beta2: float, eps: float, eps_mode: str,
    bias_correction: bool,
) -> tuple[float, float]:
    """(-α_t, ε̂) for iteration t: Algorithm 1's bias corrections folded into two numbers.

    m̂_t = m_t/(1-β1^t) and v̂_t = v_t/(1-β2^t) are never materialised: following the
    efficient ordering of §2, the corrections are cheap Python floats from t, via
        α·m̂_t/(√v̂_t + ε) = α_t·m_t/(√v_t + ε̂),  α_t = α·√(1-β2^t)/(1-β1^t),
    with ε̂ = ε·√(1-β2^t) for the paper's ε and ε̂ = ε for Keras's. That saves two
    passes and two temporaries over computing m̂_t and v̂_t, and one pass over torch's
    Adam, which still divides √v_t by √(1-β2^t).
    """
    if bias_correction:
        bias_correction1 = 1.0 - beta1**t
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)
    else:
        bias_correction1 = bias_correction2_sqrt = 1.0
    # Negated so the update is a single in-place addcdiv.
    neg_step_size = -lr * bias_correction2_sqrt / bias_correction1
    eps_hat = eps * bias_correction2_sqrt if eps_mode == "paper" else eps
    return neg_step_size, eps_hat


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

    # m̂_t, v̂_t: folded into α_t and ε̂, one pair per tensor (each has its own t).
    step_sizes: list[float] = []
    eps_hats: list[float] = []
    for t in (step.item() for step in steps):
        neg_step_size, eps_hat = _step_scalars(
            t, lr=lr, beta1=beta1, beta2=beta2, eps=eps, eps_mode=eps_mode,
            bias_correction=bias_correction,
        )
        step_sizes.append(neg_step_size)
        eps_hats.append(eps_hat)

    # θ_t ← θ_{t-1} - α_t·m_t/(√v_t + ε̂). The denominator is the one temporary
    # the update cannot avoid, since v_t must survive for the next step.
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps_hats)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


def _adam_flat(
    theta: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    denom: Tensor | None,
    one_minus_beta1: float | Tensor,
    beta2: float | Tensor,
    one_minus_beta2: float | Tensor,
    weight_decay: float | Tensor | None,
    neg_step_size: float | Tensor,
    eps_hat: float | Tensor,
) -> None:
    """Algorithm 1's loop body for one flat bucket (θ, g, m, v: 1-D, same dtype).

    The caller has advanced t and computed -α_t and ε̂ (:func:`_step_scalars`). Scalars
    are Python floats when run eagerly, and 0-d tensors when compiled, so that new values
    (every step, for α_t and ε̂) do not trigger recompilation. ``denom`` is an optional
    scratch buffer for √v_t: reusing it spares the allocator (and, for big buckets, the
    page faults of a fresh mapping) every step.
    """
    # g_t ← ∇θ f_t(θ_{t-1}), plus L2 weight decay λ·θ_{t-1} as in torch.optim.Adam;
    # out of place so that p.grad stays the gradient.
    g = grad
    if weight_decay is not None:
        if isinstance(weight_decay, Tensor):
            g = g + weight_decay * theta
        else:
            g = g.add(theta, alpha=weight_decay)

    # m_t ← β1·m_{t-1} + (1-β1)·g_t — lerp is the same convex combination in one pass
    # (spelt out when compiled: lerp with a tensor weight keeps both of its formulas).
    if isinstance(one_minus_beta1, Tensor):
        exp_avg.add_((g - exp_avg) * one_minus_beta1)
    else:
        exp_avg.lerp_(g, one_minus_beta1)

    # v_t ← β2·v_{t-1} + (1-β2)·g_t²
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)

    # m̂_t ← m_t/(1-β1^t),  v̂_t ← v_t/(1-β2^t),  θ_t ← θ_{t-1} - α·m̂_t/(√v̂_t + ε),
    # evaluated as θ_{t-1} - α_t·m_t/(√v_t + ε̂) (see _step_scalars).
    denom = exp_avg_sq.sqrt() if denom is None else torch.sqrt(exp_avg_sq, out=denom)
    theta.addcdiv_(exp_avg, denom.add_(eps_hat), value=neg_step_size)


# torch.compile(_adam_flat), made on first use; None also while compiling is broken.
_compiled_adam_flat: Callable[..., None] | None = None
_compile_failed = False


def _run_compiled(bucket: _FlatBucket, scalars: tuple[float, ...], has_decay: bool) -> bool:
    """Run the bucket's update through torch.compile; False (after one warning per
    process) where compiling does not work here, for the caller to run it eagerly."""
    global _compiled_adam_flat, _compile_failed
    if _compile_failed:
        return False
    theta = bucket.param
    # One tensor for all six scalars (one allocation per step), at the precision eager
    # kernels use for scalars: the bucket's, but float32 for 16-bit floats (ε would vanish).
    dtype = torch.float32 if theta.element_size() < 4 else theta.dtype
    values = torch.tensor(scalars, dtype=dtype, device=theta.device).unbind()
    one_minus_beta1, beta2, one_minus_beta2, weight_decay, neg_step_size, eps_hat = values
    try:
        if _compiled_adam_flat is None:
            # Static shapes: one graph per bucket size, and sizes never change.
            _compiled_adam_flat = torch.compile(_adam_flat, dynamic=False)
        _compiled_adam_flat(
            theta, bucket.grad, bucket.exp_avg, bucket.exp_avg_sq, None,
            one_minus_beta1, beta2, one_minus_beta2, weight_decay if has_decay else None,
            neg_step_size, eps_hat,
        )
    except Exception as exc:
        if bucket.compiled:
            raise  # it ran before, so this is no compiler problem; and θ may be half updated
        _compile_failed = True
        warnings.warn(
            f"Adam: torch.compile of the flat update failed ({type(exc).__name__}: "
            f"{str(exc)[:300]}); using the eager update from now on",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    bucket.compiled = True
    return True


def _hooked_step(step: Callable[..., Any]) -> Callable[..., Any]:
    """torch.optim.Optimizer.profile_hook_step, minus its cost while nobody profiles.

    torch wraps every optimizer's ``step`` in a profiler range plus the step hooks. The
    range (``record_function``) costs ~25 µs a call on this CPU even with no profiler
    running: a fifth of a whole flat step of the blog MLP. This runs the same hooks in
    the same order, and opens the same range only while a profiler is enabled. Marked
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
        if torch._C._autograd._profiler_enabled():
            with record_function(f"Optimizer.step#{type(args[0]).__name__}.step"):
                return call(args, kwargs)
        return call(args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


class _FlatBucket:
    """Parameters of one group, device and dtype, stored back to back in flat buffers.

    ``param``, ``grad``, ``exp_avg`` and ``exp_avg_sq`` are 1-D buffers and
    ``param_views[i]``, ``grads[i]``, ``exp_avgs[i]`` and ``exp_avg_sqs[i]`` the views of
    ``params[i]``'s slice, shaped like it; ``steps[i]`` is the 0-d view ``step[i]``.
    ``states[i]`` is the state dict that holds the views, and ``t`` the common step
    counter while a flat step is known to be valid (None: check with ``_sync_bucket``).
    """

    __slots__ = (
        "params", "param", "grad", "exp_avg", "exp_avg_sq", "step", "param_views", "ptrs",
        "grads", "exp_avgs", "exp_avg_sqs", "steps", "states", "state_ref", "t", "denom",
        "use_compile", "compiled",
    )

    def __init__(self, params: list[Tensor], use_compile: bool) -> None:
        numels = [p.numel() for p in params]
        like = {"dtype": params[0].dtype, "device": params[0].device}
        self.params = params
        self.param = torch.empty(sum(numels), **like)
        self.grad = torch.zeros_like(self.param)
        self.exp_avg = torch.zeros_like(self.param)
        self.exp_avg_sq = torch.zeros_like(self.param)
        # Like torch's "step": a float32 CPU scalar per parameter (here, views).
        self.step = torch.zeros(len(params), dtype=torch.float32)

        def views(flat: Tensor) -> list[Tensor]:
            return [v.view_as(p) for v, p in zip(flat.split(numels), params, strict=True)]

        self.param_views = views(self.param)
        self.ptrs = [v.data_ptr() for v in self.param_views]
        self.grads = views(self.grad)
        self.exp_avgs = views(self.exp_avg)
        self.exp_avg_sqs = views(self.exp_avg_sq)
        self.steps = list(self.step.unbind())
        self.states: list[dict[str, Any] | None] = [None] * len(params)
        self.state_ref: object = None
        self.t: float | None = None
        self.denom: Tensor | None = None
        self.use_compile = use_compile
        self.compiled = False


class _GroupPlan:
    """How one param group is stepped: ``buckets`` flat, ``loose`` per tensor."""

    __slots__ = ("params", "members", "buckets", "loose")

    def __init__(self, params: list[Tensor], buckets: list[_FlatBucket], loose: list[Tensor]):
        self.params = params  # the group's list object, and its contents when planned
        self.members = tuple(params)
        self.buckets = buckets
        self.loose = loose

    def fits(self, params: list[Tensor]) -> bool:
        return (
            params is self.params
            and len(params) == len(self.members)
            and all(map(is_, params, self.members))
        )


class _Replan(Exception):
    """A flattened parameter changed shape, dtype or device: rebuild the group's plan."""


def _storage_key(p: Tensor) -> tuple[torch.device, int]:
    return p.device, p.untyped_storage().data_ptr()


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
        flat: keep parameters, gradients and state in flat per-(group, device, dtype)
            buffers and update each buffer with a few whole-buffer ops (see the module
            docstring for what that changes). False: the per-tensor foreach update.
        compile: run the flat update through ``torch.compile`` (one fused pass over θ,
            g, m and v): None compiles it for buckets of at least 2**20 elements, True
            for every bucket, False never. Compiling costs seconds on the first call of
            a process (about 15 s with an empty inductor cache, which then lives on
            disk, and about 1 s warm) and happens once per bucket size. Where it fails
            (e.g. no C++ compiler) a warning is issued once and the eager update is used.

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
        *,
        flat: bool = True,
        compile: bool | None = None,
    ) -> None:
        if flat is not True and flat is not False:
            raise ValueError(f"Invalid flat: {flat!r} — must be a bool")
        if compile is not None and compile is not True and compile is not False:
            raise ValueError(f"Invalid compile: {compile!r} — must be None, True or False")
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
        # Implementation choices of this instance, not hyperparameters: kept out of the
        # param groups, so neither state_dict() nor a loaded state dict carries them.
        self._flat = flat
        self._compile = compile
        self._plans: list[_GroupPlan | None] = []
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
        """Load a state dict from this class or from ``torch.optim.Adam``.

        With flat buffers the loaded tensors are copied into them at the next step.
        """
        for group in state_dict["param_groups"]:
            enabled = [k for k in _UNSUPPORTED_TORCH_OPTIONS if group.get(k)]
            if enabled:
                raise ValueError(f"Cannot load a state dict that enables {enabled}")
        super().load_state_dict(state_dict)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_flat"], state["_compile"] = self._flat, self._compile
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Unpickled optimizers (and ones pickled before these options) start unplanned.
        self.__dict__.setdefault("_flat", True)
        self.__dict__.setdefault("_compile", None)
        self.__dict__.setdefault("_plans", [])
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

    # ------------------------------------------------------------------ zero_grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients; for flattened parameters, zero their buffer in place.

        ``set_to_none`` is ignored for parameters in flat buffers that require grad:
        their ``p.grad`` stays a (zeroed) view of the bucket's gradient buffer, so that
        ``backward()`` accumulates into it in place and the next step needs no copy.
        Setting those grads to None would make autograd allocate fresh gradients and
        the step copy them back. See the module docstring for the consequence.
        """
        if not self._flat:
            super().zero_grad(set_to_none)
        elif torch._C._autograd._profiler_enabled():
            with record_function(self._zero_grad_profile_name):
                self._flat_zero_grad(set_to_none)
        else:
            self._flat_zero_grad(set_to_none)

    def _flat_zero_grad(self, set_to_none: bool) -> None:
        rest: list[Tensor] = []
        for index, group in enumerate(self.param_groups):
            plan = self._plans[index] if index < len(self._plans) else None
            if plan is None or not plan.fits(group["params"]):
                rest.extend(group["params"])
                continue
            rest.extend(plan.loose)
            for bucket in plan.buckets:
                bucket.grad.zero_()
                for p, grad in zip(bucket.params, bucket.grads, strict=True):
                    if p.grad is not grad or not p.requires_grad:
                        rest.append(p)
        # torch.optim.Optimizer.zero_grad for everything else.
        for p in rest:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    # ----------------------------------------------------------------------- step

    @_hooked_step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimisation step; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # What @torch.no_grad() does, without its context-manager objects (~8 µs a step).
        grad_was_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            for index, group in enumerate(self.param_groups):
                rest = self._flat_step(index, group) if self._flat else group["params"]
                if rest:
                    self._foreach_step(group, rest)
        finally:
            torch._C._set_grad_enabled(grad_was_enabled)
        return loss

    def _foreach_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The per-tensor path: Algorithm 1 with foreach ops over ``params``."""
        # foreach kernels want homogeneous lists, so bucket by (device, dtype).
        buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], ...]] = {}
        for p in params:
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
        for params_, grads, exp_avgs, exp_avg_sqs, steps in buckets.values():
            _adam(
                params_,
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

    # ---------------------------------------------------------------- flat buffers

    def _flat_step(self, index: int, group: dict[str, Any]) -> list[Tensor]:
        """Step the group's flat buckets that can be; return the params left to
        :meth:`_foreach_step`."""
        params = group["params"]
        plan = self._plans[index] if index < len(self._plans) else None
        if plan is None or not plan.fits(params):
            plan = self._make_plan(index, params)
            if plan is None:
                return params
        # Check (and repair) every bucket before updating any, so that an error or a
        # replan leaves the group untouched, as torch's step would.
        for attempt in range(2):
            try:
                ready = [b for b in plan.buckets if self._bucket_ready(b) or self._sync_bucket(b)]
                break
            except _Replan:
                if attempt:
                    raise
                plan = self._make_plan(index, params)
                if plan is None:
                    return params
        rest = list(plan.loose)
        for p in plan.loose:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(
                    "Adam does not support sparse gradients; use torch.optim.SparseAdam"
                )
        for bucket in plan.buckets:
            if bucket.t is None:
                rest.extend(bucket.params)

        beta1, beta2 = group["betas"]
        weight_decay = float(group["weight_decay"])
        for bucket in ready:
            # t ← t + 1 (the same t for every parameter of the bucket)
            t = bucket.t + 1.0
            neg_step_size, eps_hat = _step_scalars(
                t, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                eps_mode=group["eps_mode"], bias_correction=group["bias_correction"],
            )
            scalars = (1.0 - beta1, beta2, 1.0 - beta2, weight_decay, neg_step_size, eps_hat)
            if not (bucket.use_compile and _run_compiled(bucket, scalars, weight_decay != 0.0)):
                if bucket.denom is None:
                    bucket.denom = torch.empty_like(bucket.param)
                _adam_flat(
                    bucket.param, bucket.grad, bucket.exp_avg, bucket.exp_avg_sq, bucket.denom,
                    1.0 - beta1, beta2, 1.0 - beta2, weight_decay or None, neg_step_size, eps_hat,
                )
            # θ changed behind the parameters' backs (through the flat buffer): bump
            # their autograd version counters, as an in-place op on them would.
            increment_version(bucket.params)
            bucket.step.add_(1.0)
            bucket.t = t
        return rest

    def _make_plan(self, index: int, params: list[Tensor]) -> _GroupPlan | None:
        """Bucket the group's flattenable params; None (nothing planned yet) while no
        param of the group has a gradient."""
        plans = self._plans
        while len(plans) <= index:
            plans.append(None)
        # Storage of our own buckets (a new plan re-flattens params that live there) ...
        ours = {
            _storage_key(b.param) for plan in plans if plan is not None for b in plan.buckets
        }
        # ... and storage shared between params (tied by .data, say): never re-pointed.
        shared = Counter(
            _storage_key(p)
            for g in self.param_groups
            for p in g["params"]
            if p.layout == torch.strided and not p.is_meta and p.numel()
        )
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        loose: list[Tensor] = []
        for p in params:
            grad = p.grad
            eligible = (
                grad is not None
                and grad.layout == torch.strided
                and p.layout == torch.strided
                and not p.is_meta
                and p.dtype.is_floating_point
                and p.numel() > 0
                and p.is_contiguous()
            )
            if eligible:
                key = _storage_key(p)
                owns_storage = (
                    p.storage_offset() == 0
                    and p.untyped_storage().nbytes() == p.numel() * p.element_size()
                    and shared[key] == 1
                )
                eligible = owns_storage or key in ours
            if eligible:
                groups.setdefault((p.device, p.dtype), []).append(p)
            else:
                loose.append(p)
        if not groups and all(p.grad is None for p in params):
            plans[index] = None
            return None
        buckets = []
        for members in groups.values():
            numel = sum(p.numel() for p in members)
            use_compile = self._compile is True or (
                self._compile is None and numel >= _AUTO_COMPILE_NUMEL
            )
            buckets.append(_FlatBucket(members, use_compile))
        plan = plans[index] = _GroupPlan(params, buckets, loose)
        return plan

    def _bucket_ready(self, b: _FlatBucket) -> bool:
        """Cheap check that every view is still in place and the counters agree."""
        state = self.state
        states = b.states
        return (
            b.t is not None
            and b.state_ref is state
            and all(map(is_, map(_grad_of, b.params), b.grads))
            and list(map(Tensor.data_ptr, b.params)) == b.ptrs
            and all(map(is_, map(state.get, b.params), states))
            and all(map(is_, map(_exp_avg_of, states), b.exp_avgs))
            and all(map(is_, map(_exp_avg_sq_of, states), b.exp_avg_sqs))
            and all(map(is_, map(_step_of, states), b.steps))
        )

    def _sync_bucket(self, b: _FlatBucket) -> bool:
        """Copy whatever replaced a view (of θ, g or the state) into the flat buffers and
        restore the view; return whether the whole bucket can take a flat step now.

        Raises ``_Replan`` if a parameter no longer fits its slot.
        """
        state = self.state
        all_have_grads = True
        for i, p in enumerate(b.params):
            view = b.param_views[i]
            if p.data_ptr() != b.ptrs[i]:
                if (
                    p.shape != view.shape
                    or p.dtype != view.dtype
                    or p.device != view.device
                    or not p.is_contiguous()
                ):
                    raise _Replan
                view.copy_(p)
                p.data = view
            grad = p.grad
            if grad is None:
                all_have_grads = False  # torch skips this θ this step; so must we
            elif grad is not b.grads[i]:
                if grad.is_sparse:
                    raise RuntimeError(
                        "Adam does not support sparse gradients; use torch.optim.SparseAdam"
                    )
                b.grads[i].copy_(grad)
                p.grad = b.grads[i]
            p_state = state.get(p)
            if not p_state:
                if grad is None:
                    b.states[i] = None  # no g_t yet: no state yet, as in torch
                    continue
                # Algorithm 1: m_0 ← 0, v_0 ← 0, t ← 0.
                p_state = state[p]
                b.exp_avgs[i].zero_()
                b.exp_avg_sqs[i].zero_()
                b.steps[i].zero_()
            else:
                for key, views in (("exp_avg", b.exp_avgs), ("exp_avg_sq", b.exp_avg_sqs)):
                    loaded = p_state[key]
                    if loaded is not views[i]:
                        if loaded.shape != view.shape:
                            raise RuntimeError(
                                f"Adam state {key!r} has shape {tuple(loaded.shape)} but its "
                                f"parameter has shape {tuple(view.shape)}"
                            )
                        views[i].copy_(loaded)
                if p_state["step"] is not b.steps[i]:
                    b.steps[i].fill_(float(p_state["step"]))
            p_state["step"] = b.steps[i]
            p_state["exp_avg"] = b.exp_avgs[i]
            p_state["exp_avg_sq"] = b.exp_avg_sqs[i]
            b.states[i] = p_state
        b.state_ref = state
        steps = b.step.tolist()
        if not all_have_grads or min(steps) != max(steps):
            b.t = None
            return False
        b.t = steps[0]
        return True
