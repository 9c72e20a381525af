"""src.optim.AdaMax (Algorithm 2) against torch.optim.Adamax and a NumPy transcription of the
paper's §7.1, on the flat-buffer path and per tensor, with both ε placements."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from src.optim import AdaMax
from tests import optim_helpers as h

_one_thread = h.one_thread
per_tensor_calls = h.per_tensor_calls


def _compare_with_torch(shapes, kwargs, flat, torch_kwargs=None, steps=h.STEPS):
    ours = h.make_params(shapes)
    ref = h.clone(ours)
    grads = [h.grad_sequence(s, steps, seed=i) for i, s in enumerate(shapes)]
    h.run(AdaMax(ours, **kwargs, flat=flat), ours, grads)
    h.run(torch.optim.Adamax(ref, **kwargs, **(torch_kwargs or {"foreach": False})), ref, grads)
    h.assert_close(ours, ref)


@h.FLAT
@pytest.mark.parametrize("betas", h.BETAS)
def test_parity_with_torch_adamax_over_1000_steps(betas, flat):
    _compare_with_torch(h.SHAPES, {"lr": 2e-3, "betas": betas}, flat)


@h.FLAT
@pytest.mark.parametrize("kwargs", [{"weight_decay": 0.1}, {"maximize": True},
                                    {"weight_decay": 0.1, "maximize": True, "eps": 1e-3},
                                    {"eps": 0.0, "lr": 1e-2}],
                         ids=["weight_decay", "maximize", "both", "no_eps"])
def test_parity_with_torch_adamax_options(kwargs, flat):
    _compare_with_torch(h.SHAPES, kwargs, flat)


@h.FLAT
def test_parity_with_torch_foreach_adamax_and_complex(flat):
    _compare_with_torch(h.SHAPES, {"lr": 1e-2}, flat, torch_kwargs={"foreach": True})
    ours = h.make_params([(6,), (2, 3)], dtype=torch.complex128)
    ref = h.clone(ours)
    opt, ref_opt = AdaMax(ours, flat=flat), torch.optim.Adamax(ref)
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        for p, q in zip(ours, ref, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad, q.grad = g, g.clone()
        opt.step()
        ref_opt.step()
    h.assert_close(ours, ref)


def _numpy_adamax(theta, grads, lr, beta1, beta2, eps, eps_mode, bias_correction):
    """Algorithm 2 (Kingma & Ba §7.1) literally, with ε where torch or Keras puts it."""
    theta = theta.copy()
    m = np.zeros_like(theta)
    u = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        if eps_mode == "paper":
            u = np.maximum(beta2 * u, np.abs(g) + eps)
            denom = u
        else:
            u = np.maximum(beta2 * u, np.abs(g))
            denom = u + eps
        alpha_t = lr / (1 - beta1**t) if bias_correction else lr
        theta = theta - alpha_t * m / denom
    return theta


@h.FLAT
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("eps_mode", ["paper", "keras"])
def test_against_numpy_algorithm_2(eps_mode, bias_correction, flat):
    kwargs = {"lr": 2e-3, "eps": 1e-3, "eps_mode": eps_mode, "bias_correction": bias_correction}
    (p,) = h.make_params([(4, 3, 2)])
    theta0 = p.detach().numpy().copy()
    grads = h.grad_sequence((4, 3, 2))
    h.run(AdaMax([p], betas=(0.8, 0.99), flat=flat, **kwargs), [p], [grads])
    expected = _numpy_adamax(theta0, grads, beta1=0.8, beta2=0.99, **kwargs)
    h.assert_close([p], [torch.from_numpy(expected)])


def test_keras_eps_placement_differs_from_torchs():
    """Sanity: with ε comparable to u_t the two placements really are different updates
    (a short memory, β2 = 0.5, so the decayed ε of the max matters)."""
    grads = h.grad_sequence((7,), 50)
    moved = {}
    for mode in ("paper", "keras"):
        (p,) = h.make_params([(7,)])
        start = p.detach().clone()
        h.run(AdaMax([p], lr=1e-2, betas=(0.9, 0.5), eps=0.1, eps_mode=mode), [p], [grads])
        moved[mode] = p.detach() - start
    assert not torch.allclose(moved["paper"], moved["keras"], rtol=0.05)


@h.FLAT
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_interchanges_with_torch_adamax(direction, flat):
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}
    second = h.check_state_dict_interchange(functools.partial(AdaMax, flat=flat),
                                            torch.optim.Adamax, kwargs, direction)
    assert set(second.state_dict()["state"][0]) == {"step", "exp_avg", "exp_inf"}


@h.FLAT
def test_module_training_matches_torch_adamax(flat, per_tensor_calls):
    model = h.net()
    reference = h.net()
    data = h.batches(100)
    opt = AdaMax(model.parameters(), lr=1e-2, flat=flat)
    h.train(model, opt, data)
    ref_opt = torch.optim.Adamax(reference.parameters(), lr=1e-2)
    h.train(reference, ref_opt, data)
    h.assert_same_params(model, reference)
    h.assert_same_state(opt, ref_opt)
    assert (per_tensor_calls == []) == flat  # AdaMax takes the flat buffers too


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lr": -1.0}, "Invalid learning rate"),
    ({"betas": (0.0, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ({"eps": -1.0}, "Invalid epsilon value"),
    ({"weight_decay": -0.1}, "Invalid weight_decay value"),
    ({"eps_mode": "tf"}, "eps_mode"),
])
def test_invalid_arguments_raise_torchs_errors(kwargs, match):
    (p,) = h.make_params([(3,)])
    with pytest.raises(ValueError, match=match):
        AdaMax([p], **kwargs)


def test_sparse_gradients_are_rejected_with_torchs_message():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="Adamax does not support sparse gradients"):
        AdaMax(embedding.parameters()).step()


# --- torch's defaults and keywords, the rule's own defaults (mutation testing found these open) -


def test_defaults_are_torchs_key_for_key() -> None:
    params = h.make_params([(3,)])
    mine, torchs = AdaMax(params).defaults, torch.optim.Adamax(params).defaults
    assert {key: mine[key] for key in torchs} == torchs
    assert (mine["eps_mode"], mine["bias_correction"]) == ("paper", True)


def test_the_flat_layout_is_the_default_and_compile_is_passed_on() -> None:
    default, per_tensor = AdaMax(h.make_params([(3,)])), AdaMax(h.make_params([(3,)]), flat=False)
    group = default.param_groups[0]
    assert default.uses_flat(group) and not per_tensor.uses_flat(group)
    assert default._compile is None and AdaMax(h.make_params([(3,)]), compile=True)._compile is True


def test_a_tensor_lr_with_foreach_is_accepted_as_torchs_adamax_accepts_it() -> None:
    params, lr = h.make_params([(3,)]), torch.tensor(1e-3)
    torch.optim.Adamax(params, lr=lr, foreach=True)  # Adam's rule is not Adamax's
    assert AdaMax(params, lr=lr, foreach=True).defaults["foreach"] is True


def test_the_rule_defaults_to_torchs_eps_no_decay_and_descent() -> None:
    from src.optim.adamax import adamax

    theta, grad = torch.ones(2), torch.tensor([1.0, -2.0])
    exp_avg, exp_inf = torch.zeros(2), torch.zeros(2)
    adamax(theta, grad, exp_avg, exp_inf, one_minus_beta1=1.0, beta2=0.0, step_size=0.5, eps=1.0)
    # m = g; u = max(0, |g| + ε) (torch's ε, inside the max); θ ← θ - 0.5·m/u, no decay.
    torch.testing.assert_close(exp_inf, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(theta, torch.tensor([1.0 - 0.25, 1.0 + 1.0 / 3.0]))
