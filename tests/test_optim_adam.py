"""src.optim.Adam and AdamW against torch.optim.Adam/AdamW and NumPy transcriptions of
Algorithm 1, on the flat-buffer path (the default) and per tensor (flat=False): every option,
the project's ε placements and bias-correction switch combined with them, state dicts in both
directions, tensor hyperparameters and half precision."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch

from src.optim import Adam, AdamW
from tests import optim_helpers as h

_one_thread = h.one_thread


def _compare_with_torch(shapes, group_kwargs, torch_kwargs=None, steps=h.STEPS, flat=True) -> None:
    """Run ours and torch.optim.Adam on identical gradients; params must agree."""
    torch_kwargs = {"foreach": False} if torch_kwargs is None else torch_kwargs
    ours = h.make_params(shapes)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, steps, seed=i) for i, s in enumerate(shapes)]
    h.run(Adam(ours, **group_kwargs, flat=flat), ours, grads)
    h.run(torch.optim.Adam(ref, **group_kwargs, **torch_kwargs), ref, grads)
    h.assert_close(ours, ref)


# --------------------------------------------------------------------------- parity


@h.FLAT
@pytest.mark.parametrize("betas", h.BETAS)
@pytest.mark.parametrize("shape", h.SHAPES)
def test_parity_with_torch_shapes_and_betas(shape, betas, flat):
    _compare_with_torch([shape], {"lr": 1e-2, "betas": betas}, flat=flat)


@h.FLAT
@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.0])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_parity_with_torch_eps_and_weight_decay(eps, weight_decay, flat):
    kwargs = {"lr": 3e-3, "eps": eps, "weight_decay": weight_decay}
    _compare_with_torch(h.SHAPES, kwargs, flat=flat)


@h.FLAT
def test_parity_with_torch_foreach_implementation(flat):
    kwargs = {"lr": 1e-2, "weight_decay": 0.01}
    _compare_with_torch(h.SHAPES, kwargs, torch_kwargs={"foreach": True}, flat=flat)


@h.FLAT
def test_parity_with_torch_two_param_groups(flat):
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, seed=i) for i, s in enumerate(h.SHAPES)]

    def groups(params):
        return [
            {"params": params[:2], "lr": 1e-2, "betas": (0.5, 0.9)},
            {"params": params[2:], "lr": 1e-3, "betas": (0.99, 0.9999), "weight_decay": 0.1},
        ]

    h.run(Adam(groups(ours), eps=1e-6, flat=flat), ours, grads)
    h.run(torch.optim.Adam(groups(ref), eps=1e-6, foreach=False), ref, grads)
    h.assert_close(ours, ref)


@h.FLAT
def test_parity_with_torch_on_quadratic_loss_via_closure(flat):
    """Gradients that depend on θ (feedback), driven through `closure`."""
    gen = torch.Generator().manual_seed(3)
    curvature = torch.rand(5, 3, generator=gen, dtype=torch.float64) * 10
    target = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    ours = h.make_params([(5, 3)])
    ref = h.clone(ours)

    def make_closure(opt, p):
        def closure():
            opt.zero_grad()
            loss = (curvature * (p - target) ** 2).sum()
            loss.backward()
            return loss

        return closure

    opt_ours = Adam(ours, lr=1e-2, flat=flat)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for _ in range(h.STEPS):
        loss_ours = opt_ours.step(make_closure(opt_ours, ours[0]))
        loss_ref = opt_ref.step(make_closure(opt_ref, ref[0]))
        torch.testing.assert_close(loss_ours, loss_ref, rtol=h.RTOL, atol=1e-12)
    h.assert_close(ours, ref)


@h.FLAT
def test_parity_with_torch_when_grads_are_intermittently_none(flat):
    """A param without a gradient is skipped, and its own t does not advance."""
    ours = h.make_params([(3,), (4,)])
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, 300, seed=i) for i, s in enumerate([(3,), (4,)])]
    opt_ours = Adam(ours, lr=1e-2, flat=flat)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, foreach=False)
    for k in range(300):
        for params, opt in ((ours, opt_ours), (ref, opt_ref)):
            params[0].grad = torch.as_tensor(grads[0][k])
            params[1].grad = torch.as_tensor(grads[1][k]) if k % 3 == 0 else None
            opt.step()
    h.assert_close(ours, ref)
    assert opt_ours.state[ours[1]]["step"].item() == 100


@h.FLAT
def test_parity_with_torch_float32_and_complex(flat):
    for dtype, rtol in ((torch.float32, 1e-5), (torch.complex128, h.RTOL)):
        ours = h.make_params([(6,), (2, 3)], dtype=dtype)
        ref = h.clone(ours)
        opt_ours = Adam(ours, lr=1e-2, weight_decay=0.01, flat=flat)
        opt_ref = torch.optim.Adam(ref, lr=1e-2, weight_decay=0.01, foreach=False)
        gen = torch.Generator().manual_seed(4)
        for _ in range(200):
            for p_ours, p_ref in zip(ours, ref, strict=True):
                g = torch.randn(p_ours.shape, generator=gen, dtype=dtype)
                p_ours.grad, p_ref.grad = g, g.clone()
            opt_ours.step()
            opt_ref.step()
        h.assert_close(ours, ref, rtol=rtol)


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


@h.FLAT
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("eps_mode", ["paper", "keras"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.5), (0.99, 0.9999)])
def test_against_numpy_reference(betas, eps_mode, bias_correction, flat):
    kwargs = {"lr": 1e-2, "eps": 1e-3, "eps_mode": eps_mode, "bias_correction": bias_correction}
    (p,) = h.make_params([(4, 3, 2)])
    theta0 = p.detach().numpy().copy()
    grads = h.grad_sequence((4, 3, 2))
    h.run(Adam([p], betas=betas, flat=flat, **kwargs), [p], [grads])
    expected = _numpy_adam(theta0, grads, beta1=betas[0], beta2=betas[1], **kwargs)
    h.assert_close([p], [torch.from_numpy(expected)])


def test_keras_eps_differs_from_paper_eps():
    """Sanity: with ε comparable to √v_t the two modes really are different updates."""
    grads = h.grad_sequence((7,), 50)
    results = {}
    for mode in ("paper", "keras"):
        (p,) = h.make_params([(7,)])
        h.run(Adam([p], lr=1e-2, eps=1e-3, eps_mode=mode), [p], [grads])
        results[mode] = p.detach()
    assert not torch.allclose(results["paper"], results["keras"], rtol=1e-3)


# ------------------------------------------------------------------- state dicts


@h.FLAT
def test_state_dict_round_trip_is_exact(flat):
    n, m = 300, 200
    shapes = h.SHAPES[1:]
    grads = [h.grad_sequence(s, n + m, seed=i) for i, s in enumerate(shapes)]

    def groups(params):
        return [
            {"params": params[:1], "eps_mode": "keras"},
            {"params": params[1:], "betas": (0.5, 0.9), "weight_decay": 0.1},
        ]

    straight = h.make_params(shapes)
    h.run(Adam(groups(straight), lr=1e-2, flat=flat), straight, grads)

    interrupted = h.make_params(shapes)
    first = Adam(groups(interrupted), lr=1e-2, flat=flat)
    h.run(first, interrupted, grads, stop=n)
    saved = h.roundtrip(first.state_dict())
    resumed_params = h.clone(interrupted)
    # Same group layout but different options: they must come from the checkpoint.
    resumed = Adam(
        [{"params": resumed_params[:1]}, {"params": resumed_params[1:]}], lr=0.5, flat=flat
    )
    resumed.load_state_dict(saved)
    h.run(resumed, resumed_params, grads, start=n)

    for a, b in zip(resumed_params, straight, strict=True):
        assert torch.equal(a, b)
    assert resumed.param_groups[0]["eps_mode"] == "keras"


@h.FLAT
def test_state_layout_matches_torch(flat):
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, 3, seed=i) for i, s in enumerate(h.SHAPES)]
    opt_ours, opt_ref = Adam(ours, flat=flat), torch.optim.Adam(ref)
    h.run(opt_ours, ours, grads)
    h.run(opt_ref, ref, grads)
    sd_ours, sd_ref = opt_ours.state_dict()["state"], opt_ref.state_dict()["state"]
    assert sd_ours.keys() == sd_ref.keys()
    for i in sd_ref:
        assert sd_ours[i].keys() == sd_ref[i].keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key in sd_ref[i]:
            assert sd_ours[i][key].shape == sd_ref[i][key].shape
            assert sd_ours[i][key].dtype == sd_ref[i][key].dtype
        assert sd_ours[i]["step"].item() == sd_ref[i]["step"].item() == 3


@h.FLAT
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_interchanges_with_torch(direction, flat):
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}
    h.check_state_dict_interchange(functools.partial(Adam, flat=flat), torch.optim.Adam, kwargs,
                                   direction)


def test_loading_fused_torch_state_moves_step_to_cpu_float32():
    (p,) = h.make_params([(3,)])
    p.grad = torch.ones(3, dtype=torch.float64)
    fused = torch.optim.Adam([p], fused=True)
    fused.step()
    ours = Adam([p])
    ours.load_state_dict(copy.deepcopy(fused.state_dict()))
    step = ours.state[p]["step"]
    assert step.device.type == "cpu" and step.dtype == torch.float32 and step.item() == 1
    ours.step()
    assert ours.state[p]["step"].item() == 2


def test_loading_torch_amsgrad_state_continues_as_torch():
    """Loading a state dict with an option on carries the option and its state along."""
    grads = h.grad_sequence((3,), 200)
    (p,) = h.make_params([(3,)])
    (reference,) = h.clone([p])
    torch_opt = torch.optim.Adam([p], lr=1e-2, amsgrad=True)
    h.run(torch_opt, [p], [grads], stop=100)
    ours = Adam([p], lr=0.5)
    ours.load_state_dict(h.roundtrip(torch_opt.state_dict()))
    assert ours.param_groups[0]["amsgrad"] is True and ours.param_groups[0]["lr"] == 1e-2
    h.run(ours, [p], [grads], start=100)
    h.run(torch.optim.Adam([reference], lr=1e-2, amsgrad=True), [reference], [grads])
    h.assert_close([p], [reference])
    assert "max_exp_avg_sq" in ours.state[p]


# ----------------------------------------------------------------- edge cases


def test_params_without_grad_are_untouched():
    used, unused = h.make_params([(3,), (4,)])
    before = unused.detach().clone()
    opt = Adam([used, unused], lr=0.1)
    used.grad = torch.ones(3, dtype=torch.float64)
    for _ in range(5):
        opt.step()
    assert torch.equal(unused, before)
    assert unused not in opt.state
    assert opt.state[used]["step"].item() == 5


def test_grad_is_not_modified_by_weight_decay():
    (p,) = h.make_params([(5,)])
    grad = torch.ones(5, dtype=torch.float64)
    p.grad = grad.clone()
    Adam([p], weight_decay=0.5).step()
    assert torch.equal(p.grad, grad)


def test_closure_returns_loss():
    (p,) = h.make_params([(3,)])
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
    first, second = h.make_params([(3,), (4,)])
    opt = Adam([{"params": [first], "betas": [0, 0.5]}, {"params": [second]}], betas=[0.8, 0.9])
    assert opt.param_groups[0]["betas"] == (0.0, 0.5)
    assert opt.param_groups[1]["betas"] == (0.8, 0.9)


def test_accepts_hydra_config_values():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"lr": 1e-2, "betas": [0.9, 0.99], "eps_mode": "keras"})
    (p,) = h.make_params([(3,)])
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
    (p,) = h.make_params([(3,)])
    with pytest.raises(ValueError, match=name):
        Adam([p], **kwargs)
    # The same check applies to every parameter group, not just the defaults.
    with pytest.raises(ValueError, match=name):
        Adam([{"params": [p], **kwargs}])


def test_rejected_param_group_is_not_added():
    first, second = h.make_params([(3,), (4,)])
    opt = Adam([first])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [second], "lr": -1.0})
    assert len(opt.param_groups) == 1


# ------------------------------------------------------- every torch.optim.Adam option

OPTIONS = {
    "amsgrad": {"amsgrad": True},
    "maximize": {"maximize": True, "weight_decay": 0.1},
    "decoupled": {"decoupled_weight_decay": True, "weight_decay": 0.1},
    "all": {"amsgrad": True, "maximize": True, "decoupled_weight_decay": True,
            "weight_decay": 0.05},
}


@h.FLAT
@pytest.mark.parametrize("option", OPTIONS)
def test_every_torch_option_matches_torch(option, flat):
    _compare_with_torch(h.SHAPES, {"lr": 1e-2, "betas": (0.8, 0.99), **OPTIONS[option]},
                        flat=flat)


@h.FLAT
def test_adamw_is_torchs_adamw(flat):
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, seed=i) for i, s in enumerate(h.SHAPES)]
    opt = AdamW(ours, lr=1e-2, flat=flat)
    assert opt.defaults["weight_decay"] == torch.optim.AdamW(h.clone(ref)).defaults["weight_decay"]
    h.run(opt, ours, grads)
    h.run(torch.optim.AdamW(ref, lr=1e-2, foreach=False), ref, grads)
    h.assert_close(ours, ref)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def _numpy_adam_with_options(theta, grads, lr, beta1, beta2, eps, eps_mode, bias_correction,
                             amsgrad, maximize, weight_decay, decoupled):
    """Algorithm 1 as torch.optim.Adam documents its options, with either ε placement."""
    theta = theta.copy()
    m, v, v_max = (np.zeros_like(theta) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled:
            theta = theta * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        v_used = v_max if amsgrad else v
        c1, c2 = (1 - beta1**t, 1 - beta2**t) if bias_correction else (1.0, 1.0)
        if eps_mode == "keras":
            theta = theta - lr * math.sqrt(c2) / c1 * m / (np.sqrt(v_used) + eps)
        else:
            theta = theta - lr * (m / c1) / (np.sqrt(v_used / c2) + eps)
    return theta


@h.FLAT
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("eps_mode", ["paper", "keras"])
@pytest.mark.parametrize("option", OPTIONS)
def test_eps_mode_and_bias_correction_combine_with_every_option(option, eps_mode,
                                                                bias_correction, flat):
    kwargs = {"weight_decay": 0.0, **OPTIONS[option]}
    (p,) = h.make_params([(4, 3, 2)])
    theta0 = p.detach().numpy().copy()
    grads = h.grad_sequence((4, 3, 2))
    opt = Adam([p], lr=1e-2, betas=(0.8, 0.99), eps=1e-3, eps_mode=eps_mode,
               bias_correction=bias_correction, flat=flat, **kwargs)
    h.run(opt, [p], [grads])
    expected = _numpy_adam_with_options(
        theta0, grads, lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-3, eps_mode=eps_mode,
        bias_correction=bias_correction, amsgrad=kwargs.get("amsgrad", False),
        maximize=kwargs.get("maximize", False), weight_decay=kwargs["weight_decay"],
        decoupled=kwargs.get("decoupled_weight_decay", False))
    h.assert_close([p], [torch.from_numpy(expected)])


@h.FLAT
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_round_trips_with_torch_for_each_option(direction, option, flat):
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), **OPTIONS[option]}
    second = h.check_state_dict_interchange(functools.partial(Adam, flat=flat),
                                            torch.optim.Adam, kwargs, direction)
    for key, value in OPTIONS[option].items():  # every option came from the checkpoint
        assert second.param_groups[0][key] == value


# ----------------------------------------------------- fused=True: torch's own kernel

FUSED_OPTIONS = {"default": {}, **OPTIONS, "weight_decay": {"weight_decay": 0.1},
                 "tensor lr": {"lr": torch.tensor(0.02)}}


def _same_bits(ours: list[torch.Tensor], ref: list[torch.Tensor], opt, ref_opt) -> None:
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)
    theirs = ref_opt.state_dict()["state"]
    for i, state in opt.state_dict()["state"].items():
        assert state.keys() == theirs[i].keys()
        for key, value in state.items():
            assert value.dtype == theirs[i][key].dtype, key
            assert torch.equal(value, theirs[i][key]), key


@h.FLAT
@pytest.mark.parametrize("option", FUSED_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_is_torchs_fused_adam_bit_for_bit(dtype, option, flat):
    """fused=True runs torch's kernel: params and state equal torch.optim.Adam(fused=True)'s
    exactly, also while one parameter skips steps (stepped alone then, by the same kernel)."""
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), **FUSED_OPTIONS[option]}
    ours = h.make_params(h.SHAPES, dtype=dtype)
    ref = h.clone(ours)
    opt = Adam(ours, fused=True, flat=flat, **copy.deepcopy(kwargs))
    ref_opt = torch.optim.Adam(ref, fused=True, **copy.deepcopy(kwargs))
    grads = [h.grad_sequence(s, 60, seed=i) for i, s in enumerate(h.SHAPES)]
    for k in range(60):
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad = torch.as_tensor(g[k]).to(dtype)
            q.grad = p.grad.clone()
        if k % 7 == 3:
            ours[1].grad = ref[1].grad = None
        opt.step()
        ref_opt.step()
    _same_bits(ours, ref, opt, ref_opt)


def test_fused_adamw_is_torchs_fused_adamw_bit_for_bit():
    ours = h.make_params(h.SHAPES, dtype=torch.float32)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, 50, seed=i) for i, s in enumerate(h.SHAPES)]
    opt, ref_opt = AdamW(ours, lr=1e-2, fused=True), torch.optim.AdamW(ref, lr=1e-2, fused=True)
    h.run(opt, ours, grads)
    h.run(ref_opt, ref, grads)
    _same_bits(ours, ref, opt, ref_opt)


def test_fused_is_never_compiled():
    """compile=True does not reach the kernel: the results stay torch's fused ones exactly."""
    ours = h.make_params([(300,)], dtype=torch.float32)
    ref = h.clone(ours)
    grads = [h.grad_sequence((300,), 20)]
    opt = Adam(ours, lr=1e-2, fused=True, compile=True)
    ref_opt = torch.optim.Adam(ref, lr=1e-2, fused=True)
    h.run(opt, ours, grads)
    h.run(ref_opt, ref, grads)
    _same_bits(ours, ref, opt, ref_opt)
    assert all(b.scratch is None and not b.compiled for b in opt._layout.plans[0].buckets)


