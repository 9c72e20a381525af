"""The flat-buffer layout of an elementwise optimizer: plans, buckets, views, syncing, and the
compiled runner. It knows no optimizer's maths: it runs whatever update rule it is handed.

An elementwise rule (Adam's, AdaMax's: element i of θ moves using element i of g and of the
state only) costs, on a CPU, per-op overhead times the number of tensors plus memory traffic.
So at the first step, the parameters of each param group that have a gradient are laid out
back to back, per (device, dtype), in contiguous 1-D buffers, one per role: θ, g, and each
state tensor the rule keeps (Adam: m, v and, with AMSGrad, v_max). Each parameter's storage
is *re-pointed* (``p.data``) to a view of the flat θ buffer, and ``state[p][key]`` are views
of the flat state buffers (``state[p]["step"]`` a 0-d view of one small buffer), so
``state_dict()`` still has per-parameter tensors of torch's shapes and dtypes. A step is then
the rule called once per bucket on whole buffers; buckets of >= 2**20 elements run it through
``torch.compile``, which fuses it into one pass. A torch multi-tensor kernel asked for instead
(Adam's ``fused=True``) gets the bucket's per-parameter views, in one call.

Gradients stay the user's. ``p.grad`` is never re-pointed, written into or replaced: at a step,
each parameter's gradient is copied into the bucket's own gradient buffer (one pass), unless it
is the very tensor copied at an earlier step and its version counter says it has not changed
since (autograd and every in-place op bump it, so ``backward()`` and ``zero_grad()`` always
make the next step copy again).

A bucket takes a flat step only when all of its parameters have a gradient and share one step
counter t. Otherwise (a parameter got no gradient, a layer was frozen, state loaded with unequal
counters) the caller steps its parameters one tensor at a time, which is exact: the views are
the state, so nothing needs copying back, and the bucket goes flat again as soon as its
counters agree. Whatever replaced a view in between (a new ``p.data``, a loaded state dict's
tensors) is copied into the flat buffers at the next step and the views are restored.

What the layout costs:

* A parameter's storage is no longer its own: other tensors that shared it stop seeing its
  updates (parameters that visibly share or overlap storage, e.g. tied by ``.data``
  assignment, are left out of the buckets for that reason), and saving one parameter alone
  with ``torch.save`` writes its whole bucket.
* A loaded state dict's tensors are copied into the buffers, never aliased.
* Moving the model to another device after the first step is not supported (as with torch's
  fused Adam, whose state stays behind). A cast (``model.double()``) rebuilds the buckets and
  casts the state along.
"""

from __future__ import annotations

import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import attrgetter, is_, itemgetter
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from src.optim.torch_private import copy_all_, step_dtype, version

__all__ = ["AUTO_COMPILE_NUMEL", "Bucket", "FlatLayout", "GroupPlan", "Rule"]

# An update rule: rule(θ, g, *state, scratch=..., **options) changes θ and the state in place,
# elementwise. `scratch` is a free buffer shaped like θ, or None.
Rule = Callable[..., None]

# compile=None compiles the rule for buckets at least this large: there one fused pass is much
# faster than eager ops, while below it the step is too short to repay torch.compile's
# first-call cost (seconds).
AUTO_COMPILE_NUMEL = 1 << 20


_grad_of = attrgetter("grad")


def _nothing() -> None:
    """The weak reference of a gradient never copied: dead from the start."""


