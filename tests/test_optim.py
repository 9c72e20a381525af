"""Tests for src.optim.Adam: parity with torch.optim.Adam and NumPy references."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from src.optim import Adam

STEPS = 1000
RTOL = 1e-6
SHAPES = [(1,), (7,), (5, 3), (4, 3, 2)]
BETAS = [(0.9, 0.999), (0.1, 0.1), (0.0, 0.5), (0.99, 0.9999)]


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


def _compare_with_torch(shapes, group_kwargs, torch_kwargs=None, steps=STEPS) -> None:
    """Run ours and torch.optim.Adam on identical gradients; params must agree."""
    torch_kwargs = {"foreach": False} if torch_kwargs is None else torch_kwargs
    ours = _make_params(shapes)
    ref = _clone(ours)
    grads = [_grad_sequence(s, steps, seed=i) for i, s in enumerate(shapes)]
    _run(Adam(ours, **group_kwargs), ours, grads)
    _run(torch.optim.Adam(ref, **group_kwargs, **torch_kwargs), ref, grads)
    _assert_close(ours, ref)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("betas", BETAS)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_torch_shapes_and_betas(shape, betas):
    _compare_with_torch([shape], {"lr": 1e-2, "betas": betas})


@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.0])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_parity_with_torch_eps_and_weight_decay(eps, weight_decay):
    _compare_with_torch(SHAPES, {"lr": 3e-3, "eps": eps, "weight_decay": weight_decay})


def test_parity_with_torch_foreach_implementation():
    _compare_with_torch(SHAPES, {"lr": 1e-2, "weight_decay": 0.01}, torch_kwargs={"foreach": True})


def test_parity_with_torch_two_param_groups():
    ours = _make_params(SHAPES)
    ref = _clone(ours)
    grads = [_grad_sequence(s, seed=i) for i, s in enumerate(SHAPES)]

    def groups(params):
        return [
            {"params": params[:2], "lr": 1e-2, "betas": (0.5, 0.9)},
            {"params": params[2:], "lr": 1e-3, "betas": (0.99, 0.9999), "weight_decay": 0.1},
        ]

    _run(Adam(groups(ours), eps=1e-6), ours, grads)
    _run(torch.optim.Adam(groups(ref), eps=1e-6, foreach=False), ref, grads)
    _assert_close(ours, ref)


def test_parity_with_torch_on_quadratic_loss_via_closure():
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

    opt_ours, opt_ref = Adam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for _ in range(STEPS):
        loss_ours = opt_ours.step(make_closure(opt_ours, ours[0]))
        loss_ref = opt_ref.step(make_closure(opt_ref, ref[0]))
        torch.testing.assert_close(loss_ours, loss_ref, rtol=RTOL, atol=1e-12)
    _assert_close(ours, ref)


def test_parity_with_torch_when_grads_are_intermittently_none():
    """A param without a gradient is skipped, and its own t does not advance."""
    ours = _make_params([(3,), (4,)])
    ref = _clone(ours)
    grads = [_grad_sequence(s, 300, seed=i) for i, s in enumerate([(3,), (4,)])]
    opt_ours = Adam(ours, lr=1e-2)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for k in range(300):
        for params, opt in ((ours, opt_ours), (ref, opt_ref)):
            params[0].grad = torch.as_tensor(grads[0][k])
            params[1].grad = torch.as_tensor(grads[1][k]) if k % 3 == 0 else None
            opt.step()
    _assert_close(ours, ref)
    assert opt_ours.state[ours[1]]["step"].item() == 100


def test_parity_with_torch_float32_and_complex():
    for dtype, rtol in ((torch.float32, 1e-5), (torch.complex128, RTOL)):
        ours = _make_params([(6,), (2, 3)], dtype=dtype)
        ref = _clone(ours)
        opt_ours = Adam(ours, lr=1e-2, weight_decay=0.01)
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


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("eps_mode", ["paper", "keras"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.5), (0.99, 0.9999)])
def test_against_numpy_reference(betas, eps_mode, bias_correction):
    kwargs = {"lr": 1e-2, "eps": 1e-3, "eps_mode": eps_mode, "bias_correction": bias_correction}
    (p,) = _make_params([(4, 3, 2)])
    theta0 = p.detach().numpy().copy()
    grads = _grad_sequence((4, 3, 2))
    _run(Adam([p], betas=betas, **kwargs), [p], [grads])
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


def test_state_dict_round_trip_is_exact():
    n, m = 300, 200
    shapes = SHAPES[1:]
    grads = [_grad_sequence(s, n + m, seed=i) for i, s in enumerate(shapes)]

    def groups(params):
        return [
            {"params": params[:1], "eps_mode": "keras"},
            {"params": params[1:], "betas": (0.5, 0.9), "weight_decay": 0.1},
        ]

    straight = _make_params(shapes)
    _run(Adam(groups(straight), lr=1e-2), straight, grads)

    interrupted = _make_params(shapes)
    first = Adam(groups(interrupted), lr=1e-2)
    _run(first, interrupted, grads, stop=n)
    saved = _roundtrip(first.state_dict())
    resumed_params = _clone(interrupted)
    # Same group layout but different options: they must come from the checkpoint.
    resumed = Adam([{"params": resumed_params[:1]}, {"params": resumed_params[1:]}], lr=0.5)
    resumed.load_state_dict(saved)
    _run(resumed, resumed_params, grads, start=n)

    for a, b in zip(resumed_params, straight, strict=True):
        assert torch.equal(a, b)
    assert resumed.param_groups[0]["eps_mode"] == "keras"


def test_state_layout_matches_torch():
    ours = _make_params(SHAPES)
    ref = _clone(ours)
    grads = [_grad_sequence(s, 3, seed=i) for i, s in enumerate(SHAPES)]
    opt_ours, opt_ref = Adam(ours), torch.optim.Adam(ref)
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


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_interchanges_with_torch(direction):
    n, m = 300, 300
    grads = [_grad_sequence(s, n + m, seed=i) for i, s in enumerate(SHAPES)]
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}
    first_cls, second_cls = (
        (torch.optim.Adam, Adam) if direction == "torch_to_ours" else (Adam, torch.optim.Adam)
    )

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