@pytest.mark.parametrize("kwargs", [{"eps_mode": "keras"}, {"bias_correction": False}],
                         ids=["keras", "no bias correction"])
def test_fused_runs_the_rule_where_torch_has_no_kernel_for_the_update(kwargs):
    """The project's own options have no torch kernel: fused=True steps them by the rule,
    exactly as fused=None does."""
    ours = h.make_params(h.SHAPES, dtype=torch.float32)
    rule = h.clone(ours)
    grads = [h.grad_sequence(s, 50, seed=i) for i, s in enumerate(h.SHAPES)]
    h.run(Adam(ours, lr=1e-2, eps=1e-3, fused=True, **kwargs), ours, grads)
    h.run(Adam(rule, lr=1e-2, eps=1e-3, **kwargs), rule, grads)
    for p, q in zip(ours, rule, strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------ tensor hyperparameters

TENSOR_HYPERPARAMETERS = {
    "0-d lr": {"lr": torch.tensor(1e-2, dtype=torch.float64)},
    "1-element lr": {"lr": torch.tensor([1e-2], dtype=torch.float64)},
    "0-d betas": {"betas": (torch.tensor(0.8, dtype=torch.float64),
                            torch.tensor(0.99, dtype=torch.float64))},
    "1-element betas": {"lr": torch.tensor(1e-2, dtype=torch.float64),
                        "betas": (torch.tensor([[0.8]], dtype=torch.float64),
                                  torch.tensor([0.99], dtype=torch.float64))},
}


@h.FLAT
@pytest.mark.parametrize("case", TENSOR_HYPERPARAMETERS)
def test_tensor_lr_and_betas_match_torch_and_follow_a_scheduler(case, flat):
    """Tensor hyperparameters as torch accepts them on CPU; a scheduler fills the tensor lr
    in place, and the next step must use the new value."""
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "amsgrad": True,
              **TENSOR_HYPERPARAMETERS[case]}
    ours = h.make_params(h.SHAPES)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, 300, seed=i) for i, s in enumerate(h.SHAPES)]
    opts = [Adam(ours, **copy.deepcopy(kwargs), flat=flat),
            torch.optim.Adam(ref, **copy.deepcopy(kwargs), foreach=False)]
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.99) for o in opts]
    for k in range(300):
        for params, opt in zip((ours, ref), opts, strict=True):
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.as_tensor(g[k])
            opt.step()
        if k % 10 == 9:
            for scheduler in schedulers:
                scheduler.step()
    h.assert_close(ours, ref)
    assert float(opts[0].param_groups[0]["lr"]) == pytest.approx(1e-2 * 0.99**30)


