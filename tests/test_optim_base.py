"""src.optim.base: torch.optim's semantics under default use, for every optimizer here and on
both paths: skipped parameters, frozen and unfrozen layers, steps without backward, tied
weights, gradient accumulation, groups added later, each checked against torch step by step;
and torch's implementation flags (foreach, fused, capturable, differentiable)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from src.optim import Adam, AdaMax, AdamW
from tests import optim_helpers as h

_one_thread = h.one_thread
per_tensor_calls = h.per_tensor_calls

CASES = {
    "adam": (Adam, torch.optim.Adam, {}),
    "amsgrad": (Adam, torch.optim.Adam, {"amsgrad": True, "weight_decay": 0.01}),
    "adamw": (AdamW, torch.optim.AdamW, {}),
    "adamax": (AdaMax, torch.optim.Adamax, {}),
}


class _TiedLM(nn.Module):
    """Input embedding and output projection share one weight (one Parameter)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.embed = nn.Embedding(10, 4).double()
            self.out = nn.Linear(4, 10, bias=False).double()
        self.out.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(ids)))


_DATA = h.batches(40)
_IDS = [torch.randint(10, (8,), generator=torch.Generator().manual_seed(k)) for k in range(40)]


def _loss(model: nn.Module, k: int, **forward: object) -> torch.Tensor:
    x, y = _DATA[k]
    return nn.functional.cross_entropy(model(x, **forward) if forward else model(x), y)


def _head_on_alternate_steps(model, opt, k):
    opt.zero_grad()
    _loss(model, k, use_b=k % 2 == 0).backward()
    opt.step()


def _frozen_then_unfrozen(model, opt, k):
    model.body.requires_grad_(not 8 <= k < 16)
    opt.zero_grad()
    _loss(model, k).backward()
    opt.step()


def _some_steps_without_backward(model, opt, k):
    opt.zero_grad()
    if k % 4 != 3:
        _loss(model, k).backward()
    opt.step()


def _tied_weights(model, opt, k):
    opt.zero_grad()
    ids = _IDS[k]
    nn.functional.cross_entropy(model(ids), ids.roll(1)).backward()
    opt.step()


def _accumulated_gradients(model, opt, k):
    opt.zero_grad()
    for micro in range(3):
        (_loss(model, (3 * k + micro) % len(_DATA)) / 3).backward()
    opt.step()


def _group_added_later(model, opt, k):
    if k == 10:
        opt.add_param_group({"params": list(model.head_b.parameters()), "lr": 3e-2})
    opt.zero_grad()
    _loss(model, k).backward()
    opt.step()


SCENARIOS: dict[str, tuple[Callable[[], nn.Module], Callable[..., None]]] = {
    "head_on_alternate_steps": (h.TwoHeads, _head_on_alternate_steps),
    "frozen_then_unfrozen": (h.TwoHeads, _frozen_then_unfrozen),
    "steps_without_backward": (h.TwoHeads, _some_steps_without_backward),
    "tied_weights": (_TiedLM, _tied_weights),
    "accumulated_gradients": (h.TwoHeads, _accumulated_gradients),
    "group_added_later": (h.TwoHeads, _group_added_later),
}


def _optimized(model: nn.Module, scenario: str) -> list[nn.Parameter]:
    if scenario == "group_added_later":
        return [p for name, p in model.named_parameters() if not name.startswith("head_b")]
    return list(model.parameters())


@h.FLAT
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_default_use_matches_torch_step_by_step(scenario, case, flat):
    make, step = SCENARIOS[scenario]
    model, reference = make(), make()
    ours_cls, torch_cls, kwargs = CASES[case]
    opt = ours_cls(_optimized(model, scenario), lr=1e-2, flat=flat, **kwargs)
    ref_opt = torch_cls(_optimized(reference, scenario), lr=1e-2, **kwargs)
    for k in range(30):
        step(model, opt, k)
        step(reference, ref_opt, k)
        h.assert_same_params(model, reference)
        h.assert_same_state(opt, ref_opt, rtol=1e-6)
        # zero_grad() leaves no gradient behind, here as in torch.
        opt.zero_grad()
        ref_opt.zero_grad()
        assert all(p.grad is None for g in opt.param_groups for p in g["params"])


def test_an_unused_head_keeps_its_state_on_the_flat_path():
    """The issue's case: a head used on even steps only; on odd steps t, m, v and θ of the
    head stay exactly as they were, as torch leaves them."""
    model = h.TwoHeads()
    opt = Adam(model.parameters(), lr=1e-2)
    _head_on_alternate_steps(model, opt, 0)
    head = model.head_b.weight
    before = (head.detach().clone(), {k: v.clone() for k, v in opt.state[head].items()})
    _head_on_alternate_steps(model, opt, 1)
    assert torch.equal(head, before[0])
    assert all(torch.equal(opt.state[head][k], v) for k, v in before[1].items())
    assert opt.state[model.body.weight]["step"].item() == 2


