"""Tests for src.optim.Adam: parity with torch.optim.Adam and NumPy references, on both the
flat-buffer path (the default) and the per-tensor foreach path (flat=False), and every
transition between them."""

from __future__ import annotations

import copy
import functools
import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import src.optim as optim_module
from src.optim import Adam

STEPS = 1000
RTOL = 1e-6
SHAPES = [(1,), (7,), (5, 3), (4, 3, 2)]
BETAS = [(0.9, 0.999), (0.1, 0.1), (0.0, 0.5), (0.99, 0.9999)]
# Hand-set gradients are new tensors every step, so on the flat path they are copied into
# the flat gradient buffer (the training-loop case, no copy, is tested further down).
FLAT = pytest.mark.parametrize("flat", [True, False], ids=["flat", "foreach"])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _grad_sequence(shape, steps=STEPS, seed=0) -> np.ndarray:
    """Random gradients whose scale wanders over 4 decades, so ε matters at times."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-4, 0, size=(steps,) + (1,) * len(shape))
    return rng.standard_normal((steps, *shape)) * scale


def _make_params(shapes, seed=1, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def _clone(params) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def _run(opt, params, grads, start=0, stop=None) -> None:
    """Feed the pre-drawn gradients grads[i][k] to params[i] for steps start..stop-1."""
    stop = len(grads[0]) if stop is None else stop
    for k in range(start, stop):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.as_tensor(g[k], dtype=p.dtype)
        opt.step()


def _assert_close(actual, expected, rtol=RTOL) -> None:
    for a, e in zip(actual, expected, strict=True):
        a = torch.as_tensor(a).detach()
        e = torch.as_tensor(e).detach().to(a.dtype)
        torch.testing.assert_close(a, e, rtol=rtol, atol=1e-12)


def _compare_with_torch(shapes, group_kwargs, torch_kwargs=None, steps=STEPS, flat=True) -> None:
    """Run ours and torch.optim.Adam on identical gradients; params must agree."""
    torch_kwargs = {"foreach": False} if torch_kwargs is None else torch_kwargs
    ours = _make_params(shapes)
    ref = _clone(ours)
    grads = [_grad_sequence(s, steps, seed=i) for i, s in enumerate(shapes)]
    _run(Adam(ours, **group_kwargs, flat=flat), ours, grads)
    _run(torch.optim.Adam(ref, **group_kwargs, **torch_kwargs), ref, grads)
    _assert_close(ours, ref)


# --------------------------------------------------------------------------- parity


@FLAT
@pytest.mark.parametrize("betas", BETAS)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_torch_shapes_and_betas(shape, betas, flat):
    _compare_with_torch([shape], {"lr": 1e-2, "betas": betas}, flat=flat)


@FLAT
@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.0])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_parity_with_torch_eps_and_weight_decay(eps, weight_decay, flat):
    kwargs = {"lr": 3e-3, "eps": eps, "weight_decay": weight_decay}
    _compare_with_torch(SHAPES, kwargs, flat=flat)


@FLAT
def test_parity_with_torch_foreach_implementation(flat):
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    _compare_with_torch(SHAPES, kwargs, torch_kwargs={"foreach": True}, flat=flat)


@FLAT
def test_parity_with_torch_two_param_groups(flat):
    ours = _make_params(SHAPES)
    ref = _clone(ours)
    grads = [_grad_sequence(s, seed=i) for i, s in enumerate(SHAPES)]

    def groups(params):
        return [
            {"params": params[:2], "lr": 1e-2, "betas": (0.5, 0.9)},
            {"params": params[2:], "lr": 1e-3, "betas": (0.99, 0.9999), "weight_decay": 0.1},
        ]

    _run(Adam(groups(ours), eps=1e-6, flat=flat), ours, grads)
    _run(torch.optim.Adam(groups(ref), eps=1e-6, foreach=False), ref, grads)
    _assert_close(ours, ref)


@FLAT
def test_parity_with_torch_on_quadratic_loss_via_closure(flat):
    """Gradients that depend on θ (feedback), driven through `closure`."""
    gen = torch.Generator().manual_seed(3)
    curvature = torch.rand(5, 3, generator=gen, dtype=torch.float64) * 10
    target = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    ours = _make_params([(5, 3)])
    ref = _clone(ours)

    def make_closure(opt, p):
        def closure():
            opt.zero_grad()
            loss = (curvature * (p - target) ** 2).sum()
            loss.backward()
            return loss

        return closure

    opt_ours = Adam(ours, lr=1e-2, flat=flat)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for _ in range(STEPS):
        loss_ours = opt_ours.step(make_closure(opt_ours, ours[0]))
        loss_ref = opt_ref.step(make_closure(opt_ref, ref[0]))
        torch.testing.assert_close(loss_ours, loss_ref, rtol=RTOL, atol=1e-12)
    _assert_close(ours, ref)


@FLAT
def test_parity_with_torch_when_grads_are_intermittently_none(flat):
    """A param without a gradient is skipped, and its own t does not advance."""
    ours = _make_params([(3,), (4,)])
    ref = _clone(ours)
    grads = [_grad_sequence(s, 300, seed=i) for i, s in enumerate([(3,), (4,)])]
    opt_ours = Adam(ours, lr=1e-2, flat=flat)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for k in range(300):
        for params, opt in ((ours, opt_ours), (ref, opt_ref)):
            params[0].grad = torch.as_tensor(grads[0][k])
            params[1].grad = torch.as_tensor(grads[1][k]) if k % 3 == 0 else None
            opt.step()
    _assert_close(ours, ref)
    assert opt_ours.state[ours[1]]["step"].item() == 100


@FLAT
def test_parity_with_torch_float32_and_complex(flat):
    for dtype, rtol in ((torch.float32, 1e-5), (torch.complex128, RTOL)):
        ours = _make_params([(6,), (2, 3)], dtype=dtype)
        ref = _clone(ours)
        opt_ours = Adam(ours, lr=1e-2, weight_decay=0.01, flat=flat)
        opt_ref = torch.optim.Adam(ref, lr=1e-2, weight_decay=0.01, foreach=False)
        gen = torch.Generator().manual_seed(4)
        for _ in range(200):
            for p_ours, p_ref in zip(ours, ref, strict=True):
                g = torch.randn(p_ours.shape, generator=gen, dtype=dtype)
                p_ours.grad, p_ref.grad = g, g.clone()
            opt_ours.step()
            opt_ref.step()
        _assert_close(ours, ref, rtol=rtol)


# ------------------------------------------------------------- NumPy references


def _numpy_adam(theta, grads, lr, beta1, beta2, eps, eps_mode, bias_correction):
    """Literal transcriptions: Algorithm 1 (paper) and Keras's Adam update."""
    theta = theta.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if eps_mode == "keras":
            lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) if bias_correction else lr
            m += (g - m) * (1 - beta1)
            v += (g * g - v) * (1 - beta2)
            theta -= lr_t * m / (np.sqrt(v) + eps)
        else:
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat = m / (1 - beta1**t) if bias_correction else m
            v_hat = v / (1 - beta2**t) if bias_correction else v
            theta -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@FLAT
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("eps_mode", ["paper", "keras"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.5), (0.99, 0.9999)])
def test_against_numpy_reference(betas, eps_mode, bias_correction, flat):
    kwargs = {"lr": 1e-2, "eps": 1e-3, "eps_mode": eps_mode, "bias_correction": bias_correction}
    (p,) = _make_params([(4, 3, 2)])
    theta0 = p.detach().numpy().copy()
    grads = _grad_sequence((4, 3, 2))
    _run(Adam([p], betas=betas, flat=flat, **kwargs), [p], [grads])
    expected = _numpy_adam(theta0, grads, beta1=betas[0], beta2=betas[1], **kwargs)
    _assert_close([p], [torch.from_numpy(expected)])