# ---------------------------------------------------------------------- half precision


@h.FLAT
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_params_are_stepped_as_torch_steps_them(dtype, flat):
    """16-bit params on both paths, against torch's per-tensor Adam in the same dtype.

    The two order their rounding differently (α_t and ε̂ folded here, m̂ and v̂ in torch), so
    they agree to a few units in the last place; the params move far more than that, so a
    path that skipped 16-bit params could not pass."""
    shapes = [(64,), (8, 16)]
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]
    ref = h.clone(ours)
    start = [p.detach().clone() for p in ours]
    kwargs = {"lr": 1e-2, "eps": 1e-3, "weight_decay": 0.1, "amsgrad": True}
    opt, ref_opt = Adam(ours, **kwargs, flat=flat), torch.optim.Adam(ref, **kwargs, foreach=False)
    for _ in range(40):
        for p, q in zip(ours, ref, strict=True):
            g = torch.randn(p.shape, generator=gen).to(dtype)
            p.grad, q.grad = g, g.clone()
        opt.step()
        ref_opt.step()
    for p, q, p0 in zip(ours, ref, start, strict=True):
        assert p.dtype == dtype
        moved = (q.detach() - p0).float().abs().mean()
        assert moved > 0.05  # torch moved them ...
        # ... and so did we, the same way, within a few last-place units of 16-bit floats.
        torch.testing.assert_close(p.detach().float(), q.detach().float(), rtol=0, atol=0.02)


