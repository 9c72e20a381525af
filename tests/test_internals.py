"""src.internals: Adam's per-parameter step, 1/(√v̂+ε) and update ratio, against hand
computations, and the callback's logging (on when enabled, absent when not)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from src.config import ConfigError, InternalsConfig
from src.internals import AdamInternals, internals_metrics, param_internals
from src.optim import Adam
from src.run import internals_callbacks, train
from tests.test_config import composed

MODES = [("paper", True), ("keras", True), ("paper", False), ("keras", False)]


def hand(theta: np.ndarray, m: np.ndarray, v: np.ndarray, t: float, lr: float, b1: float,
         b2: float, eps: float, mode: str, bc: bool) -> tuple[np.ndarray, ...]:
    """Algorithm 1 written out: m̂, v̂ and where ε goes, per element (NumPy, float64)."""
    c1, c2 = (1 - b1**t, 1 - b2**t) if bc else (1.0, 1.0)
    m_hat, v_hat = m / c1, v / c2
    # paper: θ ← θ - α m̂/(√v̂ + ε); Keras: θ ← θ - α_t m/(√v + ε) with α_t = α √c2/c1,
    # i.e. α m̂ · √c2/(√v + ε)
    paper = mode == "paper"
    inv = 1 / (np.sqrt(v_hat) + eps) if paper else math.sqrt(c2) / (np.sqrt(v) + eps)
    step = np.abs(lr * m_hat * inv)
    return step, inv, step / np.abs(theta)


@pytest.mark.parametrize(("mode", "bc"), MODES)
def test_param_internals_match_a_hand_computation(mode: str, bc: bool) -> None:
    theta = np.array([0.5, -2.0, 1e-3, 3.0, -0.25])
    m = np.array([0.1, -0.02, 3e-4, 0.0, 0.5])
    v = np.array([0.04, 1e-4, 1e-8, 2.5e-3, 1e-12])
    t, lr, b1, b2, eps = 7.0, 1e-3, 0.9, 0.999, 1e-7
    got = param_internals(*(torch.tensor(x) for x in (theta, m, v)), t, lr=lr, beta1=b1,
                          beta2=b2, eps=eps, eps_mode=mode, bias_correction=bc)
    step, inv, ratio = hand(theta, m, v, t, lr, b1, b2, eps, mode, bc)
    np.testing.assert_allclose(got.step.numpy(), step, rtol=1e-12)
    np.testing.assert_allclose(got.inv_sqrt_v.numpy(), inv, rtol=1e-12)
    np.testing.assert_allclose(got.update_ratio.numpy(), ratio, rtol=1e-12)
    assert got.update_sq == pytest.approx(float(np.sum(step**2)), rel=1e-12)
    assert got.weight_sq == pytest.approx(float(np.sum(theta**2)), rel=1e-12)
    assert (got.numel, got.frozen) == (5, 0)


def test_without_bias_correction_keras_and_paper_coincide() -> None:
    args = [torch.tensor([1.0, 2.0]), torch.tensor([0.1, -0.3]), torch.tensor([1e-6, 4e-2]), 3.0]
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-3, bias_correction=False)
    paper = param_internals(*args, eps_mode="paper", **kw)
    keras = param_internals(*args, eps_mode="keras", **kw)
    assert torch.equal(paper.step, keras.step) and torch.equal(paper.inv_sqrt_v, keras.inv_sqrt_v)
    # ... while with it, keras's ε is ε/√(1-β2^t) in v̂ terms: a smaller 1/(√v̂+ε).
    kw["bias_correction"] = True
    assert (param_internals(*args, eps_mode="keras", **kw).inv_sqrt_v
            < param_internals(*args, eps_mode="paper", **kw).inv_sqrt_v).all()


def _trained(mode: str, bc: bool, steps: int = 6) -> tuple[torch.nn.Module, Adam, list]:
    """A tiny float64 model after a few steps of src.optim.Adam; also the last step's Δθ."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    net = net.double()
    unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # never gets a gradient
    opt = Adam([*net.parameters(), unused], lr=3e-2, betas=(0.8, 0.99), eps=1e-6,
               eps_mode=mode, bias_correction=bc)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,))
    for _ in range(steps):
        before = [p.detach().clone() for p in net.parameters()]
        loss = torch.nn.functional.cross_entropy(net(x), y) + 0.0 * unused.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    deltas = [(p.detach() - b) for p, b in zip(net.parameters(), before, strict=True)]
    return net, opt, deltas