def test_keras_eps_differs_from_paper_eps():
    """Sanity: with ε comparable to √v_t the two modes really are different updates."""
    grads = _grad_sequence((7,), 50)
    results = {}
    for mode in ("paper", "keras"):
        (p,) = _make_params([(7,)])
        _run(Adam([p], lr=1e-2, eps=1e-3, eps_mode=mode), [p], [grads])
        results[mode] = p.detach()
    assert not torch.allclose(results["paper"], results["keras"], rtol=1e-3)


# ------------------------------------------------------------------- state dicts


def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@FLAT
def test_state_dict_round_trip_is_exact(flat):
    n, m = 300, 200
    shapes = SHAPES[1:]
    grads = [_grad_sequence(s, n + m, seed=i) for i, s in enumerate(shapes)]

    def groups(params):
        return [
            {"params": params[:1], "eps_mode": "keras"},
            {"params": params[1:], "betas": (0.5, 0.9), "weight_decay": 0.1},
        ]

    straight = _make_params(shapes)
    _run(Adam(groups(straight), lr=1e-2, flat=flat), straight, grads)

    interrupted = _make_params(shapes)
    first = Adam(groups(interrupted), lr=1e-2, flat=flat)
    _run(first, interrupted, grads, stop=n)
    saved = _roundtrip(first.state_dict())
    resumed_params = _clone(interrupted)
    # Same group layout but different options: they must come from the checkpoint.
    resumed = Adam(
        [{"params": resumed_params[:1]}, {"params": resumed_params[1:]}], lr=0.5, flat=flat
    )
    resumed.load_state_dict(saved)
    _run(resumed, resumed_params, grads, start=n)

    for a, b in zip(resumed_params, straight, strict=True):
        assert torch.equal(a, b)
    assert resumed.param_groups[0]["eps_mode"] == "keras"


