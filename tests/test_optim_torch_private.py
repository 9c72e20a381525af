"""src.optim.torch_private: what leans on torch.optim's private API behaves as torch's does
(step hooks, profiler ranges, the step counter's dtype, the capturable check).

`hooked_step` runs when a class body is executed, so the optimizers' `step` was wrapped at
import: the tests of its wrapper build their optimizer class in the test (`_optimizer`), where
the wrapper is made anew, as well as use the imported one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from src.optim import Adam, AdaMax, torch_private
from src.optim.torch_private import check_capturable, check_fused, hooked_step
from tests import optim_helpers as h

_one_thread = h.one_thread

# Adam as imported, or a class named Adam whose step hooked_step wraps in the test itself.
WRAPPED = pytest.mark.parametrize("wrapped_now", [False, True], ids=["imported", "wrapped_now"])


def _optimizer(wrapped_now: bool) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    """An Adam over one parameter that has a gradient."""
    cls = Adam
    if wrapped_now:
        cls = type("Adam", (Adam,), {"step": hooked_step(Adam.step.__wrapped__)})
        assert cls.step.hooked is True and cls.step.__name__ == "step"
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    return cls([p]), p


@WRAPPED
def test_step_hooks_and_profiler_ranges_work_as_in_torch(wrapped_now):
    opt, _ = _optimizer(wrapped_now)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o is opt)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o is opt)))
    with torch.profiler.profile() as prof:
        opt.step()
        opt.zero_grad()
    assert calls == [("pre", True), ("post", True)]
    names = {event.name for event in prof.events()}
    assert {"Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad"} <= names


def test_step_counter_dtype_follows_torchs_default_dtype_rule():
    """torch keeps t in float32, or float64 under set_default_dtype(float64): so do we."""
    previous = torch.get_default_dtype()
    try:
        for default in (torch.float32, torch.float64):
            torch.set_default_dtype(default)
            for ours, theirs in ((Adam, torch.optim.Adam), (AdaMax, torch.optim.Adamax)):
                dtypes = []
                for cls in (ours, theirs):
                    (p,) = h.make_params([(3,)])
                    p.grad = torch.ones_like(p)
                    opt = cls([p])
                    opt.step()
                    dtypes.append(opt.state[p]["step"].dtype)
                assert dtypes[0] == dtypes[1]
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def _global_hooks(calls: list[str], prefix: str = "") -> Iterator[None]:
    """Global step pre and post hooks recording `prefix`pre / `prefix`post, removed after."""
    handles = [
        register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append(f"{prefix}pre")),
        register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append(f"{prefix}post"))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@WRAPPED
def test_hooks_registered_globally_run_too(wrapped_now):
    opt, _ = _optimizer(wrapped_now)
    calls: list[str] = []
    with _global_hooks(calls):
        opt.step()
    assert calls == ["pre", "post"]


def _hook_order(opt: torch.optim.Optimizer) -> list[str]:
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    with _global_hooks(calls, prefix="global "):
        opt.step()
    return calls


@WRAPPED
def test_global_hooks_run_around_the_optimizers_own_in_torchs_order(wrapped_now):
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    expected = _hook_order(torch.optim.Adam([p]))
    assert expected == ["global pre", "pre", "post", "global post"]
    assert _hook_order(_optimizer(wrapped_now)[0]) == expected


@WRAPPED
def test_a_pre_hook_replaces_the_steps_arguments_for_the_step_and_the_post_hooks(wrapped_now):
    opt, p = _optimizer(wrapped_now)
    before = p.detach().clone()
    seen = []
    given = []
    opt.register_step_pre_hook(lambda o, args, kwargs: given.append((args, dict(kwargs))))
    opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": lambda: 2.5}))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append((args[0] is o, *kwargs)))
    assert opt.step() == 2.5  # the closure the hook passed was called
    assert seen == [(True, "closure")]
    assert given == [((opt,), {})]  # the step's own arguments, as torch passes them
    assert not torch.equal(p, before)  # and the step was taken


@WRAPPED
@pytest.mark.parametrize("result", [5, (1, 2, 3), ((),)])
def test_a_pre_hook_returning_anything_else_is_refused_as_torch_refuses_it(wrapped_now, result):
    opt, p = _optimizer(wrapped_now)
    before = p.detach().clone()
    reference = torch.optim.Adam(h.make_params([(3,)]))
    messages = []
    for o in (opt, reference):
        o.register_step_pre_hook(lambda o, args, kwargs: result)
        with pytest.raises(RuntimeError) as refused:
            o.step()
        messages.append(str(refused.value))
    assert messages[0] == (f"{Adam.step.__wrapped__} must return None or a tuple of "
                           f"(new_args, new_kwargs), but got {result}.")
    # torch's names its own step function: the rest of the message is the same.
    assert re.sub(r"<function \S+ at 0x[0-9a-f]+>", "F", messages[0]) == re.sub(
        r"<function \S+ at 0x[0-9a-f]+>", "F", messages[1])
    assert torch.equal(p, before) and opt.state[p] == {}  # no step was taken


@pytest.mark.parametrize("foreach", [False, True])
def test_capturable_on_cpu_fails_with_torchs_assertion(foreach):
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones_like(p)
    with pytest.raises(AssertionError) as theirs:
        torch.optim.Adam([p], capturable=True, foreach=foreach).step()
    with pytest.raises(AssertionError) as ours:
        check_capturable(p, foreach=foreach)
    assert str(ours.value) == str(theirs.value)


def test_capturable_on_a_device_torch_allows_is_refused_as_not_implemented(monkeypatch):
    asked = []

    def devices(supports_xla: bool) -> list[str]:
        asked.append(supports_xla)
        return ["cpu"]

    monkeypatch.setattr(torch_private, "_get_capturable_supported_devices", devices)
    (p,) = h.make_params([(3,)])
    for foreach in (False, True):
        with pytest.raises(RuntimeError) as refused:
            check_capturable(p, foreach=foreach)
        assert str(refused.value) == (
            "capturable=True is not implemented here (t is read on the host every step); use "
            "torch.optim's optimizer for CUDA-graph capture")
    assert asked == [True, False]


def test_fused_refuses_what_torchs_fused_adam_refuses():
    (p,) = h.make_params([(3,)], dtype=torch.complex64)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError) as theirs:
        torch.optim.Adam([p], fused=True).step()
    with pytest.raises(RuntimeError) as ours:
        check_fused(p)
    assert str(ours.value) == str(theirs.value)
    check_fused(h.make_params([(3,)])[0])  # a float64 CPU tensor is fine