# ------------------------------------------------------------ implementation flags


@pytest.mark.parametrize(("kwargs", "flat_path"), [
    ({}, True), ({"fused": True}, True), ({"fused": None}, True),
    ({"foreach": True}, False), ({"foreach": False}, False), ({"fused": False}, False),
])
def test_foreach_and_fused_choose_the_path_not_the_result(kwargs, flat_path, per_tensor_calls):
    model, reference = h.net(), h.net()
    data = h.batches(50)
    opt = Adam(model.parameters(), lr=1e-2, **kwargs)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, **kwargs)
    h.train(model, opt, data)
    h.train(reference, ref_opt, data)
    h.assert_same_params(model, reference)
    assert (per_tensor_calls == []) == flat_path
    assert (h.shared_storages(model.parameters()) == 1) == flat_path
    assert opt.param_groups[0].keys() >= ref_opt.param_groups[0].keys()


def _torch_and_ours_raise(kwargs: dict, error: type[Exception], on_step: bool,
                          params: Callable[[], list[torch.Tensor]] | None = None) -> None:
    for cls in (torch.optim.Adam, Adam):
        ps = params() if params else h.make_params([(3,)])
        for p in ps:
            p.grad = torch.ones_like(p)
        if on_step:
            opt = cls(ps, **kwargs)
            with pytest.raises(error) as raised:
                opt.step()
        else:
            with pytest.raises(error) as raised:
                cls(ps, **kwargs)
        if cls is torch.optim.Adam:
            message = str(raised.value)
        else:
            assert str(raised.value) == message


@pytest.mark.parametrize(("kwargs", "error", "on_step"), [
    ({"fused": True, "foreach": True}, RuntimeError, False),
    ({"fused": True, "differentiable": True}, RuntimeError, False),
    ({"capturable": True}, AssertionError, True),
    ({"capturable": True, "foreach": True}, AssertionError, True),
])
def test_fused_and_capturable_are_refused_as_torch_refuses_them_on_cpu(kwargs, error, on_step):
    _torch_and_ours_raise(kwargs, error, on_step)


def test_fused_refuses_complex_params_as_torch_does():
    _torch_and_ours_raise({"fused": True}, RuntimeError, True,
                          params=lambda: h.make_params([(3,)], dtype=torch.complex64))


def test_fused_with_capturable_runs_as_torch_on_cpu():
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, 100, seed=i) for i, s in enumerate(h.SHAPES)]
    h.run(Adam(ours, fused=True, capturable=True), ours, grads)
    h.run(torch.optim.Adam(ref, fused=True, capturable=True), ref, grads)
    h.assert_close(ours, ref)


def test_differentiable_is_refused():
    (p,) = h.make_params([(3,)])
    with pytest.raises(RuntimeError, match="differentiable=True is not supported"):
        Adam([p], differentiable=True)
    with pytest.raises(RuntimeError, match="differentiable=True is not supported"):
        AdaMax([p], differentiable=True)


def test_a_loaded_group_asking_for_differentiable_is_refused_at_the_step():
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    donor = torch.optim.Adam([p], differentiable=True)
    opt = Adam([p])
    opt.load_state_dict(donor.state_dict())
    with pytest.raises(RuntimeError, match="differentiable"):
        opt.step()


def test_implementation_options_survive_pickling_but_not_state_dicts():
    (p,) = h.make_params([(3,)])
    opt = Adam([p], flat=False, compile=False)
    copied = copy.deepcopy(opt)
    assert (copied._flat, copied._compile) == (False, False)
    assert "flat" not in opt.state_dict()["param_groups"][0]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"flat": 1}, "flat"), ({"compile": "yes"}, "compile")]
)
def test_invalid_implementation_options_raise(kwargs, name):
    (p,) = h.make_params([(3,)])
    with pytest.raises(ValueError, match=name):
        Adam([p], **kwargs)


def test_pickled_flat_optimizer_resumes_on_its_own_copy():
    model = h.net()
    opt = Adam(model.parameters(), lr=1e-2)
    data = h.batches(20)
    h.train(model, opt, data[:10])
    model2, opt2 = copy.deepcopy((model, opt))
    h.train(model, opt, data[10:])
    h.train(model2, opt2, data[10:])
    h.assert_same_params(model2, model, rtol=0)