@FLAT
def test_state_layout_matches_torch(flat):
    ours = _make_params(SHAPES)
    ref = _clone(ours)
    grads = [_grad_sequence(s, 3, seed=i) for i, s in enumerate(SHAPES)]
    opt_ours, opt_ref = Adam(ours, flat=flat), torch.optim.Adam(ref)
    _run(opt_ours, ours, grads)
    _run(opt_ref, ref, grads)
    sd_ours, sd_ref = opt_ours.state_dict()["state"], opt_ref.state_dict()["state"]
    assert sd_ours.keys() == sd_ref.keys()
    for i in sd_ref:
        assert sd_ours[i].keys() == sd_ref[i].keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key in sd_ref[i]:
            assert sd_ours[i][key].shape == sd_ref[i][key].shape
            assert sd_ours[i][key].dtype == sd_ref[i][key].dtype
        assert sd_ours[i]["step"].item() == sd_ref[i]["step"].item() == 3


@FLAT
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_interchanges_with_torch(direction, flat):
    n, m = 300, 300
    grads = [_grad_sequence(s, n + m, seed=i) for i, s in enumerate(SHAPES)]
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}
    ours_cls = functools.partial(Adam, flat=flat)
    if direction == "torch_to_ours":
        first_cls, second_cls = torch.optim.Adam, ours_cls
    else:
        first_cls, second_cls = ours_cls, torch.optim.Adam

    reference = _make_params(SHAPES)
    _run(torch.optim.Adam(reference, foreach=False, **kwargs), reference, grads)

    params = _make_params(SHAPES)
    first = first_cls(params, **kwargs)
    _run(first, params, grads, stop=n)
    params = _clone(params)
    second = second_cls(params, lr=0.5)  # hyperparameters must come from the checkpoint
    second.load_state_dict(_roundtrip(first.state_dict()))
    _run(second, params, grads, start=n)
    _assert_close(params, reference)


