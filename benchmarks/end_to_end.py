"""Wall time of the user's commands, each in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TIMING = re.compile(r"time: start-up ([\d.]+) s .*training ([\d.]+) s")


def _run(args: list[str], store: Path) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "src.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"src.train {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return wall, done.stdout


def single_run(data_root: str, extra: list[str], repeats: int = 3) -> list[dict[str, object]]:
    """A 1-epoch run on a new store (which pays MLflow's schema creation once), then the
    median of `repeats` more on the same store, as a user's later runs are."""
    command = "python -m src.train trainer.max_epochs=1"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_timed_run([f"data.root={data_root}", "trainer.max_epochs=1", *extra], Path(tmp))
                for _ in range(1 + repeats)]
    rows.append({"command": f"{command} (new store)", **runs[0]})
    later = sorted(runs[1:], key=lambda r: r["startup_s"])[len(runs[1:]) // 2]
    rows.append({"command": f"{command} (existing store, median of {repeats})", **later})
    return rows


def _timed_run(args: list[str], store: Path) -> dict[str, float]:
    wall, out = _run(args, store)
    match = _TIMING.search(out)
    assert match, out
    return {"wall_s": wall, "startup_s": float(match[1]), "training_s": float(match[2])}


def compare(data_root: str, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, out = _run(["+experiment=compare", f"data.root={data_root}", *extra], Path(tmp))
    verdict = next((line for line in out.splitlines() if line.startswith("verdict:")), "")
    return {"command": "python -m src.train +experiment=compare " + " ".join(extra),
            "wall_s": wall, "verdict": verdict.removeprefix("verdict: ")}
