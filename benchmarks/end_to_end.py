"""Wall time of the user's commands, each in a fresh process, against a plain script's."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TIMING = re.compile(r"time: start-up ([\d.]+) s .*training ([\d.]+) s")


def _run(args: list[str], store: Path, module: str = "src.train") -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return wall, done.stdout


def _median_row(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def single_run(data_root: str, extra: list[str], repeats: int = 5) -> list[dict[str, object]]:
    """A 1-epoch run on a new store (which pays MLflow's schema creation once); then
    `repeats` rounds of the plain-script anchor (benchmarks.plain_run, fused Adam) and a run
    on the same store, as a user's later runs are, interleaved so load changes hit both;
    medians per column, and the project's ratio to the anchor."""
    command = "python -m src.train trainer.max_epochs=1"
    val_size = next((a.split("=", 1)[1] for a in extra if a.startswith("data.val_size=")), None)
    plain_args = ["--data", data_root, "--epochs", "1",
                  *(["--val-size", val_size] if val_size else [])]
    project_args = [f"data.root={data_root}", "trainer.max_epochs=1", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        first = _timed_run(project_args, Path(tmp))
        plain, later = [], []
        for _ in range(repeats):
            plain.append(_timed_run(plain_args, Path(tmp), module="benchmarks.plain_run"))
            later.append(_timed_run(project_args, Path(tmp)))
    anchor, project = _median_row(plain), _median_row(later)
    return [
        {"command": f"{command} (new store)", **first},
        {"command": f"python -m benchmarks.plain_run --epochs 1 (fused plain loop, median of "
                    f"{repeats})", **anchor},
        {"command": f"{command} (existing store, median of {repeats})", **project},
        {"command": "project ÷ fused plain loop", **{k: project[k] / anchor[k] for k in project}},
    ]


def _timed_run(args: list[str], store: Path, module: str = "src.train") -> dict[str, float]:
    wall, out = _run(args, store, module)
    match = _TIMING.search(out)
    assert match, out
    return {"wall_s": wall, "startup_s": float(match[1]), "training_s": float(match[2])}


def compare(data_root: str, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, out = _run(["+experiment=compare", f"data.root={data_root}", *extra], Path(tmp))
    verdict = next((line for line in out.splitlines() if line.startswith("verdict:")), "")
    return {"command": "python -m src.train +experiment=compare " + " ".join(extra),
            "wall_s": wall, "verdict": verdict.removeprefix("verdict: ")}
