"""`python -m src.train -m ...`: a Hydra sweep as one MLflow parent, a child per job, a report."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.multirun import group_name, job_name, swept_keys
from tests.conftest import REPO, mlflow_runs, run_entry

TINY = ("data.val_size=100", "trainer.max_epochs=1", "data.download=false",
        "tracking.log_model=false")


def test_a_sweep_is_one_parent_with_named_children_and_a_report(tiny_mnist: Path, store: Path,
                                                                tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    done = run_entry("src.train", "-m", f"data.root={tiny_mnist}", *TINY,
                     "optimizer.betas=[0.9,0.999],[0.1,0.1]", "seed=0,1",
                     "hydra.launcher.workers=2", f"hydra.sweep.dir={sweep_dir}", store=store)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    runs = mlflow_runs(store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 5
    parent = parents[0]
    assert parent.data.tags["pipeline"] == "multirun"
    assert "optimizer.betas=[0.9,0.999],[0.1,0.1] seed=0,1" in parent.data.tags["sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.info.run_name for c in children) == [
        "optimizer.betas=[0.1,0.1],seed=0", "optimizer.betas=[0.1,0.1],seed=1",
        "optimizer.betas=[0.9,0.999],seed=0", "optimizer.betas=[0.9,0.999],seed=1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        betas, seed = child.info.run_name.removeprefix("optimizer.betas=").split(",seed=")
        assert child.data.params["optimizer.betas"] == betas.replace(",", ", ")
        assert child.data.params["seed"] == seed
        assert child.data.tags["arm"] == f"optimizer.betas={betas}"
        assert child.data.params["trainer.num_threads"] == "1"

    # The jobs ran in two worker processes at once: some two children overlap in time.
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans))

    # The comparison's report, with Welch's test of the two groups; Hydra's sweep file.
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/curves.png", "report/metrics.md", "report/metrics.csv",
            "report/metrics_differences.csv", "report/multirun.yaml"} <= report
    assert "diff/test_acc_mean" in parent.data.metrics
    assert "verdict: optimizer.betas=[0.9,0.999]" in done.stdout
    assert (sweep_dir / "multirun.yaml").is_file()
    assert not (REPO / "multirun.yaml").exists()


@pytest.mark.parametrize(("sweep", "message"), [
    (["optimizer.lr=0.01,0"],
     "error: multirun job #1 (optimizer.lr=0): optimizer.lr=0.0: must be a number > 0"),
    (["seed=0,1", "hydra.launcher.workers=0"],
     "error: hydra.launcher.workers=0: must be >= 1 (or null: one per core)"),
])
def test_a_bad_value_in_any_job_is_one_line_and_no_run(tiny_mnist: Path, store: Path,
                                                       tmp_path: Path, sweep: list[str],
                                                       message: str) -> None:
    done = run_entry("src.train", "-m", f"data.root={tiny_mnist}", *TINY, *sweep,
                     f"hydra.sweep.dir={tmp_path}", store=store)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in done.stderr
    assert mlflow_runs(store) == []


def test_a_sweep_of_pipelines_is_refused(tiny_mnist: Path, store: Path, tmp_path: Path) -> None:
    done = run_entry("src.train", "-m", "+experiment=compare", f"data.root={tiny_mnist}",
                     "seed=0,1", f"hydra.sweep.dir={tmp_path}", store=store)
    assert done.returncode == 2, done.stderr
    assert "run it without -m" in done.stderr.strip().splitlines()[-1]
    assert mlflow_runs(store) == []


@pytest.mark.parametrize(("jobs", "names", "groups"), [
    # The blog's comparison: β and the seed vary, the data root does not.
    ([["data.root=/d", "optimizer.betas=[0.9,0.999]", "seed=0"],
      ["data.root=/d", "optimizer.betas=[0.9,0.999]", "seed=1"],
      ["data.root=/d", "optimizer.betas=[0.1,0.1]", "seed=0"]],
     ["optimizer.betas=[0.9,0.999],seed=0", "optimizer.betas=[0.9,0.999],seed=1",
      "optimizer.betas=[0.1,0.1],seed=0"],
     ["optimizer.betas=[0.9,0.999]", "optimizer.betas=[0.9,0.999]", "optimizer.betas=[0.1,0.1]"]),
    # Seeds only: one group.
    ([["seed=0"], ["seed=1"]], ["seed=0", "seed=1"], ["all", "all"]),
    # What every job sets alike (here the seed too) names no job.
    ([["optimizer.lr=0.1", "model.dropout=0", "seed=0"],
      ["optimizer.lr=0.1", "model.dropout=0.5", "seed=0"]],
     ["model.dropout=0", "model.dropout=0.5"],
     ["model.dropout=0", "model.dropout=0.5"]),
])
def test_jobs_are_named_by_what_the_sweep_varies(jobs: list[list[str]], names: list[str],
                                                 groups: list[str]) -> None:
    swept = swept_keys(jobs)
    assert [job_name(job, swept) for job in jobs] == names
    assert [group_name(job, swept) for job in jobs] == groups
