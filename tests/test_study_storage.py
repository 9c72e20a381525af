"""pipelines.study.storage: a resume with other settings is refused, a storage that cannot be
opened is one line."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pipelines.study.config import to_optuna_params
from pipelines.study.run import run_study
from pipelines.study.storage import open_storage, open_study
from src.config import ConfigError
from src.tracking import PROJECT_ROOT, open_store
from tests.studies import FINISHED, composed, entry, load


def test_resume_with_other_settings_is_refused_before_writing(tiny_study: list[str],
                                                              tmp_path: Path) -> None:
    run_study(composed(*tiny_study, "study.n_trials=1"))
    with pytest.raises(ConfigError, match="trainer.max_epochs=2.*3"):
        run_study(composed(*tiny_study, "study.n_trials=3", "trainer.max_epochs=3"))
    assert len(load(tmp_path).trials) == 2  # the finished one and the second enqueued


# --- the real entry, as a user runs it ------------------------------------------------------

def test_a_storage_that_cannot_be_opened_is_one_line_and_a_non_zero_exit(
        tiny_study: list[str], tmp_path: Path) -> None:
    # (Config errors take the same path, src.cli.user_errors; they are checked in-process.)
    done = subprocess.run(entry(tiny_study, "study.storage=nosuchdb://user:secret@nowhere/optuna"),
                          cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: cannot open the Optuna storage nosuchdb://user:***@")
    assert "secret" not in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.db"))  # neither the study's storage nor MLflow's


def test_resume_refusal_names_a_search_dimension_added_or_removed(tiny_study: list[str],
                                                                  tmp_path: Path) -> None:
    config = composed(*tiny_study)
    open_study(config, open_storage(config.study))
    searched = composed(*tiny_study, "study.space.eps=[1e-10,1e-4]")
    with pytest.raises(ConfigError, match=r"^study 'adam-mnist': study.space.eps=\[1e-10, "
                                          r"0.0001\] was added \(the study was created "
                                          "without searching it\\)"):
        open_study(searched, open_storage(searched.study))
    other = tiny_study[:] + ["study.name=with-eps"]
    with_eps = composed(*other, "study.space.eps=[1e-10,1e-4]")
    open_study(with_eps, open_storage(with_eps.study))
    without = composed(*other)
    with pytest.raises(ConfigError, match=r"study.space.eps was removed \(the study was "
                                          r"created searching study.space.eps=\[1e-10"):
        open_study(without, open_storage(without.study))
    wider = composed(*other, "study.space.eps=[1e-10,1e-3]")
    with pytest.raises(ConfigError, match=r"it was created with study.space.eps=\[1e-10, "
                                          r"0.0001\], this run has \[1e-10, 0.001\]"):
        open_study(wider, open_storage(wider.study))
    assert len(load(tmp_path).trials) == 2  # nothing was written: the two baselines waiting


def test_enqueued_points_whose_trials_all_failed_are_enqueued_again(
        tiny_study: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = composed(*tiny_study)
    storage = open_storage(config.study)
    study, created = open_study(config, storage)
    assert created and [t.state for t in study.trials] == [TrialState.WAITING] * 2
    # A crash took both baselines (their trials FAIL); the second was measured before.
    for _ in range(2):
        study.tell(study.ask(), state=TrialState.FAIL)
    baseline_b = study.trials[1].system_attrs["fixed_params"]
    study.enqueue_trial(baseline_b)
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.FAIL)  # a sampled trial: not to be replayed

    study, created = open_study(config, storage)
    assert not created
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [
        study.trials[0].system_attrs["fixed_params"]]
    assert "note: enqueued again, its trials all failed: lr=0.001, beta1=0.9, beta2=0.999" in (
        capsys.readouterr().out)
    # It is waiting now, not failed: a second resume enqueues nothing more.
    study, _ = open_study(config, storage)
    assert len(study.trials) == 5
    # And a waiting point runs before anything the sampler proposes.
    assert study.ask().number == waiting[0].number


def test_a_storage_with_damaged_pages_is_one_line_naming_the_file(tiny_study: list[str],
                                                                   tmp_path: Path) -> None:
    config = composed(*tiny_study)
    study, _ = open_study(config, open_storage(config.study))
    for i in range(300):  # enough trials for the tables to span many pages
        study.enqueue_trial({"lr": 1e-3 * (1 + i), "1-beta1": 0.1, "1-beta2": 0.001})
    del study
    db = tmp_path / "optuna.db"
    page = 4096
    assert db.stat().st_size > 20 * page
    with open(db, "r+b") as fh:
        fh.seek(10 * page)
        fh.write(bytes(range(256)) * (page // 256) * 4)
    done = subprocess.run(entry(tiny_study), cwd=PROJECT_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert errors[0].startswith(f"error: the Optuna storage {db} is corrupt (")
    assert errors[0].endswith("restore it from a backup, or move it away to start the "
                              "studies afresh")


def test_two_invocations_started_together_create_once_and_share_no_parameters(
        tiny_study: list[str], tmp_path: Path) -> None:
    command = entry(tiny_study, "study.n_trials=6", "trainer.max_epochs=1",
                    "study.sampler.name=random")
    # The MLflow store exists already (two invocations creating a new one race MLflow's own
    # schema migration: not what this test is about); the study does not.
    open_store(os.environ["MLFLOW_TRACKING_URI"])
    both = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in both]
    for p, (_, err) in zip(both, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    said = sorted(line.split()[2] for out, _ in outputs for line in out.splitlines()
                  if line.startswith(("study 'adam-mnist' created:",
                                      "study 'adam-mnist' resumed:")))
    assert said == ["created:", "resumed:"], [out for out, _ in outputs]
    trials = load(tmp_path).trials
    assert sum(t.state in FINISHED for t in trials) == 6
    sampled = [tuple(sorted(t.params.items())) for t in trials if t.params]
    assert len(sampled) == len(set(sampled)), sampled
    config = composed(*tiny_study)
    for point in config.study.enqueue:
        wanted = to_optuna_params({k: v for k, v in asdict(point).items() if v is not None})
        runs = [t for t in trials if t.system_attrs.get("fixed_params") == wanted]
        assert len(runs) == 1 and runs[0].state == TrialState.COMPLETE, (wanted, trials)
    assert not list(tmp_path.glob("optuna.db.*.*"))  # the last one out removed them


def test_a_lock_file_can_be_removed_while_others_wait_for_it(tmp_path: Path) -> None:
    import threading

    from pipelines.study.storage import LockFile

    path = tmp_path / "study.turn"
    first, waiter = LockFile(path), LockFile(path)
    first.acquire()
    LockFile(path).remove()  # held by someone: left to them
    assert path.exists()
    acquired = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.acquire(), acquired.set()))
    thread.start()  # waits on the file that is about to be deleted
    first.remove()  # the holder deletes it on its way out
    assert acquired.wait(60)
    thread.join()
    # The waiter saw the file go and holds a new one, which everyone else sees.
    assert path.exists()
    other = LockFile(path)
    thread = threading.Thread(target=other.acquire, daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # excluded by the waiter's lock
    waiter.release()
    thread.join(60)
    assert not thread.is_alive()
    other.remove()
    assert not path.exists()
