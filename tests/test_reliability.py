"""Faults, interrupts, concurrent writers, secrets: results kept, refusals explained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from src.config import Config, DataConfig, TrackingConfig, TrainerConfig
from src.run import train
from src.tracking import mask_secrets, open_store
from tests.conftest import REPO, mlflow_runs, run_entry
from tests.processes import runs_with_metrics, start, wait_for, workers_of


def _signal_once_training(proc: subprocess.Popen[str], store: Path, runs: int, signum: int,
                          timeout: float = 120) -> str:
    """Send `signum` once `runs` runs have logged a whole epoch; the process's stderr after."""
    try:
        wait_for(lambda: runs_with_metrics(store) >= runs, proc)
        proc.send_signal(signum)
        return proc.communicate(timeout=timeout)[1]
    finally:
        proc.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_a_run_killed_with_its_metrics(tiny_mnist: Path, store: Path,
                                                   signum: int) -> None:
    proc = start([f"data.root={tiny_mnist}", "data.val_size=100", "trainer.max_epochs=500"],
                  store)
    err = _signal_once_training(proc, store, 1, signum, timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    assert "Traceback" not in err
    (run,) = mlflow_runs(store)
    assert run.info.status == "KILLED"
    assert "val/acc" in run.data.metrics and "train/loss" in run.data.metrics


def test_sigterm_during_compare_leaves_nothing_running(tiny_mnist: Path, store: Path) -> None:
    proc = start(["+experiment=compare", f"data.root={tiny_mnist}", "data.val_size=100",
                   "trainer.max_epochs=500", "compare.seeds=[0,1]", "compare.workers=2"], store)
    err = _signal_once_training(proc, store, 2, signal.SIGTERM, timeout=90)
    assert proc.returncode == 130, err
    runs = mlflow_runs(store)
    assert len(runs) >= 3  # the parent and the children that had started
    assert {r.info.status for r in runs} <= {"KILLED", "FAILED"}, [r.info.status for r in runs]


_LONG_COMPARE = ["+experiment=compare", "data.val_size=100", "trainer.max_epochs=500",
                 "compare.seeds=[0,1]", "compare.workers=2"]


@pytest.mark.parametrize("gap", [0.01, 0.02])
def test_ctrl_c_twice_during_compare_is_one_line_and_every_run_killed(
        tiny_mnist: Path, store: Path, gap: float) -> None:
    # The terminal sends Ctrl-C to the whole process group: parent, forkserver, workers.
    proc = start([*_LONG_COMPARE, f"data.root={tiny_mnist}"], store)
    try:
        wait_for(lambda: runs_with_metrics(store) >= 2, proc)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(gap)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    runs = mlflow_runs(store)
    assert len(runs) >= 3
    assert {r.info.status for r in runs} == {"KILLED"}, [r.info.status for r in runs]
    # Each worker closed its own run: none had to be closed for it as lost.
    assert not [r for r in runs if "failure" in r.data.tags], [r.data.tags for r in runs]


def test_a_killed_compare_worker_is_one_line_and_only_its_run_is_lost(
        tiny_mnist: Path, store: Path) -> None:
    proc = start([*_LONG_COMPARE, f"data.root={tiny_mnist}"], store)
    try:
        wait_for(lambda: runs_with_metrics(store) >= 2 and len(workers_of(proc)) == 2, proc)
        killed = workers_of(proc)[0]
        os.kill(killed, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors == err.strip().splitlines()[-1:], err[-3000:]
    assert errors[0].startswith("error: a worker process died (killed or crashed) during ")
    assert f"(process {killed})" in errors[0]
    runs = mlflow_runs(store)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    children = {r.data.tags["process.pid"]: r for r in runs if r is not parent}
    lost = children.pop(str(killed))
    assert lost.info.status == "FAILED"
    assert lost.data.tags["failure"].startswith(f"process {killed} on ")
    # The other worker was stopped, and closed its run itself: KILLED, not called lost.
    assert children and all(r.info.status == "KILLED" and "failure" not in r.data.tags
                            for r in children.values()), [r.data.tags for r in runs]


_WRITER = """
import sys
from src.tracking import open_store, start_run, run_lifecycle, log_metric_batch
client = open_store(sys.argv[1])
run_id = start_run(client, "concurrency", f"writer-{sys.argv[2]}")
with run_lifecycle(client, run_id):
    for step in range(200):
        log_metric_batch(client, run_id, {"a": step, "b": -step}, step=step, timestamp_ms=step)
"""


def test_four_concurrent_writers_lose_nothing(store: Path) -> None:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    open_store(uri)  # as the pipelines do: the parent creates the store before workers start
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, uri, str(i)], cwd=REPO,
                                stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [w.communicate(timeout=600)[1] for w in writers]  # generous: shared cores
    assert all(w.returncode == 0 for w in writers), errors
    assert not any("locked" in e for e in errors)
    client = MlflowClient(uri)
    runs = mlflow_runs(store)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "a")
        assert sorted(m.step for m in history) == list(range(200))


