"""Scale-out: workers started independently (as on N machines) join one study held in
PostgreSQL, and record into an MLflow tracking server backed by PostgreSQL.

Needs Debian's postgresql (installed by .ci/run); skips where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO
from tests.postgres import postgres_bin, postgres_cluster
from tests.servers import free_port, wait_for_http

pytestmark = pytest.mark.skipif(
    postgres_bin() is None or (os.geteuid() == 0 and shutil.which("runuser") is None),
    reason="PostgreSQL (Debian's postgresql package) is not installed")


def test_independent_workers_share_one_study(tiny_mnist: Path, tmp_path: Path) -> None:
    with postgres_cluster(("optuna", "mlflow")) as pg:
        driver = pg.replace("postgresql://", "postgresql+psycopg://")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"{driver}/mlflow", "--artifacts-destination", str(tmp_path / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        tracking = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{tracking}/health", server, timeout=300)  # a loaded machine

            storage = f"{driver}/optuna"
            args = [sys.executable, "-m", "pipelines.study", f"data.root={tiny_mnist}",
                    "data.val_size=100", "data.download=false", "trainer.max_epochs=1",
                    "study.name=scale", f"study.storage={storage}", "study.n_trials=4",
                    "study.workers=1", "study.pruner.name=none", "study.confirm.enabled=false",
                    f"study.export_dir={tmp_path / 'export'}"]
            env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONUNBUFFERED": "1"}
            # Two workers started on their own, as two machines or a SLURM array would.
            workers = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for _ in range(2)]
            outputs = [w.communicate(timeout=400) for w in workers]
            for w, (out, err) in zip(workers, outputs, strict=True):
                assert w.returncode == 0, err[-3000:]
                assert "pw-test-only" not in out + err  # the storage password is masked

            study = optuna.load_study(study_name="scale", storage=storage)
            finished = [t for t in study.trials
                        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            assert len(finished) == 4
            assert len({t.number for t in finished}) == 4
            assert not [t for t in study.trials if t.state == TrialState.RUNNING]
            # Started together, they created the study once (its two baselines enqueued
            # once) and sampled with seeds of their own (no parameter set twice).
            created = [out for out, _ in outputs if "study 'scale' created:" in out]
            assert len(created) == 1, [out for out, _ in outputs]
            sampled = [tuple(sorted(t.params.items())) for t in study.trials if t.params]
            assert len(sampled) == len(set(sampled)), sampled
            baselines = [t.system_attrs["fixed_params"] for t in study.trials
                         if "fixed_params" in t.system_attrs]
            assert len(baselines) == 2 and baselines[0] != baselines[1], baselines

            client = MlflowClient(tracking)
            experiment = client.get_experiment_by_name("study-scale")
            runs = client.search_runs([experiment.experiment_id], max_results=1000)
            parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
            assert len(parents) == 2  # one per invocation
            children = {r.data.tags["optuna.trial"]: r for r in runs
                        if "mlflow.parentRunId" in r.data.tags}
            for trial in finished:
                child = children[str(trial.number)]
                assert child.data.tags["mlflow.parentRunId"] in parents
                assert child.data.tags["optuna.state"] == trial.state.name
                assert child.info.status == "FINISHED"
                assert "val/loss" in child.data.metrics
            # Artifacts went through the server to its artifact root.
            assert any((tmp_path / "artifacts").rglob("config.yaml"))
        finally:
            server.terminate()
            server.wait(timeout=30)
