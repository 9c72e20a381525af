"""One optimizer step: the project's Adam, AMSGrad and AdaMax against torch.optim's
implementations of each (for-loop, foreach and, where torch has one, fused).

Every timed call first sets each ``p.grad`` and then steps, for every implementation alike.
"same gradients" sets the tensors of the previous call again, as a benchmark with fixed
gradients does; "fresh gradients" alternates between two sets of tensors, as training does
(every ``backward()`` after ``zero_grad()`` makes new ones). torch reads ``p.grad`` in place
either way; the project's flat buffers copy a gradient they have not seen (one pass), so the
difference between its two rows is the cost of that copy. The implementations are timed in
interleaved rounds and the ratios taken per round, so load from other processes on the
machine shifts numerator and denominator alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from benchmarks.timing import first_call_seconds
from src.model import build_mlp
from src.optim import Adam, AdaMax

Factory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

PROJECT = "project"
FRESH = "project, fresh gradients"
# The project's Adam with torch's fused kernel (fused=True): the like-for-like contender of
# torch's fused Adam, as the default (the rule) is of torch's default.
FUSED = "project, fused=True"

ALGORITHMS: dict[str, dict[str, Factory]] = {
    "Adam": {
        PROJECT: lambda p: Adam(p, lr=1e-3),
        FUSED: lambda p: Adam(p, lr=1e-3, fused=True),
        "torch for-loop": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=False),
        "torch foreach": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
        "torch fused": lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
    },
    "AMSGrad": {
        PROJECT: lambda p: Adam(p, lr=1e-3, amsgrad=True),
        FUSED: lambda p: Adam(p, lr=1e-3, amsgrad=True, fused=True),
        "torch for-loop": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True, foreach=False),
        "torch foreach": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True, foreach=True),
        "torch fused": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True, fused=True),
    },
    "AdaMax": {
        PROJECT: lambda p: AdaMax(p, lr=2e-3),
        "torch for-loop": lambda p: torch.optim.Adamax(p, lr=2e-3, foreach=False),
        "torch foreach": lambda p: torch.optim.Adamax(p, lr=2e-3, foreach=True),
    },
}


def models(quick: bool) -> Iterator[tuple[str, nn.Module]]:
    yield "blog MLP (0.1 M params)", build_mlp(784, [128], 10, 0.2)
    big = 320 if quick else 3200  # 3200² + 3200 ≈ 10.2 M parameters
    yield f"Linear({big},{big}) ({(big * big + big) / 1e6:.1f} M params)", nn.Linear(big, big)


def _stepper(model: nn.Module, factory: Factory, fresh: bool) -> Callable[[], object]:
    """A call that sets every p.grad (the same tensors, or the other of two sets) and steps."""
    params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    gen = torch.Generator().manual_seed(0)
    sets = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(2 if fresh else 1)]
    optimizer = factory(params)
    turn = [0]

    def call() -> object:
        turn[0] = (turn[0] + 1) % len(sets)
        for p, grad in zip(params, sets[turn[0]], strict=True):
            p.grad = grad
        return optimizer.step()

    return call


def _interleaved(calls: dict[str, Callable[[], object]], repeats: int,
                 rounds: int) -> dict[str, list[float]]:
    """Per implementation, the mean seconds of a call in each of `rounds` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            samples[name].append((time.perf_counter() - start) / repeats)
    return samples


def measure(quick: bool = False, threads: tuple[int, ...] = (1, 2),
            algorithms: tuple[str, ...] = tuple(ALGORITHMS)) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for model_name, model in models(quick):
        small = sum(p.numel() for p in model.parameters()) < 1e6
        repeats, rounds = (2, 3) if quick else ((20, 30) if small else (2, 15))
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for algorithm in algorithms:
                factories = ALGORITHMS[algorithm]
                calls: dict[str, Callable[[], object]] = {}
                first: dict[str, float] = {}
                for impl, factory in {**factories, FRESH: factories[PROJECT]}.items():
                    calls[impl] = _stepper(model, factory, fresh=impl == FRESH)
                    first[impl] = first_call_seconds(calls[impl])
                    for _ in range(3):
                        calls[impl]()
                samples = _interleaved(calls, repeats, rounds)
                medians = {impl: statistics.median(s) for impl, s in samples.items()}
                fastest = min((i for i in medians if i.startswith("torch")), key=medians.get)
                for impl, median in medians.items():
                    ratio = statistics.median(
                        a / b for a, b in zip(samples[impl], samples[fastest], strict=True))
                    label = impl.replace(PROJECT, f"{PROJECT} {algorithm}", 1)
                    rows.append({"model": model_name, "threads": n_threads,
                                 "algorithm": algorithm, "implementation": label,
                                 "median_us": median * 1e6, "first_call_ms": first[impl] * 1e3,
                                 "vs_fastest_torch": ratio, "fastest_torch": fastest})
    return rows