def test_loading_fused_torch_state_moves_step_to_cpu_float32():
    (p,) = _make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    fused = torch.optim.Adam([p], fused=True)
    fused.step()
    ours = Adam([p])
    ours.load_state_dict(copy.deepcopy(fused.state_dict()))
    step = ours.state[p]["step"]
    assert step.device.type == "cpu" and step.dtype == torch.float32 and step.item() == 1
    ours.step()
    assert ours.state[p]["step"].item() == 2


def test_loading_torch_state_with_unsupported_option_is_rejected():
    (p,) = _make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    amsgrad = torch.optim.Adam([p], amsgrad=True)
    amsgrad.step()
    with pytest.raises(ValueError, match="amsgrad"):
        Adam([p]).load_state_dict(amsgrad.state_dict())


# ----------------------------------------------------------------- edge cases


def test_params_without_grad_are_untouched():
    used, unused = _make_params([(3,), (4,)])
    before = unused.detach().clone()
    opt = Adam([used, unused], lr=0.1)
    used.grad = torch.ones(3, dtype=torch.float64)
    for _ in range(5):
        opt.step()
    assert torch.equal(unused, before)
    assert unused not in opt.state
    assert opt.state[used]["step"].item() == 5


def test_grad_is_not_modified_by_weight_decay():
    (p,) = _make_params([(5,)])
    grad = torch.ones(5, dtype=torch.float64)
    p.grad = grad.clone()
    Adam([p], weight_decay=0.5).step()
    assert torch.equal(p.grad, grad)


def test_closure_returns_loss():
    (p,) = _make_params([(3,)])
    opt = Adam([p])

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    expected = (p.detach() ** 2).sum()
    loss = opt.step(closure)
    assert torch.is_tensor(loss) and torch.equal(loss.detach(), expected)
    assert opt.step() is None


def test_sparse_gradients_are_rejected():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        Adam(embedding.parameters()).step()


def test_betas_sequence_is_stored_as_tuple_of_floats():
    first, second = _make_params([(3,), (4,)])
    opt = Adam([{"params": [first], "betas": [0, 0.5]}, {"params": [second]}], betas=[0.8, 0.9])
    assert opt.param_groups[0]["betas"] == (0.0, 0.5)
    assert opt.param_groups[1]["betas"] == (0.8, 0.9)


def test_accepts_hydra_config_values():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"lr": 1e-2, "betas": [0.9, 0.99], "eps_mode": "keras"})
    (p,) = _make_params([(3,)])
    opt = Adam([p], lr=cfg.lr, betas=cfg.betas, eps_mode=cfg.eps_mode)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"eps": -1.0}, "eps"),
        ({"betas": (1.0, 0.9)}, r"beta1 \(betas\[0\]\)"),
        ({"betas": (0.9, -0.1)}, r"beta2 \(betas\[1\]\)"),
        ({"betas": (0.9,)}, "betas"),
        ({"betas": (0.9, "0.999")}, "betas"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eps_mode": "foo"}, "eps_mode"),
        ({"bias_correction": "yes"}, "bias_correction"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, name):
    (p,) = _make_params([(3,)])
    with pytest.raises(ValueError, match=name):
        Adam([p], **kwargs)
    # The same check applies to every parameter group, not just the defaults.
    with pytest.raises(ValueError, match=name):
        Adam([{"params": [p], **kwargs}])


def test_rejected_param_group_is_not_added():
    first, second = _make_params([(3,), (4,)])
    opt = Adam([first])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [second], "lr": -1.0})
    assert len(opt.param_groups) == 1


# ------------------------------------------------------------------ flat buffers


@pytest.fixture
def foreach_calls(monkeypatch):
    """Record each call of the per-tensor path (src.optim._adam): its number of tensors."""
    calls: list[int] = []
    original = optim_module._adam

    def spy(params, *args, **kwargs):
        calls.append(len(params))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(optim_module, "_adam", spy)
    return calls


