"""pipelines.study.config: the `study:` section composes, validates and builds Optuna's objects."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from hydra.errors import ConfigCompositionException

from pipelines.study.config import grid_values, make_pruner, make_sampler, suggest
from pipelines.study.run import run_study
from pipelines.study.storage import DEFAULT_STORAGE
from src.config import ConfigError
from src.tracking import PROJECT_ROOT
from tests.studies import composed

# --- configuration ---------------------------------------------------------------------------

def test_defaults_compose_to_the_documented_study() -> None:
    c = composed()
    s = c.study
    assert (s.name, s.n_trials, s.metric, s.resolved_direction) == (
        "adam-mnist", 40, "val/loss", "minimize")
    assert (s.sampler.name, s.sampler.seed, s.pruner.name) == ("tpe", 0, "median")
    assert s.space.lr == [1e-5, 1e-1]
    assert s.space.beta1[0] <= 0.1 and s.space.beta2[0] <= 0.1  # the blog's 0.1 is inside
    assert s.space.beta1[1] >= 0.99 and s.space.beta2[1] >= 0.999
    assert s.space.eps is None and s.storage is None
    assert f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'optuna.db'}" == DEFAULT_STORAGE
    blog = [(1e-3, 0.9, 0.999), (1e-3, 0.1, 0.1)]
    assert [(p.lr, p.beta1, p.beta2) for p in s.enqueue] == blog
    assert c.tracking.experiment == "study-adam-mnist"
    assert (c.optimizer.lr, c.trainer.max_epochs) == (1e-3, 5)  # the run's own defaults


def test_public_overrides_work_exactly_as_written(tmp_path: Path) -> None:
    c = composed("study.name=my_study", f"study.storage=sqlite:///{tmp_path}/o.db",
                 "study.n_trials=7", "study.workers=3", "trainer.max_epochs=2",
                 f"data.root={tmp_path}", "study.sampler.name=cmaes",
                 "study.pruner.name=hyperband", "study.space.eps=[1e-10,1e-4]")
    s = c.study
    assert (s.name, s.storage, s.n_trials, s.workers) == (
        "my_study", f"sqlite:///{tmp_path}/o.db", 7, 3)
    assert c.trainer.max_epochs == 2 and c.data.root == str(tmp_path)
    assert (s.sampler.name, s.pruner.name) == ("cmaes", "hyperband")
    assert s.space.eps is not None and s.space.searched() == ["lr", "beta1", "beta2", "eps"]
    assert c.tracking.experiment == "study-my_study"


def test_every_sampler_and_pruner_is_selectable() -> None:
    expected = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "cmaes": optuna.samplers.CmaEsSampler, "grid": optuna.samplers.GridSampler}
    for name, cls in expected.items():
        c = composed(f"study.sampler.name={name}", "study.n_trials=5")
        assert isinstance(make_sampler(c.study, seed=1), cls)
    pruners = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
               "hyperband": optuna.pruners.HyperbandPruner}
    for name, cls in pruners.items():
        c = composed(f"study.pruner.name={name}", "trainer.max_epochs=3")
        assert isinstance(make_pruner(c.study, c.trainer.max_epochs), cls)


def test_betas_are_searched_on_a_log_scale_of_one_minus_beta() -> None:
    space = composed().study.space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = []
    for _ in range(900):
        trial = study.ask()
        points.append(suggest(trial, space))
        study.tell(trial, 0.0)
    distribution = study.trials[0].distributions["1-beta1"]
    assert distribution.log and math.isclose(distribution.low, 1 - 0.999)
    assert math.isclose(distribution.high, 1 - 0.1)
    assert study.trials[0].distributions["lr"].log
    beta1 = [p["beta1"] for p in points]
    assert all(0.1 <= b <= 0.999 for b in beta1)

    def share(low: float, high: float) -> float:
        return sum(low <= b <= high for b in beta1) / len(beta1)

    # One decade of 1 - β each: 0.99 → 0.999 is searched as much as 0.1 → 0.91.
    assert abs(share(0.99, 0.999) - share(0.1, 0.91)) < 0.06
    assert share(0.99, 0.999) > 0.25  # uniform-in-β would give it 1 %


@pytest.mark.parametrize(("override", "names"), [
    ("study.space.lr=[0.01,0.01]", "study.space.lr.*empty or inverted"),
    ("study.space.beta1=[0.9,0.1]", "study.space.beta1.*empty or inverted"),
    ("study.space.beta2=[0.5,1.0]", r"study.space.beta2.*\[0, 1\)"),
    ("study.space.lr=[0,0.1]", "study.space.lr"),
    ("study.space.lr=[0.1]", "study.space.lr"),
    ("study.sampler.name=bayes", "study.sampler.name='bayes'"),
    ("study.pruner.name=asha", "study.pruner.name='asha'"),
    ("study.n_trials=0", "study.n_trials=0"),
    ("study.workers=0", "study.workers=0"),
    ("study.metric=test/acc", "study.metric"),
    ("study.direction=maximize", "study.direction"),
    ("study.name=a/b", "study.name"),
    ("study.enqueue=[{lr:1.0}]", r"study.enqueue\[0\].lr"),
    ("study.grace_period=1", "study.grace_period"),
    ("study.pruner.name=hyperband", "min_resource"),  # with trainer.max_epochs=1 below
    ("study.confirm.seeds=[0,1]", r"study.confirm.seeds=\[0, 1\]: holds the search's seed=0"),
    ("study.confirm.seeds=[1,1]", "study.confirm.seeds=.*repeat"),
    ("study.confirm.seeds=[1]", "study.confirm.seeds=.*at least two"),
    ("study.confirm.n_seeds=1", "study.confirm.n_seeds=1"),
    ("study.confirm.top_k=0", "study.confirm.top_k=0"),
    ("study.confirm.alpha=0", "study.confirm.alpha=0"),
    ("study.confirm.baseline.beta1=1.5", "study.confirm.baseline: .*betas\\[0\\]=1.5"),
])
def test_bad_values_name_the_key_and_touch_no_storage(override: str, names: str,
                                                      tmp_path: Path) -> None:
    storage = tmp_path / "optuna.db"
    with pytest.raises(ConfigError, match=names) as refused:
        # Were the value accepted, run_study would stop at the missing data, writing nothing.
        config = composed(override, "trainer.max_epochs=1", f"study.storage=sqlite:///{storage}",
                          f"data.root={tmp_path}/absent", "data.download=false",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
        run_study(config)
    assert "\n" not in str(refused.value)  # the CLI prints it as one line
    assert not storage.exists()


def test_grid_must_hold_the_trials() -> None:
    with pytest.raises(ConfigError, match="grid has only 8 points"):
        composed("study.sampler.name=grid", "study.sampler.grid_points=2", "study.n_trials=9")


@pytest.mark.parametrize("override", ["study.n_trails=3", "study.sampler.nme=tpe",
                                      "study.space.alpha=[1e-4,1e-2]", "study.enqueue=[{lrr:0.1}]",
                                      "study.n_trials=many"])
def test_typos_fail_while_composing(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        composed(override)


def test_the_automatic_grid_is_log_spaced_in_one_minus_beta_and_mapped_back() -> None:
    # study.space.beta1=[0.1, 0.999]: 1 - β1 in [0.001, 0.9], three points 0.001, 0.03, 0.9.
    s = composed("study.sampler.name=grid", "study.n_trials=5").study
    values = grid_values(s)
    assert values["beta1"] == pytest.approx([0.1, 0.97, 0.999])
    assert values["beta2"] == pytest.approx([0.1, 1 - math.sqrt(0.9 * 1e-4), 0.9999])
    assert values["lr"] == pytest.approx([1e-5, 1e-3, 1e-1])
    # The trials train exactly those β, sampled as 1 - β.
    trained = set()

    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, s.space)
        trained.add((point["beta1"], point["beta2"]))
        return 0.0

    optuna.create_study(sampler=make_sampler(s, seed=0)).optimize(objective, n_trials=27)
    assert sorted({b1 for b1, _ in trained}) == pytest.approx([0.1, 0.97, 0.999])
    assert sorted({b2 for _, b2 in trained}) == pytest.approx(values["beta2"])
    assert len(trained) == 9
