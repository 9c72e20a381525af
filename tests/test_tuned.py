"""pipelines.tuned: a step-size grid per arm on validation, then the comparison at the chosen α."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.report.results import RunResult
from pipelines.report.tuned import choose_step_sizes
from pipelines.tuned import at_step_sizes, grid_plan, labels_at, with_final_train_loss
from src.config import ConfigError, TuneConfig, to_config
from tests.conftest import mlflow_runs, run_entry
from tests.test_config import composed


def tuned(**tune: object) -> object:
    config = composed("+experiment=compare", "compare.seeds=[1,2,3]")
    return replace(config, tune=TuneConfig(**tune))  # type: ignore[arg-type]


def test_the_grid_crosses_each_tuned_arm_with_its_step_sizes_on_the_grid_seeds() -> None:
    from pipelines.compare import plan

    config = tuned(lr={"beta_0.9_0.999": [1e-3, 1e-2]}, seeds=[0])
    grid, cells = grid_plan(config)  # type: ignore[arg-type]
    assert cells == {"beta_0.9_0.999@lr=0.001": ("beta_0.9_0.999", 1e-3),
                     "beta_0.9_0.999@lr=0.01": ("beta_0.9_0.999", 1e-2)}
    jobs = plan(grid)
    assert [(j.arm, j.seed, j.config.optimizer.lr, j.config.optimizer.betas) for j in jobs] == [
        ("beta_0.9_0.999@lr=0.001", 0, 1e-3, [0.9, 0.999]),
        ("beta_0.9_0.999@lr=0.01", 0, 1e-2, [0.9, 0.999])]
    final = at_step_sizes(config, {"beta_0.9_0.999": 1e-2})  # type: ignore[arg-type]
    final_jobs = plan(final)
    assert {(j.arm, j.config.optimizer.lr) for j in final_jobs} == {
        ("beta_0.9_0.999", 1e-2), ("beta_0.1_0.1", 1e-3)}  # the untuned arm as configured
    assert sorted({j.seed for j in final_jobs}) == [1, 2, 3]
    assert labels_at(final)["beta_0.9_0.999"] == "beta_0.9_0.999 (α=0.01)"


def test_the_chosen_step_size_has_the_best_mean_validation_metric() -> None:
    cells = {"a@1": ("a", 1e-3), "a@2": ("a", 1e-2), "a@3": ("a", 1e-1), "b@1": ("b", 1e-3)}

    def run(arm: str, seed: int, loss: float, status: str = "FINISHED") -> RunResult:
        return RunResult(arm, seed, final={"val/loss": loss, "val/acc": 1 - loss}, status=status)

    results = [run("a@1", 0, 0.30), run("a@1", 1, 0.20),   # mean 0.25
               run("a@2", 0, 0.10), run("a@2", 1, 0.40),   # mean 0.25: a tie, the smaller α wins
               run("a@3", 0, 0.01, "FAILED: diverged"),    # not finished: not counted
               run("b@1", 0, math.nan)]                     # no finite value: b gets none
    assert choose_step_sizes(results, cells, "val/loss") == {"a": 1e-3}
    assert choose_step_sizes(results, cells, "val/acc") == {"a": 1e-3}
    results.append(run("a@2", 2, 0.0))
    assert choose_step_sizes(results, cells, "val/loss") == {"a": 1e-2}


def test_the_last_training_loss_joins_the_final_metrics() -> None:
    r = RunResult("a", 0, history={"train/loss": [0.5, 0.25]}, final={"test/acc": 0.9})
    assert with_final_train_loss([r])[0].final == {"test/acc": 0.9, "train/loss": 0.25}


@pytest.mark.parametrize(("tune", "message"), [
    ({"lr": {}}, "tune.lr is empty"),
    ({"lr": {"a": []}}, "tune.lr.a is empty"),
    ({"lr": {"a": [0.0]}}, r"tune.lr.a\[0\]=0.0: must be a number > 0"),
    ({"lr": {"a": [0.1, 0.1]}}, "values repeat"),
    ({"lr": {"a": [0.1]}, "seeds": []}, "tune.seeds is empty"),
    ({"lr": {"a": [0.1]}, "metric": "test/acc"}, "tune.metric='test/acc'"),
])
def test_bad_grids_name_the_key(tune: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneConfig(**tune)


def test_a_grid_must_tune_known_arms_on_seeds_the_comparison_does_not_use() -> None:
    from omegaconf import OmegaConf

    def check(config: object) -> None:
        to_config(OmegaConf.structured(config))

    with pytest.raises(ConfigError, match=r"tune.lr: \['nope'\] are not compare arms"):
        check(tuned(lr={"nope": [1e-3]}))
    with pytest.raises(ConfigError, match=r"tune.seeds=\[0, 1\]: \[1\] also in compare.seeds"):
        check(tuned(lr={"beta_0.1_0.1": [1e-3]}, seeds=[0, 1]))
    with pytest.raises(ConfigError, match="needs a compare: section"):
        check(replace(composed(), tune=TuneConfig(lr={"a": [1e-3]})))


def _choices(children: list, metric: str = "val/loss") -> dict[str, float]:
    """Per arm, the α of the grid run with the lowest final `metric` (one grid seed)."""
    best: dict[str, tuple[float, float]] = {}
    for run in children:
        arm = run.data.tags["arm"]
        if "@lr=" in arm:
            name, lr = arm.split("@lr=")
            value = (run.data.metrics[metric], float(lr))
            best[name] = min(best.get(name, value), value)
    return {arm: lr for arm, (_, lr) in best.items()}


@pytest.mark.parametrize(("experiment", "overrides", "arms"), [
    ("paper_logreg", ["tune.lr.adam=[0.01,0.1]", "tune.lr.sgd_nesterov=[0.1,1.0]",
                      "tune.lr.adagrad=[0.1]"], ["adam", "sgd_nesterov", "adagrad"]),
    ("paper_mlp", ["model.hidden=[32,32]", "data.limit_train=null", "tune.lr.adam=[1e-3,1e-2]",
                   "tune.lr.adagrad=[1e-2]", "tune.lr.rmsprop=[1e-3]", "tune.lr.sgd_nesterov=[0.1]",
                   "tune.lr.adadelta=[1.0]"],
     ["adam", "adagrad", "rmsprop", "sgd_nesterov", "adadelta"]),
])
def test_the_paper_experiments_run_end_to_end(experiment: str, overrides: list[str],
                                              arms: list[str], tiny_mnist: Path,
                                              store: Path) -> None:
    done = run_entry("src.train", f"+experiment={experiment}", f"data.root={tiny_mnist}",
                     "data.download=false", "data.val_size=100", "trainer.max_epochs=1",
                     "compare.seeds=[1,2]", "compare.workers=2", *overrides, store=store,
                     timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = mlflow_runs(store)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert all(r.info.status == "FINISHED" for r in runs)
    grid = [r for r in children if "@lr=" in r.data.tags["arm"]]
    final = [r for r in children if "@lr=" not in r.data.tags["arm"]]
    assert {r.data.params["seed"] for r in grid} == {"0"}
    assert sorted((r.data.tags["arm"], r.data.params["seed"]) for r in final) == sorted(
        (arm, seed) for arm in arms for seed in ("1", "2"))
    chosen = _choices(grid)
    assert set(chosen) == set(arms)
    for r in final:  # each arm trained at the α its grid chose, with its own optimizer
        assert float(r.data.params["optimizer.lr"]) == chosen[r.data.tags["arm"]]
        assert r.data.params["data.batch_size"] == "128"
    names = {r.data.tags["arm"]: r.data.params["optimizer.name"] for r in final}
    assert names["adam"] == "adam" and names["sgd_nesterov"] == "sgd"
    assert {r.data.params["optimizer.sgd.nesterov"] for r in final
            if r.data.tags["arm"] == "sgd_nesterov"} == {"True"}
    if experiment == "paper_logreg":
        assert {r.data.params["optimizer.schedule"] for r in children} == {"inv_sqrt"}
        assert {r.data.params["model.hidden"] for r in children} == {"[]"}
    else:
        assert {r.data.params["optimizer.schedule"] for r in children} == {"constant"}
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/curves.png", "report/metrics.md", "report/step_sizes.md",
            "report/step_sizes.png", "report/step_sizes.csv"} <= report
    folder = Path(parent.info.artifact_uri.removeprefix("file://")) / "report"
    table = (folder / "metrics.md").read_text()
    for arm in arms:
        assert f"{arm} (α={chosen[arm]:g})" in table
    assert "| train/loss |" in table and "| test/acc |" in table and "| val/acc |" in table
    assert parent.data.metrics["step_size/adam"] == chosen["adam"]
    assert "verdict: " in done.stdout and "step size: adam α=" in done.stdout
