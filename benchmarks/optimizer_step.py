"""One Adam step: the project's Adam against torch.optim.Adam's three implementations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from benchmarks.timing import first_call_seconds, median_seconds
from src.model import build_mlp
from src.optim import Adam

Factory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

IMPLEMENTATIONS: dict[str, Factory] = {
    "project Adam": lambda p: Adam(p, lr=1e-3),
    "torch for-loop": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=False),
    "torch foreach": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
    "torch fused": lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
}


def models(quick: bool) -> Iterator[tuple[str, nn.Module]]:
    yield "blog MLP (0.1 M params)", build_mlp(784, [128], 10, 0.2)
    big = 320 if quick else 3200  # 3200² + 3200 ≈ 10.2 M parameters
    yield f"Linear({big},{big}) ({(big * big + big) / 1e6:.1f} M params)", nn.Linear(big, big)


def measure(quick: bool = False, threads: tuple[int, ...] = (1, 2)) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for model_name, model in models(quick):
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            times: dict[str, tuple[float, float]] = {}
            for impl, factory in IMPLEMENTATIONS.items():
                params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
                gen = torch.Generator().manual_seed(0)
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen)
                optimizer = factory(params)
                first = first_call_seconds(optimizer.step)
                repeats = 5 if quick else (200 if p.numel() < 1e6 else 30)
                times[impl] = (median_seconds(optimizer.step, repeats, warmup=3), first)
            fastest_torch = min(t for name, (t, _) in times.items() if name.startswith("torch"))
            for impl, (median, first) in times.items():
                rows.append({"model": model_name, "threads": n_threads, "implementation": impl,
                             "median_us": median * 1e6, "first_call_ms": first * 1e3,
                             "vs_fastest_torch": median / fastest_torch})
    return rows