class Bucket:
    """Parameters of one group, device and dtype, stored back to back in flat buffers.

    ``param``, ``grad`` and ``states[k]`` are 1-D buffers (``states`` in the order of the
    state ``keys``); ``param_views[i]``, ``grad_views[i]`` and ``state_views[k][i]`` are
    the views of ``params[i]``'s slice, shaped like it; ``steps[i]`` is the 0-d view
    ``step[i]``. ``dicts[i]`` is the state dict that holds the views, and ``t`` the common
    step counter while a flat step is known to be valid (None: check with ``_sync``).
    """

    __slots__ = (
        "params", "keys", "param", "grad", "states", "step", "param_views", "ptrs", "grad_views",
        "state_views", "steps", "getters", "dicts", "state_ref", "t", "step_version", "seen_refs",
        "seen_versions", "scratch", "use_compile", "compiled",
    )

    def __init__(self, params: list[Tensor], keys: tuple[str, ...], use_compile: bool) -> None:
        numels = [p.numel() for p in params]
        like = {"dtype": params[0].dtype, "device": params[0].device}
        self.params = params
        self.keys = keys
        self.param = torch.empty(sum(numels), **like)
        self.grad = torch.zeros_like(self.param)
        self.states = tuple(torch.zeros_like(self.param) for _ in keys)
        # Like torch's "step": a float CPU scalar per parameter (here, views of one buffer).
        self.step = torch.zeros(len(params), dtype=step_dtype())

        def views(flat: Tensor) -> list[Tensor]:
            return [v.view_as(p) for v, p in zip(flat.split(numels), params, strict=True)]

        self.param_views = views(self.param)
        self.ptrs = [v.data_ptr() for v in self.param_views]
        self.grad_views = views(self.grad)
        self.state_views = tuple(views(s) for s in self.states)
        self.steps = list(self.step.unbind())
        # (state[p][key] getter, the views it must return) for "step" and each key.
        self.getters = [(itemgetter("step"), self.steps)] + [
            (itemgetter(k), views) for k, views in zip(keys, self.state_views, strict=True)]
        self.dicts: list[dict[str, Any] | None] = [None] * len(params)
        self.state_ref: object = None
        self.t: float | None = None
        self.step_version = -1
        # Per parameter: the gradient last copied into `grad` (weakly) and its version then.
        self.seen_refs: list[Callable[[], Tensor | None]] = [_nothing] * len(params)
        self.seen_versions: list[int] = [-1] * len(params)
        self.scratch: Tensor | None = None
        self.use_compile = use_compile
        self.compiled = False


class GroupPlan:
    """How one param group is laid out: ``buckets`` flat, ``loose`` stepped per tensor."""

    __slots__ = ("params", "members", "keys", "buckets", "loose")

    def __init__(self, params: list[Tensor], keys: tuple[str, ...], buckets: list[Bucket],
                 loose: list[Tensor]) -> None:
        self.params = params  # the group's list object, and its contents when planned
        self.members = tuple(params)
        self.keys = keys
        self.buckets = buckets
        self.loose = loose

    def fits(self, params: list[Tensor], keys: tuple[str, ...]) -> bool:
        return (
            params is self.params
            and keys == self.keys
            and len(params) == len(self.members)
            and all(map(is_, params, self.members))
        )


class _Replan(Exception):
    """A flattened parameter changed shape, dtype or device: rebuild the group's plan."""


def _storage_key(p: Tensor) -> tuple[torch.device, int]:
    return p.device, p.untyped_storage().data_ptr()


