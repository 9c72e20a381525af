"""Which process a run belongs to: recorded when the run starts, proven gone when it is.

Every MLflow run is tagged with the process that opened it (`PROCESS_TAGS`). A process that
is killed outright (SIGKILL, the OOM killer, a lost machine) cannot close its runs; they stay
RUNNING in the store. A later invocation on the same machine can prove that such a process
is gone, and end its runs KILLED (`close_stale_runs`), without ever touching a run whose
process may still be alive:

    same host, same boot, same PID namespace     otherwise nothing can be proven here
    the PID does not exist, or is a zombie       gone
    the PID exists but started at another time   gone: the PID was reused
    the machine has booted since                 gone

The start time is field 22 of /proc/<pid>/stat (clock ticks since boot): with the boot id
it names one process for the machine's lifetime. Linux only; elsewhere nothing is proven.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

HOST_TAG = "process.host"
PID_TAG = "process.pid"
STARTED_TAG = "process.started"  # when the process started, for people (UTC, ISO 8601)
KEY_TAG = "process.key"  # <boot id>:<pid namespace>:<start ticks>, what proves identity
PROCESS_TAGS = (HOST_TAG, PID_TAG, STARTED_TAG, KEY_TAG)
# Set on a run closed because its process was gone, saying which and who closed it.
STALE_TAG = "stale"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of `pid`, or None if there is no such process."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _machine() -> tuple[str, str] | None:
    """(boot id, PID namespace) of this machine and process, None where /proc lacks them."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None
    return (boot, namespace) if boot else None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The run tags that identify process `pid` (this one by default)."""
    pid = pid or os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    machine, stat = _machine(), _stat(pid)
    if machine is not None and stat is not None:
        ticks = stat[1]
        uptime = _read("/proc/uptime")
        if uptime is not None:
            started = time.time() - float(uptime.split()[0]) + ticks / os.sysconf("SC_CLK_TCK")
            tags[STARTED_TAG] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        tags[KEY_TAG] = f"{machine[0]}:{machine[1]}:{ticks}"
    return tags


def gone(tags: Mapping[str, str]) -> str | None:
    """Why the process named by run tags `tags` is provably gone; None if it may be alive
    (or the tags are missing, or it ran on another host or in another PID namespace)."""
    host, pid, key = tags.get(HOST_TAG), tags.get(PID_TAG), tags.get(KEY_TAG)
    machine = _machine()
    if host != socket.gethostname() or not pid or not key or machine is None:
        return None
    boot, namespace, ticks = key.rsplit(":", 2)
    who = f"process {pid} on {host}"
    if boot != machine[0]:
        return f"{who} ran before the machine restarted"
    if namespace != machine[1] or not pid.isdigit():
        return None
    stat = _stat(int(pid))
    if stat is None:
        return f"{who} has exited"
    if stat[0] in "ZX":
        return f"{who} has exited (a zombie)"
    if str(stat[1]) != ticks:
        return f"{who} has exited (its PID now belongs to another process)"
    return None


def _running(client: MlflowClient, experiment_ids: list[str], where: str = "") -> list[Run]:
    if not experiment_ids:
        return []
    query = "attributes.status = 'RUNNING'" + (f" and {where}" if where else "")
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _close(client: MlflowClient, run: Run, key: str, reason: str, status: str) -> None:
    client.log_batch(run.info.run_id, tags=[RunTag(key, reason[:4000])])
    client.set_terminated(run.info.run_id, status)


def close_stale_runs(client: MlflowClient) -> list[tuple[Run, str]]:
    """End every RUNNING run of the store whose process is provably gone as KILLED, tagged
    `stale` with the reason; returns those runs and their reasons."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=10_000)]
    me = f"{socket.gethostname()}:{os.getpid()}"
    closed = []
    for run in _running(client, experiments):
        reason = gone(run.data.tags)
        if reason is not None:
            _close(client, run, STALE_TAG, f"{reason} without closing this run; "
                   f"closed as KILLED by process {me}", "KILLED")
            closed.append((run, reason))
    return closed


def describe(run: Run) -> str:
    """A run as a user finds it: its name (or id) and, when recorded, its process."""
    tags = run.data.tags
    process = f" (process {tags[PID_TAG]})" if PID_TAG in tags else ""
    return f"{run.info.run_name or run.info.run_id}{process}"


def announce(closed: list[tuple[Run, str]]) -> None:
    """One printed line for the stale runs `close_stale_runs` closed (nothing if none)."""
    if closed:
        names = ", ".join(describe(run) for run, _ in closed[:5])
        more = f" and {len(closed) - 5} more" if len(closed) > 5 else ""
        print(f"note: closed {len(closed)} stale run(s) as KILLED, their process is gone: "
              f"{names}{more}", flush=True)


def close_lost_children(client: MlflowClient, parent_run_id: str, status: str) -> list[Run]:
    """End the RUNNING children of `parent_run_id` that their process can no longer close.

    For after the worker processes have been waited for: a child whose process is provably
    gone, or that records no process (an older run), was lost with its worker; a child whose
    process is alive is left to it.
    """
    experiment = client.get_run(parent_run_id).info.experiment_id
    lost = []
    for run in _running(client, [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"):
        reason = (gone(run.data.tags) if KEY_TAG in run.data.tags else
                  "its worker process ended")
        if reason is not None:
            _close(client, run, "failure", f"{reason} without closing the run (killed or "
                   "crashed)", status)
            lost.append(run)
    return lost


def main(argv: list[str] | None = None) -> int:
    """`python -m src.liveness [--uri URI]`: close the store's stale runs, say which."""
    import argparse

    from src.tracking import mask_secrets, open_store, resolve_uri

    parser = argparse.ArgumentParser(
        prog="python -m src.liveness",
        description="End the RUNNING runs whose process is provably gone as KILLED.")
    parser.add_argument("--uri", help="the MLflow store (default: MLFLOW_TRACKING_URI, else "
                                      "the project's mlruns/mlflow.db)")
    uri = resolve_uri(parser.parse_args(argv).uri)
    closed = close_stale_runs(open_store(uri))
    for run, reason in closed:
        print(f"closed {run.info.run_id} {describe(run)} as KILLED: {reason}")
    print(f"{len(closed)} stale run(s) closed in {mask_secrets(uri)}")
    return 0


if __name__ == "__main__":
    from src.cli import user_errors

    with user_errors():
        raise SystemExit(main())
