"""The benchmark suite runs (at tiny sizes) and writes its table; timings are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_tiny_mnist


def test_quick_suite_writes_every_section(tmp_path: Path) -> None:
    data = write_tiny_mnist(tmp_path / "mnist", n_train=2600)
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--data", str(data),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for heading in ("(a) One Adam step", "(b) Training throughput", "(c) End to end",
                    "(d) Study"):
        assert heading in text
    for row in ("| project Adam |", "| torch fused |", "python -m src.train +experiment=compare",
                "| 2 workers, no pruning |", "| 1 worker, median pruner |", "(existing store"):
        assert row in text
    assert not out.with_suffix(".tmp").exists()
