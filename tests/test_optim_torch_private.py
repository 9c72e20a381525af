"""src.optim.torch_private: what leans on torch.optim's private API behaves as torch's does
(step hooks, profiler ranges, the step counter's dtype)."""

from __future__ import annotations

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from src.optim import Adam, AdaMax
from tests import optim_helpers as h

_one_thread = h.one_thread


def test_step_hooks_and_profiler_ranges_work_as_in_torch():
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    opt = Adam([p])
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


def test_hooks_registered_globally_run_too():
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    calls = []
    handles = [register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append("pre")),
               register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append("post"))]
    try:
        Adam([p]).step()
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["pre", "post"]
