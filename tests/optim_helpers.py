"""What the src.optim tests share: pre-drawn gradient sequences, parameter factories, training
loops in Lightning's order, and the comparisons with torch.optim (imported, not collected)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import nn

STEPS = 1000
RTOL = 1e-6
SHAPES = [(1,), (7,), (5, 3), (4, 3, 2)]
BETAS = [(0.9, 0.999), (0.1, 0.1), (0.0, 0.5), (0.99, 0.9999)]
# Hand-set gradients are new tensors every step, so on the flat path they are copied into
# the flat gradient buffer (as gradients from backward() are).
FLAT = pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_tensor"])


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread, as training runs (and so the same reductions every time)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def grad_sequence(shape: Sequence[int], steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """Random gradients whose scale wanders over 4 decades, so ε matters at times."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-4, 0, size=(steps,) + (1,) * len(shape))
    return rng.standard_normal((steps, *shape)) * scale


def make_params(shapes: Sequence[Sequence[int]], seed: int = 1,
                dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def clone(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def run(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[np.ndarray],
        start: int = 0, stop: int | None = None) -> None:
    """Feed the pre-drawn gradients grads[i][k] to params[i] for steps start..stop-1."""
    stop = len(grads[0]) if stop is None else stop
    for k in range(start, stop):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.as_tensor(g[k], dtype=p.dtype)
        opt.step()


def assert_close(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                 rtol: float = RTOL, atol: float = 1e-12) -> None:
    for a, e in zip(actual, expected, strict=True):
        a = torch.as_tensor(a).detach()
        e = torch.as_tensor(e).detach().to(a.dtype)
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


def roundtrip(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def net(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def batches(n: int, seed: int = 0, dtype: torch.dtype = torch.float64,
            shape: tuple[int, ...] = (8, 6), classes: int = 3) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(shape, generator=gen, dtype=dtype), torch.randint(classes, (shape[0],)))
        for _ in range(n)
    ]


class TwoHeads(nn.Module):
    """A body and two heads; ``use_b=False`` leaves head_b without a gradient."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.body = nn.Linear(6, 5).double()
            self.head_a = nn.Linear(5, 3).double()
            self.head_b = nn.Linear(5, 3).double()

    def forward(self, x: torch.Tensor, use_b: bool = True) -> torch.Tensor:
        z = torch.tanh(self.body(x))
        return self.head_a(z) + self.head_b(z) if use_b else self.head_a(z)


def check_state_dict_interchange(ours: Callable[..., torch.optim.Optimizer],
                                 theirs: type[torch.optim.Optimizer], kwargs: dict,
                                 direction: str, n: int = 300) -> torch.optim.Optimizer:
    """n steps with one optimizer, its state dict (saved and loaded) into the other one built
    with lr=0.5, n more steps: the same params as torch alone; returns the second optimizer."""
    grads = [grad_sequence(s, 2 * n, seed=i) for i, s in enumerate(SHAPES)]
    first_cls, second_cls = (theirs, ours) if direction == "torch_to_ours" else (ours, theirs)
    reference = make_params(SHAPES)
    run(theirs(reference, foreach=False, **kwargs), reference, grads)
    params = make_params(SHAPES)
    first = first_cls(params, **kwargs)
    run(first, params, grads, stop=n)
    params = clone(params)
    second = second_cls(params, lr=0.5)  # hyperparameters must come from the checkpoint
    second.load_state_dict(roundtrip(first.state_dict()))
    run(second, params, grads, start=n)
    assert_close(params, reference)
    return second


Forward = Callable[[nn.Module, torch.Tensor, int], torch.Tensor | tuple[torch.Tensor, ...]]


def train(model: nn.Module, opt: torch.optim.Optimizer, data: Sequence[tuple[torch.Tensor, ...]],
          zero_grad: str = "optimizer", forward: Forward | None = None) -> None:
    """Lightning's order: zero_grad → forward → backward → step."""
    for k, (x, y) in enumerate(data):
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


def assert_same_params(model: nn.Module, reference: nn.Module, rtol: float = RTOL,
                       atol: float = 1e-12) -> None:
    """Parameters equal up to rtol (float32 runs: atol too, for entries that cross 0)."""
    pairs = zip(model.named_parameters(), reference.named_parameters(), strict=True)
    for (name, a), (_, b) in pairs:
        torch.testing.assert_close(
            a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


def assert_same_state(opt: torch.optim.Optimizer, reference: torch.optim.Optimizer,
                      rtol: float = 1e-5) -> None:
    """The same per-parameter state (t exactly, tensors to rtol) as torch's optimizer."""
    state, ref_state = opt.state_dict()["state"], reference.state_dict()["state"]
    assert state.keys() == ref_state.keys()
    for i in ref_state:
        assert state[i].keys() == ref_state[i].keys()
        assert state[i]["step"].item() == ref_state[i]["step"].item()
        for key in ref_state[i]:
            torch.testing.assert_close(state[i][key], ref_state[i][key], rtol=rtol, atol=1e-12)


def shared_storages(tensors: Sequence[torch.Tensor] | Iterator[torch.Tensor]) -> int:
    return len({t.untyped_storage().data_ptr() for t in tensors})


@pytest.fixture
def per_tensor_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each call of the per-tensor path: the number of tensors it steps."""
    from src.optim.base import ElementwiseOptimizer

    calls: list[int] = []
    original = ElementwiseOptimizer._step_tensors

    def spy(self, tensors, rule, options):
        calls.append(len(tensors))
        return original(tensors, rule, options)

    monkeypatch.setattr(ElementwiseOptimizer, "_step_tensors", spy)
    return calls