@pytest.mark.parametrize(("mode", "bc"), MODES)
def test_metrics_of_a_trained_optimizer_match_numpy_and_the_real_update(mode: str,
                                                                       bc: bool) -> None:
    net, opt, deltas = _trained(mode, bc)
    got = internals_metrics(opt)
    # The hand computation from the optimizer's state (m_t, v_t, t) ...
    parts = {"step": [], "inv": [], "ratio": []}
    for p in net.parameters():
        s = opt.state[p]
        step, inv, ratio = hand(p.detach().numpy().ravel(), s["exp_avg"].numpy().ravel(),
                                s["exp_avg_sq"].numpy().ravel(), float(s["step"]), 3e-2, 0.8,
                                0.99, 1e-6, mode, bc)
        parts["step"].append(step)
        parts["inv"].append(inv)
        parts["ratio"].append(ratio)
    for key, name in (("step", "step"), ("inv", "inv_sqrt_v"), ("ratio", "update_ratio")):
        values = np.concatenate(parts[key])
        for q, suffix in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
            assert got[f"internals/{name}_{suffix}"] == pytest.approx(np.quantile(values, q),
                                                                      rel=1e-10)
    # ... and the effective step is the update the optimizer really applied last.
    applied = np.concatenate([d.abs().numpy().ravel() for d in deltas])
    np.testing.assert_allclose(np.sort(np.concatenate(parts["step"])), np.sort(applied),
                               rtol=1e-8, atol=1e-15)
    weights = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    unused_sq = 3.0  # the parameter without gradient: three ones, never updated
    assert got["internals/update_norm_ratio"] == pytest.approx(
        np.linalg.norm(applied) / math.sqrt(np.sum(weights**2) + unused_sq), rel=1e-8)
    # Its three elements have v = 0 (never a gradient): counted, not in the percentiles.
    assert got["internals/frozen_frac"] == pytest.approx(3 / (weights.size + 3))


def test_torch_adam_state_is_read_as_the_papers_adam() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2).double()
    ours, theirs = (Adam(net.parameters(), lr=1e-2), torch.optim.Adam(net.parameters(), lr=1e-2))
    x = torch.randn(8, 5, dtype=torch.float64)
    net(x).square().sum().backward()
    ours.step()  # moves θ; give torch's Adam the same state by stepping it from a copy
    for p in net.parameters():
        theirs.state[p] = {k: v.clone() for k, v in ours.state[p].items()}
    assert internals_metrics(ours) == internals_metrics(theirs)
    assert internals_metrics(torch.optim.Adam(net.parameters())) == {}  # no state yet


def test_large_models_are_subsampled_without_touching_the_global_rng() -> None:
    _, opt, _ = _trained("paper", True)
    exact = internals_metrics(opt)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    sampled = internals_metrics(opt, max_elements=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(1), expected_next)
    assert set(sampled) == set(exact)
    assert sampled["internals/update_norm_ratio"] == exact["internals/update_norm_ratio"]
    assert sampled["internals/step_p50"] != exact["internals/step_p50"]  # 20 draws of 23


def test_logged_after_every_nth_and_the_last_epoch() -> None:
    callback = AdamInternals(every_n_epochs=2)
    due = [callback._due(SimpleNamespace(current_epoch=e, max_epochs=5)) for e in range(5)]
    assert due == [False, True, False, True, True]
    with pytest.raises(ConfigError, match="internals.every_n_epochs"):
        InternalsConfig(every_n_epochs=0)


def _store_client(tmp_path: Path) -> MlflowClient:
    from src.tracking import open_store

    return open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_training_logs_internals_only_when_enabled(tiny_mnist: Path, tmp_path: Path) -> None:
    base = composed(f"data.root={tiny_mnist}", "data.val_size=100", "trainer.max_epochs=2",
                    "model.hidden=[16]")
    client = _store_client(tmp_path)
    assert internals_callbacks(base) == []  # disabled (the default): nothing is attached
    off = train(base, client=client)
    on_config = replace(base, internals=InternalsConfig(enabled=True))
    assert [type(c) for c in internals_callbacks(on_config)] == [AdamInternals]
    on = train(on_config, client=client)

    assert not any(k.startswith("internals/") for k in off.history)
    assert not any(k.startswith("internals/") for k in client.get_run(off.run_id).data.metrics)
    assert on.history["internals/epoch"] == [1.0, 2.0]
    assert all(len(on.history[f"internals/{k}"]) == 2 for k in
               ("step_p10", "step_p50", "step_p90", "inv_sqrt_v_p50", "update_ratio_p50",
                "update_norm_ratio", "frozen_frac"))
    history = client.get_metric_history(on.run_id, "internals/step_p50")
    assert [m.step for m in history] == [1, 2]  # MLflow step = epoch, like the other curves
    assert 0 < on.history["internals/step_p10"][-1] <= on.history["internals/step_p50"][-1]
    # Reading the state changes nothing about training.
    for key in ("train/loss", "val/loss", "val/acc"):
        assert on.history[key] == off.history[key]
    assert on.final == off.final


def test_amsgrad_internals_are_the_step_it_applied() -> None:
    """With AMSGrad the step divides by max(v); the effective step must still equal |Δθ|."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).double()
    opt = Adam(net.parameters(), lr=3e-2, betas=(0.8, 0.9), amsgrad=True)
    x = torch.randn(16, 4, dtype=torch.float64)
    for k in range(8):
        before = [p.detach().clone() for p in net.parameters()]
        opt.zero_grad()
        # Shrinking losses make v_t fall below its running maximum.
        (net(x).square().sum() * 0.5**k).backward()
        opt.step()
    applied = torch.cat([(p.detach() - b).abs().ravel()
                         for p, b in zip(net.parameters(), before, strict=True)])
    assert any(bool((opt.state[p]["max_exp_avg_sq"] > opt.state[p]["exp_avg_sq"]).any())
               for p in net.parameters())
    got = internals_metrics(opt, max_elements=1 << 20)
    for q, suffix in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
        assert got[f"internals/step_{suffix}"] == pytest.approx(
            float(torch.quantile(applied, q)), rel=1e-8)