class FlatLayout:
    """The flat buckets of one optimizer, a plan per param group (by index).

    ``owner`` names the optimizer in warnings; ``compile`` is None (compile buckets of at least
    AUTO_COMPILE_NUMEL elements), True (every bucket) or False (never).
    """

    def __init__(self, owner: str, compile: bool | None) -> None:
        self.owner = owner
        self.compile = compile
        self.plans: list[GroupPlan | None] = []

    # ----------------------------------------------------------------------- a step

    def prepare(self, state: dict[Tensor, Any], param_groups: list[dict[str, Any]], index: int,
                keys: tuple[str, ...]) -> tuple[list[Bucket], list[Tensor]]:
        """For group ``index``, whose rule keeps the state tensors ``keys``: the buckets that
        take a flat step now (gradients already copied in), and the params left to the
        per-tensor path. Checks and repairs every bucket before the caller updates any, so
        that an error or a replan leaves the group untouched."""
        params = param_groups[index]["params"]
        plan = self._plan_of(index)
        if plan is None or not plan.fits(params, keys):
            plan = self._make_plan(param_groups, index, keys)
            if plan is None:
                return [], params
        for attempt in range(2):
            try:
                ready = [b for b in plan.buckets if self._ready(b, state)]
                break
            except _Replan:
                if attempt:
                    raise
                plan = self._make_plan(param_groups, index, keys)
                if plan is None:
                    return [], params
        rest = list(plan.loose)
        for bucket in plan.buckets:
            if bucket.t is None:
                rest.extend(bucket.params)
        return ready, rest

    def run(self, ready: Sequence[Bucket], rule: Rule,
            options: Callable[[float], tuple[dict[str, Any], dict[str, Any]]], *,
            kernel: bool) -> None:
        """Step each ready bucket: ``options(t)`` gives the rule's (static, values) keywords
        for the bucket's new t; values become 0-d tensors when compiled, so that new values
        (every step, for a bias-corrected step size) do not recompile. ``kernel``: the rule
        is a fused multi-tensor kernel (torch's): it gets the lists of per-parameter views,
        torch's foreach convention, so it sees each parameter as it would in torch's
        optimizer (its results can depend on where a tensor ends), and is neither compiled
        nor given a scratch buffer."""
        for bucket in ready:
            t = bucket.t + 1.0  # t ← t + 1, the same t for every parameter of the bucket
            static, values = options(t)
            if kernel:
                rule(bucket.param_views, bucket.grad_views, *bucket.state_views, **static,
                     **values)
            elif not (bucket.use_compile and self._run_compiled(bucket, rule, static, values)):
                if bucket.scratch is None:
                    bucket.scratch = torch.empty_like(bucket.param)
                rule(bucket.param, bucket.grad, *bucket.states, scratch=bucket.scratch,
                     **static, **values)
            # θ changed behind the parameters' backs (through the flat buffer): bump their
            # autograd version counters, as an in-place op on them would.
            increment_version(bucket.params)
            bucket.step.add_(1.0)
            bucket.t = t
            bucket.step_version = version(bucket.step)

    # ------------------------------------------------------------------- planning

    def _plan_of(self, index: int) -> GroupPlan | None:
        return self.plans[index] if index < len(self.plans) else None

    def _make_plan(self, param_groups: list[dict[str, Any]], index: int,
                   keys: tuple[str, ...]) -> GroupPlan | None:
        """Bucket the group's flattenable params; None (nothing planned yet) while no param
        of the group has a gradient."""
        params = param_groups[index]["params"]
        plans = self.plans
        while len(plans) <= index:
            plans.append(None)
        # Storage of our own buckets (a new plan re-flattens params that live there) ...
        ours = {_storage_key(b.param) for plan in plans if plan is not None for b in plan.buckets}
        # ... and storage shared between params (tied by .data, say): never re-pointed.
        shared = Counter(
            _storage_key(p)
            for group in param_groups
            for p in group["params"]
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
            use_compile = self.compile is True or (
                self.compile is None and numel >= AUTO_COMPILE_NUMEL
            )
            buckets.append(Bucket(members, keys, use_compile))
        plan = plans[index] = GroupPlan(params, keys, buckets, loose)
        return plan

    # -------------------------------------------------------------- readiness

    def _ready(self, b: Bucket, state: dict[Tensor, Any]) -> bool:
        """Whether the bucket can take a flat step now; copies fresh gradients in."""
        if not self._intact(b, state):
            self._sync(b, state)
        if b.t is None or not self._gather_grads(b):
            b.t = None
            return False
        return True

    @staticmethod
    def _intact(b: Bucket, state: dict[Tensor, Any]) -> bool:
        """Cheap check that every view is still in place and t is known."""
        dicts = b.dicts
        try:
            return (
                b.t is not None
                and b.state_ref is state
                and version(b.step) == b.step_version
                and list(map(Tensor.data_ptr, b.params)) == b.ptrs
                and all(map(is_, map(state.get, b.params), dicts))
                and all([all(map(is_, map(get, dicts), views)) for get, views in b.getters])
            )
        except KeyError:  # a state dict lost one of its tensors
            return False

    @staticmethod
    def _gather_grads(b: Bucket) -> bool:
        """Copy each fresh gradient into the bucket's gradient buffer (one op for all);
        False, copying nothing, if a parameter has no dense gradient."""
        grads = list(map(_grad_of, b.params))
        seen = [ref() for ref in b.seen_refs]
        if (all(map(is_, grads, seen)) and not any(map(is_, seen, repeat(None)))
                and list(map(version, grads)) == b.seen_versions):
            return True  # the very tensors copied last time, unchanged since
        for grad in grads:
            if grad is None or grad.layout != torch.strided:
                return False
        fresh = [i for i, (grad, ref, seen) in
                 enumerate(zip(grads, b.seen_refs, b.seen_versions, strict=True))
                 if ref() is not grad or version(grad) != seen]
        copy_all_([b.grad_views[i] for i in fresh], [grads[i] for i in fresh])
        for i in fresh:
            b.seen_refs[i] = weakref.ref(grads[i])
            b.seen_versions[i] = version(grads[i])
        return True

    def _sync(self, b: Bucket, state: dict[Tensor, Any]) -> None:
        """Copy whatever replaced a view (of θ or the state) into the flat buffers, restore
        the views, and set ``b.t`` to the common step counter (None if the counters differ
        or a parameter has no state yet and no gradient).

        Raises ``_Replan`` if a parameter no longer fits its slot.
        """
        keys = b.keys
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
            p_state = state.get(p)
            if not p_state:
                if p.grad is None:
                    b.dicts[i] = None  # no g_t yet: no state yet, as in torch
                    continue
                p_state = state[p]  # a fresh state: zeros and t = 0
                for views in b.state_views:
                    views[i].zero_()
                b.steps[i].zero_()
            else:
                for key, views in zip(keys, b.state_views, strict=True):
                    loaded = p_state.get(key)
                    if loaded is None:
                        views[i].zero_()  # a state tensor the rule only now keeps
                    elif loaded is not views[i]:
                        if loaded.shape != view.shape:
                            raise RuntimeError(
                                f"{self.owner} state {key!r} has shape {tuple(loaded.shape)} "
                                f"but its parameter has shape {tuple(view.shape)}"
                            )
                        views[i].copy_(loaded)
                if p_state["step"] is not b.steps[i]:
                    b.steps[i].fill_(float(p_state["step"]))
            p_state["step"] = b.steps[i]
            for key, views in zip(keys, b.state_views, strict=True):
                p_state[key] = views[i]
            b.dicts[i] = p_state
        b.state_ref = state
        b.step_version = version(b.step)
        steps = b.step.tolist()
        if any(d is None for d in b.dicts) or min(steps) != max(steps):
            b.t = None
        else:
            b.t = steps[0]

    # ------------------------------------------------------------ compiled runner

    def _run_compiled(self, bucket: Bucket, rule: Rule, static: dict[str, Any],
                      values: dict[str, float]) -> bool:
        """Run the rule on the bucket through torch.compile; False (after one warning per
        process) where compiling does not work here, for the caller to run it eagerly."""
        if _compiler.failed:
            return False
        theta = bucket.param
        # One tensor for all values (one allocation per step), at the precision eager
        # kernels use for scalars: the bucket's, but float32 for 16-bit floats (ε would vanish).
        dtype = torch.float32 if theta.element_size() < 4 else theta.dtype
        names = list(values)
        scalars = torch.tensor([values[n] for n in names], dtype=dtype, device=theta.device)
        try:
            _compiler.get(rule)(theta, bucket.grad, *bucket.states, scratch=None, **static,
                                **dict(zip(names, scalars.unbind(), strict=True)))
        except Exception as exc:
            if bucket.compiled:
                raise  # it ran before, so this is no compiler problem; and θ may be half updated
            _compiler.failed = True
            warnings.warn(
                f"{self.owner}: torch.compile of the flat update failed ({type(exc).__name__}: "
                f"{str(exc)[:300]}); using the eager update from now on",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        bucket.compiled = True
        return True


class _Compiler:
    """torch.compile'd rules, one per rule, made on first use; ``failed`` once compiling
    proved broken in this process (e.g. no C++ compiler)."""

    def __init__(self) -> None:
        self.failed = False
        self._compiled: dict[Rule, Rule] = {}

    def get(self, rule: Rule) -> Rule:
        compiled = self._compiled.get(rule)
        if compiled is None:
            # Static shapes: one graph per bucket size, and sizes never change.
            compiled = self._compiled[rule] = torch.compile(rule, dynamic=False)
        return compiled


_compiler = _Compiler()