def _net(dtype=torch.float64, seed=0) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def _batches(n, seed=0, dtype=torch.float64, shape=(8, 6), classes=3):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(shape, generator=gen, dtype=dtype), torch.randint(classes, (shape[0],)))
        for _ in range(n)
    ]


def _train(model, opt, batches, zero_grad="optimizer", forward=None) -> None:
    """Lightning's order: zero_grad → forward → backward → step."""
    for k, (x, y) in enumerate(batches):
        if zero_grad == "optimizer":
            opt.zero_grad()
        elif zero_grad == "optimizer_keep":
            opt.zero_grad(set_to_none=False)
        else:
            assert zero_grad == "module_none"
            model.zero_grad(set_to_none=True)
        logits = model(x) if forward is None else forward(model, x, k)
        # Several heads (a tuple): one loss each, so they share no rounding errors.
        heads = logits if isinstance(logits, tuple) else (logits,)
        sum(nn.functional.cross_entropy(h, y).double() for h in heads).backward()
        opt.step()


def _assert_same_params(model, reference, rtol=RTOL, atol=1e-12) -> None:
    """Parameters equal up to rtol (float32 runs: atol too, for entries that cross 0)."""
    pairs = zip(model.named_parameters(), reference.named_parameters(), strict=True)
    for (name, a), (_, b) in pairs:
        torch.testing.assert_close(
            a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


def _shared_storages(tensors) -> int:
    return len({t.untyped_storage().data_ptr() for t in tensors})


@pytest.mark.parametrize("zero_grad", ["optimizer", "optimizer_keep", "module_none"])
def test_module_training_matches_torch_on_the_flat_path(zero_grad, foreach_calls):
    """Forward/backward through a real module; every step is a flat one."""
    model = _net()
    reference = copy.deepcopy(model)
    batches = _batches(200)
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    opt = Adam(model.parameters(), **kwargs)
    _train(model, opt, batches, zero_grad)
    ref_opt = torch.optim.Adam(reference.parameters(), **kwargs, foreach=False)
    _train(reference, ref_opt, batches, zero_grad)
    _assert_same_params(model, reference)
    assert foreach_calls == []
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
    batches = _batches(30, shape=(16, 1, 28, 28), classes=10)
    _train(model, Adam(model.parameters(), lr=1e-3), batches)
    _train(reference, torch.optim.Adam(reference.parameters(), lr=1e-3, fused=True), batches)
    _assert_same_params(model, reference)
    assert _shared_storages(model.parameters()) == 1


def test_params_grads_and_state_are_views_of_flat_buffers():
    model = _net()
    params = list(model.parameters())
    opt = Adam(params)
    batches = _batches(4)
    _train(model, opt, batches[:1])
    assert _shared_storages(params) == 1
    grads = [p.grad for p in params]
    assert _shared_storages(grads) == 1
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert _shared_storages(opt.state[p][key] for p in params) == 1
    _train(model, opt, batches[1:])
    # zero_grad zeroed the gradient buffer in place and backward accumulated into it.
    assert all(p.grad is g for p, g in zip(params, grads, strict=True))
    opt.zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(params, grads, strict=True))
    # state_dict() still holds one tensor per parameter, shaped like torch's.
    state = opt.state_dict()["state"]
    for i, p in enumerate(params):
        assert state[i]["exp_avg"].shape == state[i]["exp_avg_sq"].shape == p.shape
        assert state[i]["step"].shape == () and state[i]["step"].dtype == torch.float32
        assert state[i]["step"].item() == 4