# --- what torch's defaults, keywords and pickles promise (mutation testing found these open) --


@pytest.mark.parametrize(("ours", "theirs"), [(Adam, torch.optim.Adam),
                                              (AdamW, torch.optim.AdamW)])
def test_defaults_are_torchs_key_for_key(ours, theirs) -> None:
    mine, torchs = ours(h.make_params([(3,)])).defaults, theirs(h.make_params([(3,)])).defaults
    assert {key: mine[key] for key in torchs} == torchs
    assert (mine["eps_mode"], mine["bias_correction"]) == ("paper", True)


def test_adamw_passes_every_keyword_on() -> None:
    group = AdamW(h.make_params([(3,)]), amsgrad=True, maximize=True, eps_mode="keras").defaults
    assert (group["amsgrad"], group["maximize"], group["eps_mode"]) == (True, True, "keras")
    assert group["decoupled_weight_decay"] is True


def test_the_flat_layout_is_the_default_and_compile_is_chosen_by_size() -> None:
    default, per_tensor = Adam(h.make_params([(3,)])), Adam(h.make_params([(3,)]), flat=False)
    group = default.param_groups[0]
    assert default.uses_flat(group) and not per_tensor.uses_flat(group)
    assert default._compile is None  # None: compiled for large buckets only (src.optim.flat)
    assert Adam(h.make_params([(3,)]), compile=True)._compile is True


