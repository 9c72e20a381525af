"""src.liveness: a run's process recorded at its start, proven gone only when it is, and the
runs of gone processes closed (by any later invocation, or on demand)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from src.liveness import (
    HOST_TAG,
    KEY_TAG,
    PID_TAG,
    STALE_TAG,
    STARTED_TAG,
    close_stale_runs,
    gone,
    process_tags,
)
from src.tracking import open_store, start_run
from tests.conftest import REPO


def _exited_process_tags() -> dict[str, str]:
    """The tags a run would have had, recorded from a process that has since exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tags = process_tags(child.pid)
    child.kill()
    child.wait()
    return tags


def test_the_tags_name_this_process_and_a_live_process_is_never_gone() -> None:
    tags = process_tags()
    assert set(tags) == {HOST_TAG, PID_TAG, STARTED_TAG, KEY_TAG}
    assert tags[STARTED_TAG].endswith("Z") and tags[STARTED_TAG] <= time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert gone(tags) is None
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        assert gone(process_tags(child.pid)) is None
        child.kill()


def test_an_exited_or_zombie_process_is_gone() -> None:
    assert gone(_exited_process_tags()).endswith("has exited")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tags = process_tags(child.pid)
    deadline = time.monotonic() + 60
    while gone(tags) is None:  # exits, unreaped: a zombie until we wait for it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert gone(tags).endswith("has exited (a zombie)")
    child.wait()


def test_a_reused_pid_or_another_boot_is_gone_another_host_or_no_tags_proves_nothing() -> None:
    tags = process_tags()
    boot, namespace, ticks = tags[KEY_TAG].rsplit(":", 2)
    reused = {**tags, KEY_TAG: f"{boot}:{namespace}:{int(ticks) + 1}"}
    assert gone(reused).endswith("its PID now belongs to another process)")
    rebooted = {**tags, KEY_TAG: f"another-boot:{namespace}:{ticks}"}
    assert gone(rebooted).endswith("ran before the machine restarted")
    assert gone({**_exited_process_tags(), HOST_TAG: "elsewhere"}) is None
    assert gone({**_exited_process_tags(), KEY_TAG: f"{boot}:1:{ticks}"}) is None  # other ns
    assert gone({HOST_TAG: tags[HOST_TAG], PID_TAG: "999999999"}) is None  # an older run


def test_only_runs_of_processes_provably_gone_are_closed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_store(uri)
    dead = start_run(client, "e", "dead", tags=_exited_process_tags())
    alive = start_run(client, "e", "alive")  # this process's
    foreign = start_run(client, "other", "foreign",
                        tags={**_exited_process_tags(), HOST_TAG: "elsewhere"})
    untagged = start_run(client, "e", "old", tags={KEY_TAG: ""})
    finished = start_run(client, "e", "finished", tags=_exited_process_tags())
    client.set_terminated(finished, "FINISHED")

    closed = close_stale_runs(client)
    assert [run.info.run_id for run, _ in closed] == [dead]
    status = {r: client.get_run(r).info.status for r in (dead, alive, foreign, untagged,
                                                          finished)}
    assert status == {dead: "KILLED", alive: "RUNNING", foreign: "RUNNING",
                      untagged: "RUNNING", finished: "FINISHED"}
    assert "has exited without closing this run; closed as KILLED by process" in (
        client.get_run(dead).data.tags[STALE_TAG])

    # On demand: python -m src.liveness (make close-stale).
    again = start_run(client, "e", "dead again", tags=_exited_process_tags())
    done = subprocess.run([sys.executable, "-m", "src.liveness", "--uri", uri], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert f"closed {again} dead again (process " in done.stdout
    assert done.stdout.strip().endswith(f"1 stale run(s) closed in {uri}")
    assert MlflowClient(uri).get_run(again).info.status == "KILLED"
    assert MlflowClient(uri).get_run(alive).info.status == "RUNNING"