def test_zero_grad_keeps_flat_grads_and_sets_the_rest_to_none():
    (flat,) = _make_params([(3,)])
    (complex_,) = _make_params([(2,)], dtype=torch.complex128)  # never flattened
    for p in (flat, complex_):
        p.grad = torch.ones_like(p)
    opt = Adam([flat, complex_])
    opt.step()
    opt.zero_grad()
    assert complex_.grad is None
    assert flat.grad is not None and not flat.grad.any()
    # A frozen parameter gets torch's set_to_none back, so the steps skip it again.
    flat.requires_grad_(False)
    opt.zero_grad()
    assert flat.grad is None


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.body = nn.Linear(6, 5).double()
            self.head_a = nn.Linear(5, 3).double()
            self.head_b = nn.Linear(5, 3).double()

    def forward(self, x, use_b=True):
        h = torch.tanh(self.body(x))
        return self.head_a(h) + self.head_b(h) if use_b else self.head_a(h)


@pytest.mark.parametrize(
    ("ours_zero_grad", "torch_zero_grad"),
    [
        # The exact torch semantics: head_b has no grad, so it is skipped.
        ("module_none", "module_none"),
        # The documented difference: opt.zero_grad() keeps zeroed views, so an unused
        # head_b is stepped with g_t = 0, as torch does after zero_grad(set_to_none=False).
        ("optimizer", "optimizer_keep"),
    ],
)
def test_param_unused_on_some_steps(ours_zero_grad, torch_zero_grad):
    model, reference = _TwoHeads(), _TwoHeads()
    batches = _batches(90)

    def forward(m, x, k):
        return m(x, use_b=k % 3 == 0)

    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    _train(model, opt, batches, ours_zero_grad, forward)
    _train(reference, ref_opt, batches, torch_zero_grad, forward)
    _assert_same_params(model, reference)
    expected_t = 30 if ours_zero_grad == "module_none" else 90
    assert opt.state[model.head_b.bias]["step"].item() == expected_t
    assert ref_opt.state[reference.head_b.bias]["step"].item() == expected_t


def test_flat_path_falls_back_and_resumes_when_step_counters_agree_again(foreach_calls):
    model = _net()
    reference = copy.deepcopy(model)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    batches = _batches(30)
    _train(model, opt, batches[:5])
    _train(reference, ref_opt, batches[:5])
    assert foreach_calls == []
    for m, o in ((model, opt), (reference, ref_opt)):  # one step without the last bias
        o.zero_grad()
        nn.functional.cross_entropy(m(batches[5][0]), batches[5][1]).backward()
        m[2].bias.grad = None
        o.step()
    assert foreach_calls == [3]  # the bucket took a per-tensor step, skipping the bias
    _train(model, opt, batches[6:10])
    _train(reference, ref_opt, batches[6:10])
    assert foreach_calls == [3, 4, 4, 4, 4]  # counters differ (9 vs 10): still per tensor
    _assert_same_params(model, reference)
    # A checkpoint whose counters agree makes the flat path usable again.
    donor = copy.deepcopy(reference)
    donor_opt = torch.optim.Adam(donor.parameters(), lr=1e-2)
    _train(donor, donor_opt, batches[10:12])
    model.load_state_dict(donor.state_dict())
    opt.load_state_dict(_roundtrip(donor_opt.state_dict()))
    reference.load_state_dict(donor.state_dict())
    ref_opt.load_state_dict(_roundtrip(donor_opt.state_dict()))
    calls = len(foreach_calls)
    _train(model, opt, batches[12:])
    _train(reference, ref_opt, batches[12:])
    assert len(foreach_calls) == calls
    _assert_same_params(model, reference)
    assert _shared_storages(model.parameters()) == 1


