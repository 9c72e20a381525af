"""`python -m benchmarks.run [--data DIR] [--quick] [--out BENCHMARKS.md]`: the benchmark suite.

Measures side by side, in one run, and writes a Markdown table of medians and ratios:
(a) one optimizer step (Adam, AMSGrad, AdaMax), (b) training throughput against plain PyTorch
loops and the compute floor, (c) wall time of the user's commands against a plain script,
(d) the study's trials per hour and the epochs pruning saves.
Timings are reported, never asserted: tests only run `--quick` so the suite cannot rot.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks import end_to_end, optimizer_step, throughput
from benchmarks import study as study_bench
from src.config import Config, DataConfig, TrackingConfig

REPO = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _table(rows: list[dict[str, object]], columns: dict[str, str]) -> list[str]:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(cell(r[k]) for k in columns) + " |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / "data/mnist"), help="MNIST IDX directory")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repeats: a smoke run, not a measurement")
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: a,b,c,d")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    quick = ["trainer.max_epochs=1", "compare.seeds=[0]", "data.val_size=100"] if args.quick \
        else []
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {_cpu()}, "
        f"{torch.get_num_threads()} threads available, torch {torch.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        f"Command: `python -m benchmarks.run --data {args.data}"
        f"{' --quick' if args.quick else ''}` (or `make bench`). Medians of repeats; ratios "
        "below 1.0 mean the project is faster (step time) or slower (throughput) as noted.",
        "",
    ]
    if "a" not in skip:
        # A smoke run skips 2 threads, as (b) does below.
        rows = optimizer_step.measure(quick=args.quick, threads=(1,) if args.quick else (1, 2))
        lines += ["## (a) One optimizer step", "",
                  "Median time of setting each `p.grad` and calling `optimizer.step()`, for "
                  "Adam, AMSGrad (`amsgrad=True`) and AdaMax; ratio to the fastest torch "
                  "implementation of the same algorithm at the same size and thread count "
                  "(≤ 1.0 is the target), the median of per-round ratios over interleaved "
                  "rounds. \"same gradients\" sets the previous call's gradient tensors again "
                  "(a fixed-gradient benchmark); \"fresh gradients\" gives new tensors every "
                  "step, as `backward()` after `zero_grad()` does: the project's flat buffers "
                  "then copy them in (one pass), torch reads them in place, so the gap "
                  "between the project's two rows is that copy. \"project, fused=True\" is "
                  "the project's Adam asking for torch's fused kernel, as torch's fastest "
                  "row does (the same bits as torch's fused Adam); the project's default "
                  "runs its own rule, against torch's default (foreach) and fastest alike. "
                  "First call includes any compilation.", ""]
        lines += _table(rows, {"model": "params", "threads": "threads",
                               "algorithm": "algorithm", "implementation": "implementation",
                               "median_us": "median µs", "first_call_ms": "first call ms",
                               "vs_fastest_torch": "÷ fastest torch",
                               "fastest_torch": "fastest torch"})
        lines.append("")
    config = Config(data=DataConfig(root=args.data, download=False,
                                    val_size=100 if args.quick else 5000,
                                    limit_train=2000 if args.quick else None),
                    tracking=TrackingConfig(uri="sqlite:///:memory:"))
    if "b" not in skip:
        repeats = 1 if args.quick else 5
        # A smoke run skips 2 threads: under load, each op of a 2-thread step waits for both
        # threads to be scheduled, which makes the row slow and says nothing there.
        rows = throughput.measure(config, quick=args.quick, repeats=repeats,
                                  threads=(1,) if args.quick else (1, 2))
        lines += ["## (b) Training throughput", "",
                  "Steps per second over one epoch of batch-32 training (validation off), in "
                  "one process, same model and thread count. Anchors: a plain loop with "
                  "torch.optim.Adam's default implementation; the **fused plain loop**, the "
                  "strongest loop a user would write (torch.optim.Adam(fused=True), subnormals "
                  "flushed, uint8 pixels scaled per batch, `zero_grad(set_to_none=True)`, the "
                  "project's minibatches in its order); and the **compute floor**, the same "
                  "step's kernels called bare (hand-written backward, `torch._fused_adam_`, "
                  "no autograd, modules or optimizer class; `benchmarks/compute_floor.py`), "
                  "which no loop around those kernels can beat. The project runs its "
                  "Lightning `Classifier` with its own Adam, as `src.run.train` does (≥ 1.0× "
                  f"the fused plain loop is the target). Contenders interleaved, {repeats} "
                  f"repeat{'s' if repeats != 1 else ''}: medians of steps/s, and of the per-repeat "
                  "ratios; spread is (max - min) / median of the ratio to the fused loop.", ""]
        lines += _table(rows, {"threads": "threads", "plain_steps_per_s": "plain loop steps/s",
                               "fused_steps_per_s": "fused plain loop steps/s",
                               "floor_steps_per_s": "compute floor steps/s",
                               "project_steps_per_s": "project steps/s",
                               "vs_plain": "project ÷ plain", "vs_fused": "project ÷ fused",
                               "vs_floor": "project ÷ floor",
                               "vs_fused_spread": "spread of ÷ fused"})
        lines.append("")
    if "c" not in skip:
        single = end_to_end.single_run(args.data, quick[2:], repeats=1 if args.quick else 5)
        comparison = end_to_end.compare(args.data, quick)
        lines += ["## (c) End to end", "",
                  "Fresh processes (targets: compare ≤ 60 s; start-up before the first training "
                  "step ≤ 5 s). The first run on a new MLflow store also creates its schema; "
                  "compare runs on a new store. The anchor is the fused plain loop as a whole "
                  "script (`benchmarks/plain_run.py`: torch and numpy only, the same split, "
                  "order, model and epochs, validation each epoch and a test pass, no "
                  "tracking), run alternately with the project's later runs; the last row is "
                  "the project's medians over the anchor's.", ""]
        lines += _table(single, {"command": "command", "wall_s": "wall s",
                                   "startup_s": "start-up s (imports, data, store)",
                                   "training_s": "training s"})
        lines += [""] + _table([comparison], {"command": "command", "wall_s": "wall s",
                                              "verdict": "verdict"})
        lines.append("")
    if "d" not in skip:
        rows = study_bench.measure(args.data, quick=args.quick)
        by = {r["setting"]: r for r in rows}
        one, two, pruned = (by[name] for name in study_bench.SETTINGS)
        speedup = two["trials_per_hour"] / one["trials_per_hour"]
        phase_speedup = two["phase_trials_per_hour"] / one["phase_trials_per_hour"]
        saved = 1 - pruned["epochs"] / one["epochs"]
        same_best = "the same" if pruned["best"] == one["best"] else "a different"
        lines += ["## (d) Study", "",
                  "Fresh `python -m pipelines.study` processes, one per setting (random sampler, "
                  "seed 0, so every study proposes the same trials; the blog's two settings "
                  "first; the blog's 5 epochs per trial). Best is the validation loss at the "
                  "last epoch (lower is better). Targets: 2 workers ≥ 1.8× the trials/hour of "
                  "1; pruning saves ≥ 40 % of epochs at an equal best value.", ""]
        lines += _table(rows, {"setting": "setting", "trials": "trials", "wall_s": "wall s",
                               "trials_per_hour": "trials/hour (command)",
                               "phase_trials_per_hour": "trials/hour (trial phase)",
                               "pruned": "pruned",
                               "epochs": "epochs trained", "best": "best val/loss"})
        lines += ["", f"2 workers ÷ 1 worker: **{speedup:.2f}×** trials/hour over the whole "
                  f"command, {phase_speedup:.2f}× over the trial phase (first trial start to "
                  "last trial end; the command adds its start-up and report once). "
                  f"Pruning saved **{saved:.0%}** of the epochs, with {same_best} best value "
                  f"({pruned['best']:.4f} vs {one['best']:.4f}).", ""]
    lines.append(f"Suite wall time: {time.perf_counter() - started:.0f} s.")
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
