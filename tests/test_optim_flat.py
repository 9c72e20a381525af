"""src.optim.flat, the flat-buffer layout, through the optimizers that use it: module training
on the flat path, views and what replaces them, fall-back to per-tensor steps and back, loaded
checkpoints, mixed dtypes, frozen and tied params, the compiled runner; and gradients that stay
the user's (never written into, never replaced)."""

from __future__ import annotations

import copy
import io
import linecache
import warnings

import pytest
import torch
from torch import nn

from src.optim import Adam, AdaMax
from tests import optim_helpers as h

_one_thread = h.one_thread
per_tensor_calls = h.per_tensor_calls


@pytest.mark.parametrize("zero_grad", ["optimizer", "optimizer_keep", "module_none"])
def test_module_training_matches_torch_on_the_flat_path(zero_grad, per_tensor_calls):
    """Forward/backward through a real module; every step is a flat one."""
    model = h.net()
    reference = copy.deepcopy(model)
    batches = h.batches(200)
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    opt = Adam(model.parameters(), **kwargs)
    h.train(model, opt, batches, zero_grad)
    ref_opt = torch.optim.Adam(reference.parameters(), **kwargs, foreach=False)
    h.train(reference, ref_opt, batches, zero_grad)
    h.assert_same_params(model, reference)
    assert per_tensor_calls == []
    state, ref_state = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    for i in ref_state:
        assert state[i]["step"].item() == ref_state[i]["step"].item() == 200
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[i][key], ref_state[i][key], rtol=1e-5, atol=1e-12)


