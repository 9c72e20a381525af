"""`+experiment=compare`: arms × seeds as nested MLflow runs, with a report on the parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from src.config import ArmConfig, OptimizerConfig
from tests.conftest import mlflow_runs, run_entry
from tests.test_config import composed

TINY = ("data.val_size=100", "trainer.max_epochs=1", "compare.seeds=[0,1]", "compare.workers=2")


def test_tiny_compare_nests_children_and_reports(tiny_mnist: Path, store: Path) -> None:
    done = run_entry("src.train", "+experiment=compare", f"data.root={tiny_mnist}", *TINY,
                     store=store)
    assert done.returncode == 0, done.stderr
    runs = mlflow_runs(store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted((c.data.tags["arm"], c.data.tags["seed"]) for c in children) == [
        ("beta_0.1_0.1", "0"), ("beta_0.1_0.1", "1"),
        ("beta_0.9_0.999", "0"), ("beta_0.9_0.999", "1")]
    assert {c.data.params["optimizer.betas"] for c in children} == {"[0.9, 0.999]", "[0.1, 0.1]"}
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/curves.png", "report/metrics.md", "report/metrics.csv"} <= report
    metrics = parent.data.metrics
    for arm in ("beta_0.9_0.999", "beta_0.1_0.1"):
        assert f"{arm}/test_acc_mean" in metrics and f"{arm}/test_acc_std" in metrics
        assert f"{arm}/val_acc_mean" in metrics
    assert "verdict: " in done.stdout and "report: " in done.stdout
    assert (Path(done.stdout.split("report: ")[1].split()[0]) / "curves.png").is_file()


def test_empty_seed_list_refused_before_any_run(tiny_mnist: Path, store: Path) -> None:
    done = run_entry("src.train", "+experiment=compare", f"data.root={tiny_mnist}",
                     "compare.seeds=[]", store=store)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "error: compare.seeds is empty: give at least one seed")
    assert mlflow_runs(store) == []


def test_plan_crosses_arms_and_seeds_with_arm_overrides() -> None:
    from pipelines.compare import plan

    config = composed("+experiment=compare", "compare.seeds=[3,4]", "optimizer.lr=0.01")
    jobs = plan(config)
    assert [(j.arm, j.seed) for j in jobs] == [("beta_0.9_0.999", 3), ("beta_0.9_0.999", 4),
                                               ("beta_0.1_0.1", 3), ("beta_0.1_0.1", 4)]
    assert jobs[2].config.optimizer.betas == [0.1, 0.1]
    assert jobs[2].config.optimizer.lr == 0.01  # the base section still applies
    assert all(j.config.seed == j.seed and j.config.compare is None for j in jobs)


def test_arm_labels_show_beta_and_what_else_changed() -> None:
    from pipelines.compare import arm_label
    from src.config import arm_optimizer

    base = OptimizerConfig()
    arm = ArmConfig(name="x", optimizer={"betas": [0.1, 0.1], "lr": 0.01})
    assert arm_label(base, arm_optimizer(base, arm)) == "β=(0.1, 0.1), α=0.01"
    assert arm_label(base, base) == "β=(0.9, 0.999)"


def test_a_configured_contrast_is_the_pair_the_report_tests(tmp_path: Path) -> None:
    from pipelines.compare import arm_labels, contrast, write_compare_report
    from pipelines.report.results import RunResult

    config = composed("+experiment=compare_three",
                      "compare.contrast=[beta_0.9_0.999,beta_0.5_0.9]")
    compare = config.compare
    assert compare is not None
    assert contrast(compare) == ("beta_0.9_0.999", "beta_0.5_0.9")
    default = composed("+experiment=compare_three").compare
    assert default is not None and contrast(default) == ("beta_0.9_0.999", "beta_0.1_0.1")

    # The first two arms differ by 8 points, the contrast's pair by 3: the verdict and the
    # differences must be about the pair configured, not about the first two arms.
    accuracy = {"beta_0.9_0.999": 0.98, "beta_0.1_0.1": 0.90, "beta_0.5_0.9": 0.95}
    results = [RunResult(arm, seed, final={"test/acc": acc + 0.001 * seed})
               for arm, acc in accuracy.items() for seed in range(3)]
    summary, verdict = write_compare_report(tmp_path, results, compare,
                                            arm_labels(config.optimizer, compare.arms))
    assert verdict is not None
    assert verdict.startswith("β=(0.9, 0.999) beats β=(0.5, 0.9) on test/acc by 3.00 points")
    assert summary["diff/test_acc_mean"] == pytest.approx(0.03)
    differences = (tmp_path / "metrics_differences.csv").read_text().splitlines()
    assert {tuple(line.split(",")[:2]) for line in differences[1:]} == {
        ("beta_0.9_0.999", "beta_0.5_0.9")}


def test_the_verdict_is_printed_when_the_report_cannot_be_written(
        tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import errno

    from hydra import compose, initialize_config_dir

    from pipelines.compare import main
    from src.tracking import PROJECT_ROOT

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose("config", overrides=["+experiment=compare", f"data.root={tiny_mnist}",
                                           f"tracking.uri={uri}", "compare.seeds=[0,1]",
                                           "compare.workers=1", "data.val_size=100",
                                           "trainer.max_epochs=1"])
    # Only this process's client: the workers, forked from the forkserver, write as usual.
    monkeypatch.setattr(MlflowClient, "log_artifacts", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(cfg)
    out = capsys.readouterr().out
    verdict = [line for line in out.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and " on test/acc" in verdict[0], out
    assert ("warning: the report could not be written ([Errno 28] No space left on device); "
            "the verdict above is from the finished runs") in out
    assert "report: " not in out
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("compare").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED"] + ["FINISHED"] * 4