@pytest.mark.parametrize("source", ["ours", "torch"])
def test_checkpoint_loaded_into_running_flat_optimizer_and_model(source, foreach_calls):
    """model.load_state_dict and opt.load_state_dict after the buffers exist."""
    n, m = 40, 40
    batches = _batches(n + m)
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99)}
    reference = _net()
    _train(reference, torch.optim.Adam(reference.parameters(), **kwargs, foreach=False), batches)

    donor = _net()
    donor_opt = (Adam if source == "ours" else torch.optim.Adam)(donor.parameters(), **kwargs)
    _train(donor, donor_opt, batches[:n])
    model_checkpoint = _roundtrip(donor.state_dict())
    opt_checkpoint = _roundtrip(donor_opt.state_dict())

    model = _net(seed=1)
    opt = Adam(model.parameters(), lr=0.5)  # hyperparameters must come from the checkpoint
    _train(model, opt, _batches(5, seed=1))
    model.load_state_dict(model_checkpoint)
    for p, (name, loaded) in zip(model.parameters(), model_checkpoint.items(), strict=True):
        assert torch.equal(p, loaded), name
    opt.load_state_dict(opt_checkpoint)
    _train(model, opt, batches[n:])
    _assert_same_params(model, reference)
    assert foreach_calls == []  # the loaded state was copied into the flat buffers
    assert _shared_storages(model.parameters()) == 1


def test_model_state_dict_saves_and_reloads_after_flattening():
    model = _net()
    _train(model, Adam(model.parameters(), lr=1e-2), _batches(5))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _net(seed=1)
    fresh.load_state_dict(torch.load(buffer))
    _assert_same_params(fresh, model, rtol=0)
    assert _shared_storages(fresh.parameters()) == len(list(fresh.parameters()))


def test_two_groups_with_mixed_dtypes_match_torch(foreach_calls):
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
    batches = _batches(100)
    opt = Adam(groups(model), lr=1e-2)
    _train(model, opt, batches, forward=forward)
    _train(reference, torch.optim.Adam(groups(reference), lr=1e-2), batches, forward=forward)
    _assert_same_params(model["a"], reference["a"])
    _assert_same_params(model["b"], reference["b"], rtol=1e-5, atol=1e-7)
    _assert_same_params(model["c"], reference["c"])
    assert foreach_calls == []
    assert [len(plan.buckets) for plan in opt._plans] == [2, 1]


def test_params_that_require_no_grad_are_left_alone(foreach_calls):
    model = _net()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    pointer = model[0].weight.data_ptr()
    reference = copy.deepcopy(model)
    batches = _batches(50)
    opt = Adam(model.parameters(), lr=1e-2)
    _train(model, opt, batches)
    _train(reference, torch.optim.Adam(reference.parameters(), lr=1e-2), batches)
    _assert_same_params(model, reference)
    assert torch.equal(model[0].weight, frozen) and model[0].weight.data_ptr() == pointer
    assert model[0].weight not in opt.state
    assert foreach_calls == []


def test_freezing_a_flat_param_mid_run_matches_torch():
    model = _net()
    reference = copy.deepcopy(model)
    batches = _batches(60)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for m, o in ((model, opt), (reference, ref_opt)):
        _train(m, o, batches[:30])
        m[0].requires_grad_(False)
        _train(m, o, batches[30:])
    _assert_same_params(model, reference)
    assert opt.state[model[0].weight]["step"].item() == 30


def test_replaced_data_and_grads_are_copied_back_into_the_flat_buffers():
    model = _net()
    reference = copy.deepcopy(model)
    batches = _batches(20)
    opt = Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    new_weight = torch.randn(5, 6, dtype=torch.float64)
    for m, o in ((model, opt), (reference, ref_opt)):
        _train(m, o, batches[:5])
        m[0].weight.data = new_weight.clone()  # θ only: p.grad is still the flat view
        _train(m, o, batches[5:10])
        o.zero_grad()
        m[2].weight.grad = torch.ones(3, 5, dtype=torch.float64)  # replaced ...
        x, y = batches[10]
        nn.functional.cross_entropy(m(x), y).backward()  # ... and accumulated into
        o.step()
        _train(m, o, batches[11:], zero_grad="module_none")
    _assert_same_params(model, reference)
    assert _shared_storages(model.parameters()) == 1


