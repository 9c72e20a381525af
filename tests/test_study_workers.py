"""pipelines.study.workers: sampler seeds per worker, and workers that finish exactly n_trials
when one of them is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from optuna.trial import TrialState

from pipelines.study.workers import worker_seeds
from src.tracking import PROJECT_ROOT
from tests.studies import FINISHED, children_of, entry, load, mlflow_runs


def test_worker_seeds_differ_between_workers_and_invocations() -> None:
    first = worker_seeds(0, invocation="a" * 32, workers=3)
    assert len(set(first)) == 3
    assert worker_seeds(0, "a" * 32, 3) == first  # reproducible
    # Another invocation of the same study, even one that saw the same trials so far.
    assert not set(worker_seeds(0, invocation="b" * 32, workers=3)) & set(first)
    assert not set(worker_seeds(1, invocation="a" * 32, workers=3)) & set(first)


# --- the real entry, as a user runs it ------------------------------------------------------

def test_two_workers_finish_exactly_n_trials_even_when_one_is_killed(
        tiny_study: list[str], tmp_path: Path) -> None:
    """The real entry with 2 workers; one is killed (SIGKILL) in the middle of a trial.

    Its trial turns FAIL (heartbeat 1 s, grace period 2 s), the other worker replaces it, and
    the study ends with exactly n_trials finished trials, each with its MLflow child run under
    the invocation's parent run.
    """
    env = dict(os.environ)
    study_run = subprocess.Popen(  # longer trials, so that the kill lands mid-trial
        entry(tiny_study, "study.workers=2", "study.n_trials=3", "trainer.max_epochs=20"),
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and study_run.poll() is None:
            time.sleep(0.05)
            try:
                study = load(tmp_path)
            except KeyError:
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # Training has started and is far from its end (one step per epoch).
                if "mlflow_run_id" in trial.user_attrs and len(trial.intermediate_values) < 6:
                    os.kill(int(trial.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
                    killed = trial.number
                    break
        output, _ = study_run.communicate(timeout=180)
    finally:
        if study_run.poll() is None:
            study_run.kill()
    assert killed is not None, output[-3000:]
    assert study_run.returncode == 0, output[-3000:]
    assert f"storage sqlite:///{tmp_path}/optuna.db" in output
    assert "2 worker(s)" in output and "exited abnormally (exit codes [-9])" in output
    assert "replay: python -m src.train +experiment=best_adam-mnist" in output

    trials = load(tmp_path).trials
    assert trials[killed].state == TrialState.FAIL, output[-3000:]
    finished = [t for t in trials if t.state in FINISHED]
    states = [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]
    # 3 finished + the killed one; no surplus trial (the workers take turns to start one).
    assert len(finished) == 3 and len({t.number for t in trials}) == len(trials) == 4, (
        f"{states}\n{output[-3000:]}")
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("pipeline") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = children_of(runs, parents[0].info.run_id)
    assert sorted(children) == sorted(t.number for t in trials)  # the killed one too
    for trial in trials:
        child = children[trial.number]
        assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert child.data.tags["optuna.state"] == trial.state.name
        assert float(child.data.params["optimizer.lr"]) == trial.params["lr"]
        assert child.info.status == ("FAILED" if trial.number == killed else "FINISHED")
    assert (tmp_path / "experiment" / "best_adam-mnist.yaml").is_file()
