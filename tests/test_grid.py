"""`+experiment=beta_grid` / `bias_correction` (pipelines.grid), their report, and the second
dataset and model (`data=fashion_mnist`, `model=paper_mlp`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from torch import nn

from pipelines.grid import as_comparison, grid_arms
from src import data
from src.config import ConfigError
from tests.conftest import mlflow_runs, run_entry, write_tiny_mnist
from tests.test_config import composed

# ----------------------------------------------------------------------------- composing


def test_beta_grid_composes_to_the_issue_default() -> None:
    c = composed("+experiment=beta_grid")
    assert c.pipeline == "pipelines.grid.main" and c.grid is not None
    assert c.grid.beta1 == [0.0, 0.5, 0.9, 0.99]
    assert c.grid.beta2 == [0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    assert len(c.grid.seeds) >= 2
    arms, cells = grid_arms(c)
    assert len(arms) == 24 and arms[0].name == "beta_0_0.1" and arms[-1].name == "beta_0.99_0.9999"
    assert cells["beta_0.9_0.999"] == {"beta1": 0.9, "beta2": 0.999, "lr": 1e-3,
                                       "bias_correction": True}


def test_grid_lists_are_overridable_and_become_compare_jobs() -> None:
    from pipelines.compare import plan

    c = composed("+experiment=beta_grid", "grid.beta1=[0,0.9]", "grid.beta2=[0.99]",
                 "grid.seeds=[3,4,5]", "optimizer.lr=0.01")
    comparison, cells = as_comparison(c)
    jobs = plan(comparison)
    assert list(cells) == ["beta_0_0.99", "beta_0.9_0.99"]
    assert [(j.arm, j.seed) for j in jobs][:3] == [("beta_0_0.99", 3), ("beta_0_0.99", 4),
                                                   ("beta_0_0.99", 5)]
    assert len(jobs) == 6
    assert jobs[-1].config.optimizer.betas == [0.9, 0.99] and jobs[-1].config.optimizer.lr == 0.01
    assert all(j.config.grid is None and j.config.pipeline is None for j in jobs)


def test_bias_correction_experiment_crosses_beta2_lr_and_correction() -> None:
    c = composed("+experiment=bias_correction")
    assert c.grid is not None and c.grid.beta2 == [0.99, 0.999, 0.9999]
    assert c.grid.bias_correction == [True, False] and len(c.grid.lr or []) >= 2
    arms, cells = grid_arms(c)
    assert len(arms) == 3 * len(c.grid.lr or []) * 2
    off = cells["beta_0.9_0.9999_lr_0.001_bc_off"]
    assert off == {"beta1": 0.9, "beta2": 0.9999, "lr": 1e-3, "bias_correction": False}
    arm = next(a for a in arms if a.name == "beta_0.9_0.9999_lr_0.001_bc_off")
    assert arm.optimizer == {"betas": [0.9, 0.9999], "lr": 1e-3, "bias_correction": False}
    two = composed("+experiment=bias_correction", "grid.lr=[1e-3,1e-2]", "grid.beta1=[0,0.9]")
    assert len(grid_arms(two)[0]) == 2 * 3 * 2 * 2


@pytest.mark.parametrize(("override", "message"), [
    ("grid.beta1=[]", "grid.beta1 is empty: give at least one value"),
    ("grid.beta2=[]", "grid.beta2 is empty"),
    ("grid.beta1=[0.9,1.0]", "grid.beta1[1]=1.0: beta1 must be in [0, 1)"),
    ("grid.beta2=[-0.5]", "grid.beta2[0]=-0.5: beta2 must be in [0, 1)"),
    ("grid.beta2=[0.9,0.9]", "grid.beta2=[0.9, 0.9]: values repeat"),
    ("grid.lr=[0.001,0]", "grid.lr[1]=0.0: must be a number > 0"),
    ("grid.seeds=[]", "grid.seeds is empty"),
    ("grid.workers=0", "grid.workers=0: must be >= 1"),
])
def test_bad_grid_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        composed("+experiment=beta_grid", override)


def test_bad_grid_is_refused_in_one_line_before_any_run(tiny_mnist: Path, store: Path) -> None:
    done = run_entry("src.train", "+experiment=beta_grid", f"data.root={tiny_mnist}",
                     "grid.beta2=[0.9,1.5]", store=store)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: grid.beta2[1]=1.5: beta2 must be in [0, 1)")
    assert mlflow_runs(store) == []


# ----------------------------------------------------------------------------- end to end


def test_tiny_grid_nests_cells_and_seeds_and_draws_the_heatmap(tiny_mnist: Path,
                                                               store: Path) -> None:
    done = run_entry("src.train", "+experiment=beta_grid", f"data.root={tiny_mnist}",
                     "data.val_size=100", "trainer.max_epochs=1", "grid.beta1=[0,0.9]",
                     "grid.beta2=[0.5,0.999]", "grid.seeds=[0,1]", "grid.workers=2",
                     "internals.enabled=true", "model.hidden=[32]", store=store)
    assert done.returncode == 0, done.stderr
    assert "4 cells × 2 seeds = 8 runs" in done.stdout
    runs = mlflow_runs(store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 9
    parent = parents[0]
    assert parent.data.tags["pipeline"] == "grid" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((c.data.tags["arm"], c.data.tags["seed"]) for c in children) == sorted(
        (f"beta_{b1}_{b2}", s) for b1 in ("0", "0.9") for b2 in ("0.5", "0.999")
        for s in ("0", "1"))
    assert all(r.info.status == "FINISHED" for r in children)
    assert {c.data.params["optimizer.betas"] for c in children} == {
        "[0.0, 0.5]", "[0.0, 0.999]", "[0.9, 0.5]", "[0.9, 0.999]"}
    assert all("internals/step_p50" in c.data.metrics for c in children)
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/heatmap.png", "report/grid.md", "report/grid.csv", "report/curves.png",
            "report/metrics.md", "report/internals.png", "report/internals.md"} <= report
    assert parent.data.metrics["beta_0.9_0.999/finished"] == 2
    assert "beta_0.9_0.999/val_loss_mean" in parent.data.metrics
    folder = Path(done.stdout.split("report: ")[1].split()[0])
    assert (folder / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "| β1 \\ β2 | 0.5 | 0.999 |" in (folder / "grid.md").read_text()


# ----------------------------------------------------------------------------- data, model


def test_paper_mlp_composes_and_builds_784_1000_1000_10() -> None:
    from src.model import build_mlp

    c = composed("model=paper_mlp")
    assert c.model.hidden == [1000, 1000] and c.model.dropout == 0.5
    net = build_mlp(784, c.model.hidden, c.model.num_classes, c.model.dropout, c.model.init)
    shapes = [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]
    assert shapes == [(784, 1000), (1000, 1000), (1000, 10)]
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert [type(m) for m in net].count(nn.ReLU) == 2


def test_fashion_mnist_composes_with_its_default_location() -> None:
    c = composed("data=fashion_mnist")
    assert c.data.name == "fashion_mnist"
    system = data.FASHION_MNIST.system_roots[0]  # /usr/share/datasets/fashion-mnist
    installed = len(data.locate_files(data.FASHION_MNIST, Path(system))) == 4
    assert c.data.root == (system if installed else "data/fashion_mnist")
    assert composed("data=fashion_mnist", "data.root=/x").data.root == "/x"
    assert composed().data.root == data.default_root("mnist")  # MNIST keeps its own default


def test_mnists_default_is_a_copy_beside_the_checkout_else_data_mnist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    beside = tmp_path / "shared" / "mnist"
    spec = replace(data.MNIST, local_roots=(str(beside),))  # absolute here; relative normally
    monkeypatch.setitem(data.DATASETS, "mnist", spec)
    assert data.default_root("mnist") == "data/mnist"  # no copy: downloaded into data/mnist
    write_tiny_mnist(beside)
    assert data.default_root("mnist") == str(beside)
    assert composed().data.root == str(beside)
    # The workspace's copy is named relative to the project root, as the Makefile names it.
    assert data.MNIST.local_roots == ("../shared/data/mnist",)


def test_default_root_prefers_a_complete_system_copy(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    system = tmp_path / "system"
    spec = replace(data.FASHION_MNIST, system_roots=(str(tmp_path / "absent"), str(system)))
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", spec)
    assert data.default_root("fashion_mnist") == "data/fashion_mnist"  # nothing installed
    write_tiny_mnist(system)
    (system / "t10k-labels-idx1-ubyte.gz").unlink()
    assert data.default_root("fashion_mnist") == "data/fashion_mnist"  # incomplete
    write_tiny_mnist(system)
    assert data.default_root("fashion_mnist") == str(system)


def test_debians_fashion_mnist_is_the_genuine_dataset() -> None:
    """The package re-gzips the files (other .gz MD5s), but the IDX bytes are the published."""
    import gzip
    import hashlib

    spec = data.FASHION_MNIST
    files = data.locate_files(spec, Path(spec.system_roots[0]))
    if len(files) < 4:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    for role, path in files.items():
        raw = path.read_bytes()
        content = gzip.decompress(raw) if path.name.endswith(".gz") else raw
        assert hashlib.md5(content).hexdigest() == spec.raw_md5[role], path
    arrays = data.load_arrays(spec, Path(spec.system_roots[0]), download=False)
    assert arrays.train_images.shape == (60000, 28, 28)
    assert arrays.test_labels.shape == (10000,)
    assert math.isclose(float(np.bincount(arrays.train_labels).std()), 0.0)  # 6000 per class