def test_params_that_share_or_stride_storage_stay_out_of_flat_buffers():
    def make():
        gen = torch.Generator().manual_seed(0)
        plain = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
        strided = torch.randn(4, 5, dtype=torch.float64, generator=gen).t().requires_grad_()
        tied = torch.randn(2, dtype=torch.float64, generator=gen).requires_grad_()
        alias = tied.detach().requires_grad_()  # another leaf on the same storage
        return [plain, strided, tied, alias]

    ours, ref = make(), make()
    grads = [_grad_sequence(tuple(p.shape), 50, seed=i) for i, p in enumerate(ours)]
    opt = Adam(ours, lr=1e-2)
    _run(opt, ours, grads)
    _run(torch.optim.Adam(ref, lr=1e-2), ref, grads)
    _assert_close(ours, ref)
    plan = opt._plans[0]
    assert [b.params for b in plan.buckets] == [[ours[0]]]
    assert ours[2].data_ptr() == ours[3].data_ptr()  # the tie survives
    assert not ours[1].is_contiguous()


def test_flat_false_leaves_parameter_storage_alone():
    model = _net()
    pointers = [p.data_ptr() for p in model.parameters()]
    opt = Adam(model.parameters(), flat=False)
    _train(model, opt, _batches(3))
    assert [p.data_ptr() for p in model.parameters()] == pointers
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_implementation_options_survive_pickling_but_not_state_dicts():
    (p,) = _make_params([(3,)])
    opt = Adam([p], flat=False, compile=False)
    copied = copy.deepcopy(opt)
    assert (copied._flat, copied._compile) == (False, False)
    assert "flat" not in opt.state_dict()["param_groups"][0]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"flat": 1}, "flat"), ({"compile": "yes"}, "compile")]
)
def test_invalid_implementation_options_raise(kwargs, name):
    (p,) = _make_params([(3,)])
    with pytest.raises(ValueError, match=name):
        Adam([p], **kwargs)


def test_compiled_flat_update_matches_eager_without_recompiling():
    """compile=True on a small float32 model: one graph for all steps, eager's result."""
    dynamo_counters = pytest.importorskip("torch._dynamo.utils").counters
    compiled_model = _net(torch.float32)
    eager_model = copy.deepcopy(compiled_model)
    batches = _batches(30, dtype=torch.float32)
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    compiled_opt = Adam(compiled_model.parameters(), **kwargs, compile=True)
    eager_opt = Adam(eager_model.parameters(), **kwargs, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(compiled_model, compiled_opt, batches[:1])
    failures = [str(w.message) for w in caught if str(w.message).startswith("Adam: torch.compile")]
    if failures:
        pytest.skip(f"torch.compile does not work here: {failures[0]}")
    assert compiled_opt._plans[0].buckets[0].compiled
    graphs = dynamo_counters["stats"]["unique_graphs"]
    _train(compiled_model, compiled_opt, batches[1:15])
    # As a scheduler would: new lr and betas mid-run.
    compiled_opt.param_groups[0].update(lr=3e-3, betas=(0.8, 0.99))
    _train(compiled_model, compiled_opt, batches[15:])
    assert dynamo_counters["stats"]["unique_graphs"] == graphs  # t, α_t, ε̂, lr, β: no recompile
    _train(eager_model, eager_opt, batches[:15])
    eager_opt.param_groups[0].update(lr=3e-3, betas=(0.8, 0.99))
    _train(eager_model, eager_opt, batches[15:])
    _assert_same_params(compiled_model, eager_model, rtol=1e-5, atol=1e-7)


def test_flat_step_bumps_parameter_versions_like_an_in_place_update():
    """A graph that saved θ before step() must fail in backward(), as with torch."""
    (p,) = _make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    opt = Adam([p])
    opt.step()  # flattens p
    loss = (p * p).sum()  # saves θ for backward
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_step_hooks_and_profiler_ranges_work_as_in_torch():
    (p,) = _make_params([(3,)])
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
