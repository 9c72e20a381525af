"""src.optim.base: torch.optim's semantics under default use, for every optimizer here and on
both paths: skipped parameters, frozen and unfrozen layers, steps without backward, tied
weights, gradient accumulation, groups added later, each checked against torch step by step;
and torch's implementation flags (foreach, fused, capturable, differentiable)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from src.optim import Adam, AdaMax, AdamW
from src.optim.base import check_hyperparameters
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


class _HalvedAdam(Adam):
    """A variant of the rule, as a researcher writes one: Adam at half the step size."""

    @staticmethod
    def rule(*args, step_size, **kwargs):
        from src.optim.adam import adam

        adam(*args, step_size=step_size / 2, **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"flat": False}, {"foreach": True}, {"fused": False}],
                         ids=["flat", "per_tensor", "foreach", "fused=False"])
def test_a_variant_of_the_rule_reaches_every_path_but_torchs_kernel(kwargs):
    """Every path runs the class's rule; only fused=True asks for torch's kernel instead."""
    variant, halved = h.make_params(h.SHAPES), h.make_params(h.SHAPES)
    kernel, fused = h.make_params(h.SHAPES), h.make_params(h.SHAPES)
    grads = [h.grad_sequence(s, 30, seed=i) for i, s in enumerate(h.SHAPES)]
    h.run(_HalvedAdam(variant, lr=2e-2, **kwargs), variant, grads)
    h.run(Adam(halved, lr=1e-2, **kwargs), halved, grads)
    h.assert_close(variant, halved, rtol=1e-12)
    h.run(_HalvedAdam(kernel, lr=2e-2, fused=True), kernel, grads)
    h.run(torch.optim.Adam(fused, lr=2e-2, fused=True), fused, grads)
    for p, q in zip(kernel, fused, strict=True):
        assert torch.equal(p, q)


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
    assert copied._layout.compile is False  # the copy's buckets compile as the original's
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


# ------------------------------------------------- the hyperparameter checks, message by message

_GOOD = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
         "eps_mode": "paper", "bias_correction": True}
_T = partial(torch.tensor, dtype=torch.float64)
_REFUSED = {
    # case: (the group's values over _GOOD, tensor_rules, the whole message)
    "tensor lr with foreach": ({"lr": _T(1e-3), "foreach": True}, True,
                               "lr as a Tensor is not supported for capturable=False and "
                               "foreach=True"),
    "tensor lr of 2": ({"lr": _T([1e-3, 1e-3])}, False, "Tensor lr must be 1-element"),
    "lr a string": ({"lr": "0.1"}, False,
                    "Invalid learning rate: '0.1' (lr must be a number >= 0)"),
    "lr a bool": ({"lr": True}, False, "Invalid learning rate: True (lr must be a number >= 0)"),
    "lr < 0": ({"lr": -1.0}, False, "Invalid learning rate: -1.0 (lr must be >= 0)"),
    "lr nan": ({"lr": math.nan}, False, "Invalid learning rate: nan (lr must be >= 0)"),
    "eps < 0": ({"eps": -1.0}, False, "Invalid epsilon value: -1.0 (eps must be a number >= 0)"),
    "eps nan": ({"eps": math.nan}, False, "Invalid epsilon value: nan (eps must be a number >= 0)"),
    "eps a string": ({"eps": "1e-8"}, False,
                     "Invalid epsilon value: 1e-8 (eps must be a number >= 0)"),
    "betas of one": ({"betas": (0.9,)}, False,
                     "Invalid betas: (0.9,) — must be a pair (beta1, beta2) of numbers"),
    "betas a string": ({"betas": "ab"}, False,
                       "Invalid betas: 'ab' — must be a pair (beta1, beta2) of numbers"),
    "betas a number": ({"betas": 0.9}, False,
                       "Invalid betas: 0.9 — must be a pair (beta1, beta2) of numbers"),
    "betas with a bool": ({"betas": (0.9, True)}, False,
                          "Invalid betas: (0.9, True) — must be a pair (beta1, beta2) of numbers"),
    "beta1 = 1": ({"betas": (1.0, 0.9)}, False,
                  "Invalid beta parameter at index 0: 1.0 (beta1 (betas[0]) must be in [0, 1))"),
    "beta2 < 0": ({"betas": (0.9, -0.1)}, False,
                  "Invalid beta parameter at index 1: -0.1 (beta2 (betas[1]) must be in [0, 1))"),
    "weight_decay < 0": ({"weight_decay": -0.1}, False,
                         "Invalid weight_decay value: -0.1 (weight_decay must be a number >= 0)"),
    "weight_decay None": ({"weight_decay": None}, False,
                          "Invalid weight_decay value: None (weight_decay must be a number >= 0)"),
    "betas mixed": ({"betas": (_T(0.9), 0.999)}, True,
                    "betas must be either both floats or both Tensors"),
    "betas mixed the other way": ({"betas": (0.9, _T(0.999))}, True,
                                  "betas must be either both floats or both Tensors"),
    "tensor betas with foreach": ({"betas": (_T(0.9), _T(0.999)), "foreach": True}, True,
                                  "betas[0] as a Tensor is not supported for capturable=False "
                                  "and foreach=True"),
    "eps_mode": ({"eps_mode": "tf"}, False,
                 "Invalid eps_mode: 'tf' — must be one of ('paper', 'keras')"),
    "bias_correction 1": ({"bias_correction": 1}, False,
                          "Invalid bias_correction: 1 — must be a bool"),
}
# torch.optim.Adam's own message, which ours begins with.
_TORCHS = {"lr < 0": "Invalid learning rate: -1.0", "eps < 0": "Invalid epsilon value: -1.0",
           "beta1 = 1": "Invalid beta parameter at index 0: 1.0",
           "weight_decay < 0": "Invalid weight_decay value: -0.1"}


@pytest.mark.parametrize("case", _REFUSED)
def test_every_hyperparameter_rule_refuses_with_its_whole_message(case):
    values, tensor_rules, message = _REFUSED[case]
    with pytest.raises(ValueError) as refused:
        check_hyperparameters({**_GOOD, **values}, tensor_rules=tensor_rules)
    assert str(refused.value) == message
    if case in _TORCHS:
        with pytest.raises(ValueError, match="^" + re.escape(_TORCHS[case]) + "$"):
            torch.optim.Adam(h.make_params([(3,)]), **values)
        assert message.startswith(_TORCHS[case] + " (")


@pytest.mark.parametrize(("values", "tensor_rules"), [
    ({"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "weight_decay": 0}, True),
    ({"lr": 1, "betas": [0.5, 0.999999], "eps": 1, "eps_mode": "keras",
      "bias_correction": False}, True),
    # Adamax has no tensor rules: these are torch.optim.Adamax's to accept.
    ({"lr": _T(1e-3), "foreach": True}, False),
    ({"betas": (_T(0.9), 0.999)}, False),
    ({"betas": (_T(0.9), _T(0.999)), "foreach": True}, False),
    # capturable lifts foreach's rules on tensors; a 0-d and a 1-element tensor are one number.
    ({"lr": _T([1e-3]), "betas": (_T(0.9), _T([0.999])), "foreach": True, "capturable": True},
     True),
    ({"lr": _T(1e-3), "betas": (_T(0.9), _T(0.999)), "foreach": False}, True),
], ids=["boundaries", "numbers", "adamax tensor lr", "adamax mixed betas",
        "adamax tensor betas", "capturable", "tensors"])
def test_the_boundaries_of_the_hyperparameter_rules_are_accepted(values, tensor_rules):
    check_hyperparameters({**_GOOD, **values}, tensor_rules=tensor_rules)


def test_implementation_options_name_the_value_and_what_is_allowed():
    (p,) = h.make_params([(3,)])
    for kwargs, message in [({"flat": 1}, "Invalid flat: 1 — must be a bool"),
                            ({"flat": None}, "Invalid flat: None — must be a bool"),
                            ({"compile": "yes"},
                             "Invalid compile: 'yes' — must be None, True or False")]:
        with pytest.raises(ValueError) as refused:
            Adam([p], **kwargs)
        assert str(refused.value) == message
    for flat, compile in [(True, None), (False, True), (True, False)]:
        opt = Adam([p], flat=flat, compile=compile)
        assert (opt._flat, opt._compile, opt._layout.compile) == (flat, compile, compile)
        assert opt._layout.owner == "Adam"


def test_groups_keep_betas_as_a_tuple_of_numbers_or_0d_tensors():
    first, second = h.make_params([(3,), (4,)])
    opt = Adam([first], betas=[_T([0.8]), _T(0.9)])
    opt.add_param_group({"params": [second], "betas": [0.5, 0.6]})
    defaults, added = opt.defaults["betas"], opt.param_groups[1]["betas"]
    assert isinstance(defaults, tuple) and [b.dim() for b in defaults] == [0, 0]
    assert [b.item() for b in defaults] == [0.8, 0.9]
    assert added == (0.5, 0.6) and all(type(b) is float for b in added)
    zero_d = (_T(0.8), _T(0.9))  # kept as they are, as torch keeps them: the user's tensors
    kept = Adam([second], betas=zero_d).param_groups[0]["betas"]
    assert kept[0] is zero_d[0] and kept[1] is zero_d[1]
    with pytest.raises(ValueError, match="^Invalid learning rate: -1.0"):
        opt.add_param_group({"params": [h.make_params([(2,)])[0]], "lr": -1.0})
    assert len(opt.param_groups) == 2


def test_a_group_saved_without_our_options_loads_with_what_it_meant_there():
    p, unused, r = h.make_params([(3,), (2,), (3,)])
    p.grad, r.grad = torch.ones_like(p), torch.ones_like(r)  # `unused` gets no state
    donor = torch.optim.Adam([p, unused, r])
    donor.step()
    saved = donor.state_dict()
    omitted = ("amsgrad", "maximize", "decoupled_weight_decay", "foreach", "capturable",
               "differentiable", "fused")
    for key in omitted:  # a checkpoint of an older torch
        saved["param_groups"][0].pop(key, None)
    saved["state"][0]["step"] = torch.tensor(1.0, dtype=torch.float64)  # a CPU tensor stays
    saved["state"][2]["step"] = 1  # old checkpoints keep t as a number (after `unused`)
    opt = Adam([p, unused, r], eps_mode="keras", bias_correction=False, amsgrad=True,
               maximize=True, foreach=False)
    opt.load_state_dict(saved)
    group = opt.param_groups[0]
    assert {key: group[key] for key in ("eps_mode", "bias_correction", *omitted)} == {
        "eps_mode": "paper", "bias_correction": True, "amsgrad": False, "maximize": False,
        "decoupled_weight_decay": False, "foreach": None, "capturable": False,
        "differentiable": False, "fused": None}
    step = opt.state[r]["step"]
    assert torch.is_tensor(step) and step.dtype == torch.float32 and step.item() == 1.0
    assert opt.state[p]["step"].dtype == torch.float64  # as torch.optim.Adam keeps it
    reference = torch.optim.Adam([p, unused, r])
    reference.load_state_dict(saved)
    assert reference.state[p]["step"].dtype == torch.float64
    assert unused not in opt.state
    assert (opt._flat, opt._compile) == (True, None)  # the instance's own, not the checkpoint's


@h.FLAT
def test_the_step_counter_is_float32_under_a_16_bit_default_dtype_as_in_torch(flat):
    """torch keeps t in float32 unless the default dtype is float64; a plain
    torch.tensor(0.0) would follow a float16 default."""
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float16)
        dtypes = []
        for cls, kwargs in ((torch.optim.Adam, {"foreach": False}), (Adam, {"flat": flat})):
            (p,) = h.make_params([(3,)])
            p.grad = torch.ones_like(p)
            opt = cls([p], **kwargs)
            opt.step()
            dtypes.append(opt.state[p]["step"].dtype)
            saved = opt.state_dict()
            saved["state"][0]["step"] = 1  # an old checkpoint's number, loaded
            opt.load_state_dict(saved)
            dtypes.append(opt.state[p]["step"].dtype)
        assert dtypes == [torch.float32] * 4
    finally:
        torch.set_default_dtype(previous)


def test_zero_grad_under_a_profiler_sets_to_none_or_zeroes_as_asked():
    p, q = h.make_params([(3,), (2,)])
    opt = Adam([p, q])
    p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    with torch.profiler.profile():
        opt.zero_grad(set_to_none=False)
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
        opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_an_optimizer_pickled_before_the_implementation_options_unpickles_with_defaults():
    (p,) = h.make_params([(3,)])
    state = Adam([p], flat=False, compile=True).__getstate__()
    assert (state["_flat"], state["_compile"]) == (False, True)
    assert "_layout" not in state  # the buckets never travel
    del state["_flat"], state["_compile"]
    old = Adam.__new__(Adam)
    old.__setstate__(state)
    assert (old._flat, old._compile) == (True, None)
    assert (old._layout.owner, old._layout.compile, old._layout.plans) == ("Adam", None, [])


def test_a_step_restores_the_grad_mode_it_found_and_runs_the_closure_with_grad():
    (p,) = h.make_params([(3,)])
    opt = Adam([p])
    seen = []

    def closure():
        seen.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        opt.step(closure)
        assert not torch.is_grad_enabled()
    opt.step(closure)
    assert torch.is_grad_enabled() and seen == [True, True]
    assert opt.state[p]["step"].item() == 2


def test_zero_grad_without_set_to_none_zeroes_every_kind_of_gradient_as_torch():
    def grads() -> list[torch.Tensor]:
        ps = h.make_params([(3,), (2,), (4,)]) + h.make_params([(2,)], dtype=torch.float32)
        dense = torch.ones(3, dtype=torch.float64, requires_grad=True)
        ps[0].grad = dense * 2  # a gradient with a graph (create_graph=True)
        ps[1].grad = torch.ones(2, dtype=torch.float64).requires_grad_()
        ps[2].grad = torch.sparse_coo_tensor([[1]], [5.0], (4,), dtype=torch.float64,
                                             check_invariants=True)
        ps[3].grad = torch.ones(2)
        return ps

    results = []
    for cls in (torch.optim.Adam, Adam):
        ps = grads()
        kept = [p.grad for p in ps]
        cls(ps).zero_grad(set_to_none=False)
        assert [p.grad is g for p, g in zip(ps, kept, strict=True)] == [True] * 4
        results.append([(p.grad.to_dense().tolist(), p.grad.requires_grad,
                         p.grad.grad_fn is None) for p in ps])
    assert results[1] == results[0]
    assert results[1][0] == ([0.0] * 3, False, True)


def test_differentiable_is_refused_with_the_whole_message():
    with pytest.raises(RuntimeError) as refused:
        Adam(h.make_params([(3,)]), differentiable=True)
    assert str(refused.value) == (
        "differentiable=True is not supported: the update runs without autograd; use "
        "torch.optim for differentiable optimizer steps")


def test_zero_grad_zeroes_in_place_one_device_and_dtype_per_foreach_op(monkeypatch):
    """torch's foreach ops take tensors of one device and dtype: so do the calls here."""
    from src.optim import base

    calls: list[set] = []
    original = base.zero_all_

    def spy(tensors):
        calls.append({(t.device, t.dtype) for t in tensors})
        original(tensors)

    monkeypatch.setattr(base, "zero_all_", spy)
    ps = h.make_params([(3,), (2,)]) + h.make_params([(4,)], dtype=torch.float32)
    for p in ps:
        p.grad = torch.ones_like(p)
    Adam(ps).zero_grad(set_to_none=False)
    cpu = torch.device("cpu")
    assert sorted(calls, key=str) == [{(cpu, torch.float32)}, {(cpu, torch.float64)}]
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in ps)
