"""src.cli and the entry's light path: a refusal or `--help` answers before anything heavy loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli import condense_hydra_error
from tests.conftest import REPO, mlflow_runs, run_entry

# Runs `python -m src.train ARGS` in this process, then names the heavy modules it imported.
_PROBE = """
import atexit, runpy, sys
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "mlflow", "matplotlib", "optuna",
         "sqlalchemy", "numpy", "pipelines")
atexit.register(lambda: print("imported:", [m for m in HEAVY if m in sys.modules],
                               file=sys.stderr))
sys.argv = ["src.train", *sys.argv[1:]]
runpy.run_module("src.train", run_name="__main__", alter_sys=True)
"""


def _probe(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ,
                               "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})


@pytest.mark.parametrize(("args", "code", "says"), [
    (("--help",), 0, "== Config =="),
    (("optimizer.lr=-1",), 2, "error: optimizer.lr=-1.0: must be a number > 0"),
    (("optimizer.lrr=1",), 2, "error: Could not override 'optimizer.lrr'"),
    (("seed=-1",), 2, "error: seed=-1: a seed must be an integer in [0, 2**32)"),
    (("+experiment=compare", "compare.seeds=[-1,0]"), 2, "error: compare.seeds[0]=-1"),
    (("trainer.accelerator=gpus",), 2, "error: trainer.accelerator='gpus'"),
    # Missing data, the commonest first-run mistake, is a refusal like a bad value.
    (("data.root=/nowhere", "data.download=false"), 2,
     "error: no MNIST files in /nowhere (no such directory): put train-images-idx3-ubyte.gz"),
])
def test_refusals_and_help_import_nothing_heavy(args: tuple[str, ...], code: int, says: str,
                                                store: Path) -> None:
    done = _probe(*args, store=store)
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr
    assert "imported: []" in done.stderr.splitlines()[-1], done.stderr
    assert not (store / "mlflow.db").exists()  # no store opened, no run


def test_a_key_under_a_null_section_is_one_line_with_the_likely_cause(store: Path) -> None:
    # compare is null without its experiment; OmegaConf then fails inside Hydra (a traceback).
    done = run_entry("src.train", "compare.seeds=[0,1]", store=store)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot apply the overrides: AssertionError")
    assert "compare.* needs +experiment=compare" in lines[0]
    assert mlflow_runs(store) == []


def test_condensed_hydra_error_keeps_the_facts() -> None:
    text = ("Could not override 'optimizer.lrr'.\nTo append to your config use +optimizer.lrr=1"
            "\nKey 'lrr' not in 'OptimizerConfig'\n    full_key: optimizer.lrr\n"
            "    object_type=OptimizerConfig\n\n"
            "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n")
    assert condense_hydra_error(text) == ("Could not override 'optimizer.lrr'.; "
                                          "Key 'lrr' not in 'OptimizerConfig'")