def test_a_tensor_lr_with_foreach_is_refused_as_torch_refuses_it() -> None:
    message = "lr as a Tensor is not supported for capturable=False and foreach=True"
    with pytest.raises(ValueError, match=message):
        torch.optim.Adam(h.make_params([(3,)]), lr=torch.tensor(1e-3), foreach=True)
    with pytest.raises(ValueError, match=message):
        Adam(h.make_params([(3,)]), lr=torch.tensor(1e-3), foreach=True)


def test_adamw_loaded_from_an_old_pickle_decays_decoupled() -> None:
    optimizer = AdamW(h.make_params([(3,)]))
    state = optimizer.__getstate__()
    for group in state["param_groups"]:
        del group["decoupled_weight_decay"]  # saved before torch had the option
    fresh = AdamW(h.make_params([(3,)]))
    fresh.__setstate__(state)
    assert [g["decoupled_weight_decay"] for g in fresh.param_groups] == [True]
    assert fresh.defaults["lr"] == 1e-3


@pytest.mark.parametrize("weight", [0.25, torch.tensor(0.25, dtype=torch.float64)])
def test_the_moving_average_is_a_convex_combination(weight) -> None:
    from src.optim.adam import moving_average_

    average = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    x = torch.tensor([3.0, 2.0, -4.0], dtype=torch.float64)
    moving_average_(average, x, weight)  # average ← 0.75·average + 0.25·x
    torch.testing.assert_close(average, torch.tensor([1.5, -1.0, 2.0], dtype=torch.float64))


def test_the_rule_descends_unless_told_to_maximize() -> None:
    from src.optim.adam import adam

    theta, grad = torch.zeros(2), torch.tensor([1.0, -1.0])
    adam(theta, grad, torch.zeros(2), torch.zeros(2), one_minus_beta1=1.0, beta2=0.0,
         one_minus_beta2=1.0, step_size=0.1, eps_hat=0.0)
    torch.testing.assert_close(theta, torch.tensor([-0.1, 0.1]))  # against the gradient
