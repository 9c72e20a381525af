"""pipelines.lifeline, end to end: a pipeline's process killed outright (SIGKILL) takes no
run with it. Its workers stop (their runs KILLED, a study's trials FAIL) and exit, and so do
the forkserver and the resource tracker; the next invocation closes the parent run it left
RUNNING (src.liveness)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import mlflow_runs
from tests.processes import descendants, runs_with_metrics, start, wait_for, workers_of


def _kill_once_training(proc: subprocess.Popen[str], store: Path) -> dict[int, str]:
    """SIGKILL `proc` while its two workers train; the processes it left (all of them)."""
    try:
        wait_for(lambda: runs_with_metrics(store) >= 2 and len(workers_of(proc)) == 2, proc)
        left = descendants(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert len(left) >= 5, left  # the parent, the forkserver, 2 workers, the resource tracker
    wait_for(lambda: not descendants(proc), timeout=180, what="the orphans to exit")
    return left


def _by_status(store: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for run in mlflow_runs(store):
        found.setdefault(run.info.status, []).append(run.info.run_name)
    return found


def test_a_killed_compare_leaves_no_process_and_the_next_invocation_no_running_run(
        tiny_mnist: Path, store: Path) -> None:
    proc = start(["+experiment=compare", f"data.root={tiny_mnist}", "data.val_size=100",
                  "trainer.max_epochs=500", "compare.seeds=[0,1]", "compare.workers=2"], store)
    _kill_once_training(proc, store)
    runs = mlflow_runs(store)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "RUNNING"  # nobody was left to close it ...
    assert len(children) == 2 and {r.info.status for r in children} == {"KILLED"}  # ... they were

    again = start(["+experiment=compare", f"data.root={tiny_mnist}", "data.val_size=100",
                   "trainer.max_epochs=1", "compare.seeds=[0]", "compare.workers=1"], store)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert "note: closed 1 stale run(s) as KILLED, their process is gone: compare (process " in out
    assert "RUNNING" not in _by_status(store), _by_status(store)
    stale = [r for r in mlflow_runs(store) if r.info.run_id == parent.info.run_id][0]
    assert stale.info.status == "KILLED"
    assert stale.data.tags["stale"].startswith(f"process {proc.pid} on ")
    assert not descendants(again)


def test_a_killed_study_leaves_no_process_and_its_resume_no_running_run_nor_lost_baseline(
        tiny_mnist: Path, store: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [f"data.root={tiny_mnist}", "data.val_size=100", "data.download=false",
            "trainer.max_epochs=20", "study.name=killed", f"study.storage={storage}",
            "study.n_trials=2", "study.workers=2", "study.pruner.name=none",
            f"study.export_dir={tmp_path / 'export'}"]
    proc = start(args, store, module="pipelines.study")
    _kill_once_training(proc, store)
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    # Trials 0 and 1 are the enqueued baselines: their workers ended them.
    assert [t.state for t in trials] == [TrialState.FAIL] * 2, [t.state for t in trials]
    assert all("parent process is gone" in t.user_attrs["reason"] for t in trials), [
        t.user_attrs.get("reason") for t in trials]
    assert sorted(_by_status(store)) == ["KILLED", "RUNNING"], _by_status(store)

    again = start(args, store, module="pipelines.study")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:] + out[-3000:]
    assert "note: closed 1 stale run(s) as KILLED, their process is gone: killed (process " in out
    assert out.count("note: enqueued again, its trials all failed") == 2, out
    assert "RUNNING" not in _by_status(store), _by_status(store)
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert [t.params for t in trials[2:]] == [t.params for t in trials[:2]]  # the baselines
    assert not descendants(again)
    assert not list(tmp_path.glob("optuna.db.*.*"))  # no lock file left