def test_secrets_never_reach_mlflow(tiny_mnist: Path, store: Path) -> None:
    secret_uri = "postgresql://alice:s3cr3t-pw@db.example:5432/mlflow"
    config = Config(data=DataConfig(root=str(tiny_mnist), val_size=100, download=False),
                    trainer=TrainerConfig(max_epochs=1), tracking=TrackingConfig(uri=secret_uri))
    client = open_store(f"sqlite:///{store / 'mlflow.db'}")
    outcome = train(config, client=client)
    run = client.get_run(outcome.run_id)
    assert run.data.params["tracking.uri"] == "postgresql://alice:***@db.example:5432/mlflow"
    everything = str(run.data.params) + str(run.data.tags)
    artifact = Path(client.download_artifacts(outcome.run_id, "config.yaml")).read_text()
    assert "s3cr3t" not in everything + artifact
    assert "alice:***@" in artifact


def test_unreachable_tracking_server_is_one_masked_line(tiny_mnist: Path, store: Path) -> None:
    done = run_entry("src.train", f"data.root={tiny_mnist}", "data.val_size=100", store=store,
                     env={"MLFLOW_TRACKING_URI": "postgresql://bob:hunter2@127.0.0.1:9/x"})
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot open the MLflow store postgresql://bob:***@")
    assert "hunter2" not in done.stderr + done.stdout


def test_unwritable_store_is_one_line(tiny_mnist: Path, tmp_path: Path, store: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    done = run_entry("src.train", f"data.root={tiny_mnist}", "data.val_size=100", store=store,
                     env={"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlruns/mlflow.db"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot open the MLflow store")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
    ("mysql+pymysql://user:pa%40ss@host:3306/x", "mysql+pymysql://user:***@host:3306/x"),
    ("http://h:5000/path", "http://h:5000/path"),
    ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ("see https://x:y@h and https://k:z@g", "see https://x:***@h and https://k:***@g"),
])
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_sigterm_during_a_study_leaves_nothing_running(tiny_mnist: Path, store: Path,
                                                       tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = start([f"data.root={tiny_mnist}", "data.val_size=100", "trainer.max_epochs=500",
                   "study.name=stop", f"study.storage={storage}", "study.n_trials=4",
                   "study.workers=2", "study.pruner.name=none", f"study.export_dir={tmp_path}"],
                  store, module="pipelines.study")
    err = _signal_once_training(proc, store, 2, signal.SIGTERM)
    assert proc.returncode == 130, err[-2000:]
    runs = mlflow_runs(store)
    assert len(runs) >= 3  # the parent and both running trials
    assert {r.info.status for r in runs} <= {"KILLED", "FAILED"}, [r.info.status for r in runs]
    study = optuna.load_study(study_name="stop", storage=storage)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def _as_if_in(module: str, body: Callable[[], None]) -> Callable[[], None]:
    """`body` run from a frame that belongs to `module` (the test's stand-in for a DB client)."""
    namespace = {"__name__": module, "body": body}
    exec("def call():\n    return body()\n", namespace)
    return namespace["call"]


def test_a_stop_inside_a_database_call_waits_for_it_to_return() -> None:
    from src.interrupts import Interrupted, stop_signals

    events: list[str] = []

    def commit() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)  # the signal arrives here: it must not cut this "transaction"
        events.append("committed")

    with pytest.raises(Interrupted), stop_signals():
        _as_if_in("sqlalchemy.engine.fake", commit)()
        events.append("returned")
        time.sleep(5)
        events.append("not stopped")
    assert events[0] == "committed" and "not stopped" not in events


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, "Interrupted"),
                                                (signal.SIGINT, "KeyboardInterrupt")])
def test_a_stop_is_raised_once(signum: int, raised: str) -> None:
    from src.interrupts import stop_signals

    seen: list[str] = []
    with stop_signals():
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
        except BaseException as err:  # what was raised is the point
            seen.append(type(err).__name__)
            os.kill(os.getpid(), signum)  # a second stop during the clean-up is absorbed
            time.sleep(0.2)
            seen.append("cleaned up")
    assert seen == [raised, "cleaned up"]


def test_ctrl_c_during_compare_is_one_line_without_lightnings_chatter(
        tiny_mnist: Path, store: Path) -> None:
    # A terminal's Ctrl-C goes to the whole process group: the parent and every worker.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", "+experiment=compare", f"data.root={tiny_mnist}",
         "data.val_size=100", "trainer.max_epochs=500", "compare.seeds=[0,1]",
         "compare.workers=2"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: runs_with_metrics(store) >= 2, proc)
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=90)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert output.strip().splitlines()[-1].startswith("error: interrupted"), output[-3000:]
    for chatter in ("Received SIGTERM", "Detected KeyboardInterrupt", "Traceback"):
        assert chatter not in output, output[-3000:]
    assert {r.info.status for r in mlflow_runs(store)} <= {"KILLED", "FAILED"}