def test_blog_mlp_training_matches_torch():
    """src.model.build_mlp(784, [128], 10, dropout=0) (not imported: Lightning is slow to)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = [nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)]
        model = nn.Sequential(*layers).double()
    reference = copy.deepcopy(model)
    batches = h.batches(30, shape=(16, 1, 28, 28), classes=10)
    h.train(model, Adam(model.parameters(), lr=1e-3), batches)
    h.train(reference, torch.optim.Adam(reference.parameters(), lr=1e-3, fused=True), batches)
    h.assert_same_params(model, reference)
    assert h.shared_storages(model.parameters()) == 1


def test_params_and_state_are_views_of_flat_buffers_and_grads_stay_the_users():
    model = h.net()
    params = list(model.parameters())
    opt = Adam(params)
    batches = h.batches(4)
    h.train(model, opt, batches[:1])
    assert h.shared_storages(params) == 1
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert h.shared_storages(opt.state[p][key] for p in params) == 1
    # Gradients are autograd's own tensors, never views of the optimizer's buffers.
    grads = [p.grad for p in params]
    assert h.shared_storages(grads) == len(params)
    assert not {g.untyped_storage().data_ptr() for g in grads} & {
        params[0].untyped_storage().data_ptr()}
    h.train(model, opt, batches[1:])
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    # state_dict() still holds one tensor per parameter, shaped like torch's.
    state = opt.state_dict()["state"]
    for i, p in enumerate(params):
        assert state[i]["exp_avg"].shape == state[i]["exp_avg_sq"].shape == p.shape
        assert state[i]["step"].shape == () and state[i]["step"].dtype == torch.float32
        assert state[i]["step"].item() == 4


def test_zero_grad_sets_every_grad_to_none_or_zeroes_it_in_place_as_torch():
    (flat,) = h.make_params([(3,)])
    (complex_,) = h.make_params([(2,)], dtype=torch.complex128)  # never flattened
    for p in (flat, complex_):
        p.grad = torch.ones_like(p)
    opt = Adam([flat, complex_])
    opt.step()
    opt.zero_grad()
    assert complex_.grad is None
    assert flat.grad is None
    # set_to_none=False zeroes each gradient in place, the same tensor, as torch does.
    grads = [torch.ones_like(p) for p in (flat, complex_)]
    flat.grad, complex_.grad = grads
    opt.step()
    opt.zero_grad(set_to_none=False)
    assert flat.grad is grads[0] and complex_.grad is grads[1]
    assert not flat.grad.any() and not complex_.grad.any()
    # A frozen parameter keeps no gradient either.
    flat.requires_grad_(False)
    opt.zero_grad()
    assert flat.grad is None


@pytest.mark.parametrize(
    ("ours_zero_grad", "torch_zero_grad"),
    [
        # torch's semantics with every zero_grad: after set_to_none (opt.zero_grad()'s
        # default, or the module's), head_b has no grad on most steps, so it is skipped ...
        ("module_none", "module_none"),
        ("optimizer", "optimizer"),
        # ... while zeroed gradients are stepped with g_t = 0, in torch as here.
        ("optimizer_keep", "optimizer_keep"),
    ],
)
def test_param_unused_on_some_steps(ours_zero_grad, torch_zero_grad):
    model, reference = h.TwoHeads(), h.TwoHeads()
    batches = h.batches(90)

    def forward(m, x, k):
        return m(x, use_b=k % 3 == 0)

    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    h.train(model, opt, batches, ours_zero_grad, forward)
    h.train(reference, ref_opt, batches, torch_zero_grad, forward)
    h.assert_same_params(model, reference)
    expected_t = 90 if ours_zero_grad == "optimizer_keep" else 30
    assert opt.state[model.head_b.bias]["step"].item() == expected_t
    assert ref_opt.state[reference.head_b.bias]["step"].item() == expected_t


def test_flat_path_falls_back_and_resumes_when_step_counters_agree_again(per_tensor_calls):
    model = h.net()
    reference = copy.deepcopy(model)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    batches = h.batches(30)
    h.train(model, opt, batches[:5])
    h.train(reference, ref_opt, batches[:5])
    assert per_tensor_calls == []
    for m, o in ((model, opt), (reference, ref_opt)):  # one step without the last bias
        o.zero_grad()
        nn.functional.cross_entropy(m(batches[5][0]), batches[5][1]).backward()
        m[2].bias.grad = None
        o.step()
    assert per_tensor_calls == [3]  # the bucket took a per-tensor step, skipping the bias
    h.train(model, opt, batches[6:10])
    h.train(reference, ref_opt, batches[6:10])
    assert per_tensor_calls == [3, 4, 4, 4, 4]  # counters differ (9 vs 10): still per tensor
    h.assert_same_params(model, reference)
    # A checkpoint whose counters agree makes the flat path usable again.
    donor = copy.deepcopy(reference)
    donor_opt = torch.optim.Adam(donor.parameters(), lr=1e-2)
    h.train(donor, donor_opt, batches[10:12])
    model.load_state_dict(donor.state_dict())
    opt.load_state_dict(h.roundtrip(donor_opt.state_dict()))
    reference.load_state_dict(donor.state_dict())
    ref_opt.load_state_dict(h.roundtrip(donor_opt.state_dict()))
    calls = len(per_tensor_calls)
    h.train(model, opt, batches[12:])
    h.train(reference, ref_opt, batches[12:])
    assert len(per_tensor_calls) == calls
    h.assert_same_params(model, reference)
    assert h.shared_storages(model.parameters()) == 1


@pytest.mark.parametrize("source", ["ours", "torch"])
def test_checkpoint_loaded_into_running_flat_optimizer_and_model(source, per_tensor_calls):
    """model.load_state_dict and opt.load_state_dict after the buffers exist."""
    n, m = 40, 40
    batches = h.batches(n + m)
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99)}
    reference = h.net()
    h.train(reference, torch.optim.Adam(reference.parameters(), **kwargs, foreach=False), batches)

    donor = h.net()
    donor_opt = (Adam if source == "ours" else torch.optim.Adam)(donor.parameters(), **kwargs)
    h.train(donor, donor_opt, batches[:n])
    model_checkpoint = h.roundtrip(donor.state_dict())
    opt_checkpoint = h.roundtrip(donor_opt.state_dict())

    model = h.net(seed=1)
    opt = Adam(model.parameters(), lr=0.5)  # hyperparameters must come from the checkpoint
    h.train(model, opt, h.batches(5, seed=1))
    model.load_state_dict(model_checkpoint)
    for p, (name, loaded) in zip(model.parameters(), model_checkpoint.items(), strict=True):
        assert torch.equal(p, loaded), name
    opt.load_state_dict(opt_checkpoint)
    h.train(model, opt, batches[n:])
    h.assert_same_params(model, reference)
    assert per_tensor_calls == []  # the loaded state was copied into the flat buffers
    assert h.shared_storages(model.parameters()) == 1


def test_model_state_dict_saves_and_reloads_after_flattening():
    model = h.net()
    h.train(model, Adam(model.parameters(), lr=1e-2), h.batches(5))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = h.net(seed=1)
    fresh.load_state_dict(torch.load(buffer))
    h.assert_same_params(fresh, model, rtol=0)
    assert h.shared_storages(fresh.parameters()) == len(list(fresh.parameters()))


def test_two_groups_with_mixed_dtypes_match_torch(per_tensor_calls):
    def make():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.ModuleDict(
                {"a": nn.Linear(6, 3).double(), "b": nn.Linear(6, 3), "c": nn.Linear(6, 3).double()}
            )

    def forward(m, x, k):
        # float32 rounding (ours and torch's differ in the last bit) stays in b's loss.
        return m["a"](x) + m["c"](x), m["b"](x.float())

    def groups(m):
        return [
            {"params": [*m["a"].parameters(), *m["b"].parameters()]},  # float64 + float32
            {"params": m["c"].parameters(), "betas": (0.5, 0.9), "weight_decay": 0.1},
        ]

    model, reference = make(), make()
    batches = h.batches(100)
    opt = Adam(groups(model), lr=1e-2)
    h.train(model, opt, batches, forward=forward)
    h.train(reference, torch.optim.Adam(groups(reference), lr=1e-2), batches, forward=forward)
    h.assert_same_params(model["a"], reference["a"])
    h.assert_same_params(model["b"], reference["b"], rtol=1e-5, atol=1e-7)
    h.assert_same_params(model["c"], reference["c"])
    assert per_tensor_calls == []
    assert [len(plan.buckets) for plan in opt._layout.plans] == [2, 1]


def test_params_that_require_no_grad_are_left_alone(per_tensor_calls):
    model = h.net()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    pointer = model[0].weight.data_ptr()
    reference = copy.deepcopy(model)
    batches = h.batches(50)
    opt = Adam(model.parameters(), lr=1e-2)
    h.train(model, opt, batches)
    h.train(reference, torch.optim.Adam(reference.parameters(), lr=1e-2), batches)
    h.assert_same_params(model, reference)
    assert torch.equal(model[0].weight, frozen) and model[0].weight.data_ptr() == pointer
    assert model[0].weight not in opt.state
    assert per_tensor_calls == []


def test_freezing_a_flat_param_mid_run_matches_torch():
    model = h.net()
    reference = copy.deepcopy(model)
    batches = h.batches(60)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for m, o in ((model, opt), (reference, ref_opt)):
        h.train(m, o, batches[:30])
        m[0].requires_grad_(False)
        h.train(m, o, batches[30:])
    h.assert_same_params(model, reference)
    assert opt.state[model[0].weight]["step"].item() == 30


def test_replaced_data_and_grads_are_copied_back_into_the_flat_buffers():
    model = h.net()
    reference = copy.deepcopy(model)
    batches = h.batches(20)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    new_weight = torch.randn(5, 6, dtype=torch.float64)
    for m, o in ((model, opt), (reference, ref_opt)):
        h.train(m, o, batches[:5])
        m[0].weight.data = new_weight.clone()  # θ only
        h.train(m, o, batches[5:10])
        o.zero_grad()
        m[2].weight.grad = torch.ones(3, 5, dtype=torch.float64)  # replaced ...
        x, y = batches[10]
        nn.functional.cross_entropy(m(x), y).backward()  # ... and accumulated into
        o.step()
        h.train(m, o, batches[11:], zero_grad="module_none")
    h.assert_same_params(model, reference)
    assert h.shared_storages(model.parameters()) == 1


def test_params_that_share_or_stride_storage_stay_out_of_flat_buffers():
    def make():
        gen = torch.Generator().manual_seed(0)
        plain = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
        strided = torch.randn(4, 5, dtype=torch.float64, generator=gen).t().requires_grad_()
        tied = torch.randn(2, dtype=torch.float64, generator=gen).requires_grad_()
        alias = tied.detach().requires_grad_()  # another leaf on the same storage
        return [plain, strided, tied, alias]

    ours, ref = make(), make()
    grads = [h.grad_sequence(tuple(p.shape), 50, seed=i) for i, p in enumerate(ours)]
    opt = Adam(ours, lr=1e-2)
    h.run(opt, ours, grads)
    h.run(torch.optim.Adam(ref, lr=1e-2), ref, grads)
    h.assert_close(ours, ref)
    plan = opt._layout.plans[0]
    assert [b.params for b in plan.buckets] == [[ours[0]]]
    assert ours[2].data_ptr() == ours[3].data_ptr()  # the tie survives
    assert not ours[1].is_contiguous()


def test_flat_false_leaves_parameter_storage_alone():
    model = h.net()
    pointers = [p.data_ptr() for p in model.parameters()]
    opt = Adam(model.parameters(), flat=False)
    h.train(model, opt, h.batches(3))
    assert [p.data_ptr() for p in model.parameters()] == pointers
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_compiled_flat_update_matches_eager_without_recompiling():
    """compile=True on a small float32 model: one graph for all steps, eager's result."""
    dynamo_counters = pytest.importorskip("torch._dynamo.utils").counters
    compiled_model = h.net(torch.float32)
    eager_model = copy.deepcopy(compiled_model)
    batches = h.batches(30, dtype=torch.float32)
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    compiled_opt = Adam(compiled_model.parameters(), **kwargs, compile=True)
    eager_opt = Adam(eager_model.parameters(), **kwargs, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h.train(compiled_model, compiled_opt, batches[:1])
    failures = [str(w.message) for w in caught if str(w.message).startswith("Adam: torch.compile")]
    if failures:
        pytest.skip(f"torch.compile does not work here: {failures[0]}")
    assert compiled_opt._layout.plans[0].buckets[0].compiled
    graphs = dynamo_counters["stats"]["unique_graphs"]
    h.train(compiled_model, compiled_opt, batches[1:15])
    # As a scheduler would: new lr and betas mid-run.
    compiled_opt.param_groups[0].update(lr=3e-3, betas=(0.8, 0.99))
    h.train(compiled_model, compiled_opt, batches[15:])
    assert dynamo_counters["stats"]["unique_graphs"] == graphs  # t, α_t, ε̂, lr, β: no recompile
    h.train(eager_model, eager_opt, batches[:15])
    eager_opt.param_groups[0].update(lr=3e-3, betas=(0.8, 0.99))
    h.train(eager_model, eager_opt, batches[15:])
    h.assert_same_params(compiled_model, eager_model, rtol=1e-5, atol=1e-7)


def test_flat_step_bumps_parameter_versions_like_an_in_place_update():
    """A graph that saved θ before step() must fail in backward(), as with torch."""
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    opt = Adam([p])
    opt.step()  # flattens p
    loss = (p * p).sum()  # saves θ for backward
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ------------------------------------------------------------ the user's gradients


@pytest.mark.parametrize("opt_cls", [Adam, AdaMax])
def test_grads_are_never_written_into_or_replaced(opt_cls):
    """A gradient set by hand, or by backward(), is read and left as it was: the same
    tensor, the same values, the same version counter."""
    model = h.net()
    reference = copy.deepcopy(model)
    opt, ref_opt = opt_cls(model.parameters(), lr=1e-2), _torch_twin(opt_cls)(
        reference.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad, q.grad = g, g.clone()
        held = [(p.grad, p.grad.clone(), p.grad._version) for p in model.parameters()]
        opt.step()
        ref_opt.step()
        for p, (grad, values, version) in zip(model.parameters(), held, strict=True):
            assert p.grad is grad and torch.equal(grad, values) and grad._version == version
    h.assert_same_params(model, reference)
    x, y = h.batches(1)[0]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    from_backward = [(p.grad, p.grad.clone()) for p in model.parameters()]
    opt.step()
    assert all(p.grad is g and torch.equal(g, v)
               for p, (g, v) in zip(model.parameters(), from_backward, strict=True))


def test_a_gradient_changed_in_place_between_steps_is_read_again(per_tensor_calls):
    """The same gradient tensor on several steps: copied once while unchanged, and copied
    again after any in-place change (clipping, scaling, accumulating into it)."""
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    opt, ref_opt = Adam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2)
    grads = [torch.as_tensor(h.grad_sequence(p.shape, 1)[0]) for p in ours]
    for p, q, g in zip(ours, ref, grads, strict=True):
        p.grad, q.grad = g, g.clone()
    changes = [None, None, lambda g: g.mul_(0.5), None,
               lambda g: torch.nn.utils.clip_grad_norm_([g], 1e-3),
               lambda g: g.add_(torch.ones_like(g)), None]
    for change in changes:
        if change is not None:
            for p, q in zip(ours, ref, strict=True):
                change(p.grad)
                change(q.grad)
        opt.step()
        ref_opt.step()
        h.assert_close(ours, ref)
    assert per_tensor_calls == []


def _torch_twin(opt_cls):
    return {Adam: torch.optim.Adam, AdaMax: torch.optim.Adamax}[opt_cls]


@pytest.mark.parametrize(("opt_cls", "kwargs", "keys"), [
    (Adam, {"amsgrad": True}, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    (AdaMax, {}, ("exp_avg", "exp_inf")),
])
def test_other_rules_take_the_flat_buffers_too(opt_cls, kwargs, keys, per_tensor_calls):
    model = h.net()
    reference = copy.deepcopy(model)
    opt = opt_cls(model.parameters(), lr=1e-2, **kwargs)
    ref_opt = _torch_twin(opt_cls)(reference.parameters(), lr=1e-2, **kwargs)
    data = h.batches(100)
    h.train(model, opt, data)
    h.train(reference, ref_opt, data)
    h.assert_same_params(model, reference)
    h.assert_same_state(opt, ref_opt)
    assert per_tensor_calls == []
    params = list(model.parameters())
    assert h.shared_storages(params) == 1
    for key in keys:
        assert h.shared_storages(opt.state[p][key] for p in params) == 1


def test_switching_amsgrad_on_mid_run_rebuilds_the_buckets(per_tensor_calls):
    """The rule's state tensors changed: the layout is planned again, v_max starts at 0
    (torch's Adam fails here, on a state without v_max) and the step continues flat."""
    model = h.net()
    opt = Adam(model.parameters(), lr=1e-2)
    data = h.batches(20)
    h.train(model, opt, data[:10])
    state = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    opt.param_groups[0]["amsgrad"] = True
    h.train(model, opt, data[10:])
    assert per_tensor_calls == []
    for p in model.parameters():
        assert opt.state[p]["step"].item() == 20
        assert not torch.equal(opt.state[p]["exp_avg"], state[p]["exp_avg"])
        assert (opt.state[p]["max_exp_avg_sq"] >= opt.state[p]["exp_avg_sq"]).all()


# ------------------------------------------- the compiled runner, with torch.compile stood in


@pytest.fixture
def fake_compile(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """torch.compile replaced by a recorder that runs the rule eagerly, on a fresh compiler
    state: each call of the "compiled" rule is recorded with its values' dtypes. Set
    ``calls[0]["fail"]`` to an exception to make the next calls raise it."""
    from src.optim import flat

    calls: list[dict] = [{"compiled": [], "runs": [], "fail": None}]

    def compile(rule, **options):
        calls[0]["compiled"].append((rule, options))

        def compiled(*args, **kwargs):
            if calls[0]["fail"] is not None:
                raise calls[0]["fail"]
            tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
            calls[0]["runs"].append({k: (v.dtype, v.dim()) for k, v in tensors.items()})
            calls[0].setdefault("devices", set()).update(v.device for v in tensors.values())
            return rule(*args, **kwargs)

        return compiled

    monkeypatch.setattr(flat, "_compiler", flat._Compiler())
    monkeypatch.setattr(flat.torch, "compile", compile)
    return calls


def _steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], n: int) -> None:
    grads = [h.grad_sequence(p.shape, n, seed=i) for i, p in enumerate(params)]
    h.run(opt, params, grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_compiled_bucket_gets_its_values_as_0d_tensors_in_the_kernels_precision(
        dtype, fake_compile):
    ours = h.make_params([(5,), (3, 2)], dtype=dtype)
    eager = h.clone(ours)
    _steps(Adam(ours, weight_decay=0.1, compile=True), ours, 3)
    _steps(Adam(eager, weight_decay=0.1, compile=False), eager, 3)
    record = fake_compile[0]
    assert [(rule, options) for rule, options in record["compiled"]] == [
        (Adam.rule, {"dynamic": False})]  # one graph for the rule, static shapes
    # One bucket, three steps; the values as 0-d tensors, float32 for 16-bit θ (ε survives).
    value_dtype = torch.float32 if dtype == torch.float16 else dtype
    assert len(record["runs"]) == 3
    assert all(set(run.values()) == {(value_dtype, 0)} for run in record["runs"])
    assert set(record["runs"][0]) >= {"step_size", "eps_hat", "beta2"}
    h.assert_close(ours, eager, rtol=0, atol=0)


def test_compile_none_compiles_buckets_from_auto_compile_numel_elements_on(fake_compile):
    from src.optim.flat import AUTO_COMPILE_NUMEL

    for numel, compiled in [(AUTO_COMPILE_NUMEL - 1, False), (AUTO_COMPILE_NUMEL, True)]:
        (p,) = h.make_params([(numel,)], dtype=torch.float32)
        p.grad = torch.ones_like(p)
        opt = Adam([p])
        opt.step()
        assert opt._layout.plans[0].buckets[0].use_compile is compiled
        assert opt._layout.plans[0].buckets[0].compiled is compiled
    assert len(fake_compile[0]["runs"]) == 1


def test_a_failing_compile_warns_once_and_every_bucket_runs_eagerly(fake_compile):
    fake_compile[0]["fail"] = RuntimeError("no C++ compiler: " + "x" * 400)
    ours, eager = h.make_params([(4,)]), h.make_params([(4,)])
    others = h.make_params([(3,)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _steps(AdaMax(ours, compile=True), ours, 3)
        _steps(Adam(others, compile=True), others, 2)
    assert [(w.category, str(w.message)) for w in caught] == [(
        RuntimeWarning,
        "AdaMax: torch.compile of the flat update failed (RuntimeError: no C++ compiler: "
        + "x" * 283 + "); using the eager update from now on")]
    # Attributed to a caller, not to the line in src.optim.flat that warns.
    assert "warnings.warn(" not in linecache.getline(caught[0].filename, caught[0].lineno)
    assert len(fake_compile[0]["compiled"]) == 1  # compiled once, never tried again
    _steps(AdaMax(eager, compile=False), eager, 3)
    h.assert_close(ours, eager, rtol=0, atol=0)


def test_a_compiled_rule_that_fails_after_running_raises(fake_compile):
    (p,) = h.make_params([(4,)])
    opt = Adam([p], compile=True)
    _steps(opt, [p], 1)
    fake_compile[0]["fail"] = ValueError("bad values")
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="bad values"):
        opt.step()


def test_the_compiled_values_live_on_thetas_device_whatever_the_default_device(fake_compile):
    (p,) = h.make_params([(4,)])
    opt = Adam([p], compile=True)
    _steps(opt, [p], 1)  # planned and compiled on the default device
    p.grad = torch.ones_like(p)
    with torch.device("meta"):  # a default device that is not θ's
        opt.step()
    assert fake_compile[0]["devices"] == {torch.device("cpu")}
    assert len(fake_compile[0]["runs"]) == 2


def test_a_bucket_whose_views_are_in_place_is_not_synced_again(monkeypatch, per_tensor_calls):
    from src.optim.flat import FlatLayout

    synced = []
    original = FlatLayout._sync
    monkeypatch.setattr(FlatLayout, "_sync",
                        lambda self, b, state: synced.append(1) or original(self, b, state))
    model = h.net()
    opt = Adam(model.parameters(), lr=1e-2, amsgrad=True)
    data = h.batches(6)
    h.train(model, opt, data[:3])
    assert len(synced) == 1  # the first step only: every later check finds the views in place
    weight = model[0].weight
    for key in ("step", "exp_avg", "max_exp_avg_sq"):  # a state tensor replaced, one at a time
        opt.state[weight][key] = opt.state[weight][key].clone()
        h.train(model, opt, data[3:4])
    assert len(synced) == 4 and per_tensor_calls == []
    del opt.state[weight]["exp_avg_sq"]  # a state tensor lost: put back (zeros) at the next sync
    h.train(model, opt, data[4:5])
    assert len(synced) == 5 and per_tensor_calls == []
    assert opt.state[weight]["exp_avg_sq"].untyped_storage().data_ptr() == (
        opt.state[model[2].weight]["exp_avg_sq"].untyped_storage().data_ptr())  # a view again


def test_a_cast_model_is_replanned_and_its_state_cast_along():
    model = h.net(torch.float32)
    reference = copy.deepcopy(model)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    data32 = h.batches(5, dtype=torch.float32)
    for m, o in ((model, opt), (reference, ref_opt)):
        h.train(m, o, data32)
        m.double()
    for state in ref_opt.state.values():  # what the flat layout does for a cast
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = state[key].double()
    data = h.batches(5, seed=1)
    h.train(model, opt, data)
    h.train(reference, ref_opt, data)
    h.assert_same_params(model, reference, rtol=1e-5, atol=1e-7)
    h.assert_same_state(opt, ref_opt)
    assert all(s["exp_avg"].dtype == torch.float64 for s in opt.state.values())
    assert h.shared_storages(model.parameters()) == 1  # flat again, in one float64 bucket


def test_a_step_before_any_gradient_plans_nothing_and_the_next_goes_flat(per_tensor_calls):
    model, reference = h.net(), h.net()
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for o in (opt, ref_opt):
        o.step()  # no gradient yet: nothing happens, in torch as here
        o.step()
    assert opt._layout.plans == [None] and not opt.state
    data = h.batches(5)
    h.train(model, opt, data)
    h.train(reference, ref_opt, data)
    h.assert_same_params(model, reference)
    assert per_tensor_calls == [] and h.shared_storages(model.parameters()) == 1


def test_a_loaded_state_of_the_wrong_shape_is_refused_naming_key_and_shapes():
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones_like(p)
    opt = AdaMax([p])
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["exp_inf"] = torch.zeros(2, 1, dtype=torch.float64)
    opt.load_state_dict(saved)
    with pytest.raises(RuntimeError) as refused:
        opt.step()
    assert str(refused.value) == (
        "AdaMax state 'exp_inf' has shape (2, 1) but its parameter has shape (3,)")


def test_a_sparse_parameter_without_gradient_is_left_alone_as_torch_leaves_it(per_tensor_calls):
    def params() -> list[torch.Tensor]:
        sparse = torch.sparse_coo_tensor([[0]], [1.0], (3,), dtype=torch.float64,
                                         check_invariants=True).requires_grad_()
        return [*h.make_params([(3,), (2,)]), sparse]

    ours, theirs = params(), params()
    grads = [h.grad_sequence(s, 5, seed=i) for i, s in enumerate([(3,), (2,)])]
    h.run(Adam(ours), ours[:2], grads)
    h.run(torch.optim.Adam(theirs), theirs[:2], grads)
    h.assert_close(ours[:2], theirs[:2])
    assert ours[2].grad is None and torch.equal(ours[2].to_dense(), theirs[2].to_dense())
    assert per_tensor_calls == [] and h.shared_storages(ours[:2]) == 1
