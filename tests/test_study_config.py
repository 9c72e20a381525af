"""pipelines.study.config: the `study:` section composes, validates and builds Optuna's objects."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipelines.study.config import (
    BaselineConfig,
    ConfirmConfig,
    PointConfig,
    PrunerConfig,
    SamplerConfig,
    SamplerGridConfig,
    SearchSpaceConfig,
    StudyConfig,
    StudyRunConfig,
    baseline_arm,
    baseline_point,
    first_difference,
    from_optuna_params,
    grid_values,
    make_pruner,
    make_sampler,
    point_overrides,
    suggest,
    to_optuna_params,
    to_study_config,
    trial_settings,
)
from pipelines.study.run import run_study
from pipelines.study.storage import DEFAULT_STORAGE
from src.config import Config, ConfigError, OptimizerConfig, TrainerConfig
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


# --- every rule, checked on the dataclasses directly (no composing): the whole message ---------

SPACE_DEFAULT = "(['lr', 'beta1', 'beta2'])"
REFUSED: dict[str, tuple[type, dict[str, Any], str]] = {
    # case: (section, its arguments, the message)
    "space.lr null": (SearchSpaceConfig, {"lr": None}, "study.space.lr=None: expected [low, high]"),
    "space.lr of one": (SearchSpaceConfig, {"lr": [0.1]},
                        "study.space.lr=[0.1]: expected [low, high]"),
    "space.lr of three": (SearchSpaceConfig, {"lr": [0.1, 0.2, 0.3]},
                          "study.space.lr=[0.1, 0.2, 0.3]: expected [low, high]"),
    "space.lr inf": (SearchSpaceConfig, {"lr": [1e-3, math.inf]},
                     "study.space.lr=[0.001, inf]: expected numbers"),
    "space.lr nan": (SearchSpaceConfig, {"lr": [math.nan, 1e-3]},
                     "study.space.lr=[nan, 0.001]: expected numbers"),
    "space.lr inverted": (SearchSpaceConfig, {"lr": [0.1, 0.01]},
                          "study.space.lr=[0.1, 0.01]: empty or inverted range (need low < high)"),
    "space.lr empty": (SearchSpaceConfig, {"lr": [0.01, 0.01]},
                       "study.space.lr=[0.01, 0.01]: empty or inverted range (need low < high)"),
    "space.lr from 0": (SearchSpaceConfig, {"lr": [0.0, 0.1]},
                        "study.space.lr=[0.0, 0.1]: must lie in (0, inf)"),
    "space.beta1 < 0": (SearchSpaceConfig, {"beta1": [-0.1, 0.9]},
                        "study.space.beta1=[-0.1, 0.9]: must lie in [0, 1)"),
    "space.beta2 to 1": (SearchSpaceConfig, {"beta2": [0.5, 1.0]},
                         "study.space.beta2=[0.5, 1.0]: must lie in [0, 1)"),
    "space.beta2 of one": (SearchSpaceConfig, {"beta2": [0.5]},
                           "study.space.beta2=[0.5]: expected [low, high]"),
    "space.eps from 0": (SearchSpaceConfig, {"eps": [0.0, 1e-4]},
                         "study.space.eps=[0.0, 0.0001]: must lie in (0, inf)"),
    "sampler.name": (SamplerConfig, {"name": "bayes"},
                     "study.sampler.name='bayes': expected one of ['tpe', 'random', 'cmaes', "
                     "'grid']"),
    "sampler.n_startup_trials": (SamplerConfig, {"n_startup_trials": -1},
                                 "study.sampler.n_startup_trials=-1: must be >= 0"),
    "sampler.grid_points": (SamplerConfig, {"grid_points": 0},
                            "study.sampler.grid_points=0: must be >= 1"),
    "pruner.name": (PrunerConfig, {"name": "asha"},
                    "study.pruner.name='asha': expected one of ['none', 'median', 'hyperband']"),
    "pruner.n_startup_trials": (PrunerConfig, {"n_startup_trials": -1},
                                "study.pruner.n_startup_trials=-1: must be >= 0"),
    "pruner.n_warmup_steps": (PrunerConfig, {"n_warmup_steps": -1},
                              "study.pruner.n_warmup_steps=-1: must be >= 0"),
    "pruner.min_resource": (PrunerConfig, {"min_resource": 0},
                            "study.pruner.min_resource=0: must be >= 1"),
    "pruner.reduction_factor": (PrunerConfig, {"reduction_factor": 1},
                                "study.pruner.reduction_factor=1: must be >= 2"),
    "confirm.top_k": (ConfirmConfig, {"top_k": 0}, "study.confirm.top_k=0: must be >= 1"),
    "confirm.n_seeds": (ConfirmConfig, {"n_seeds": 1},
                        "study.confirm.n_seeds=1: must be >= 2 (a Welch test needs two seeds "
                        "per side)"),
    "confirm.seeds of one": (ConfirmConfig, {"seeds": [3]},
                             "study.confirm.seeds=[3]: give at least two seeds (a Welch test "
                             "needs two per side)"),
    "confirm.seeds repeat": (ConfirmConfig, {"seeds": [3, 4, 3]},
                             "study.confirm.seeds=[3, 4, 3]: seeds repeat"),
    "confirm.seeds out of range": (ConfirmConfig, {"seeds": [3, 2**32]},
                                   f"study.confirm.seeds[1]={2**32}: a seed must be an integer "
                                   "in [0, 2**32)"),
    "confirm.baseline.lr nan": (ConfirmConfig, {"baseline": BaselineConfig(lr=math.nan)},
                                "study.confirm.baseline.lr=nan: expected a number or null"),
    "confirm.baseline.eps inf": (ConfirmConfig, {"baseline": BaselineConfig(eps=math.inf)},
                                 "study.confirm.baseline.eps=inf: expected a number or null"),
    "confirm.baseline.beta2 a string": (
        ConfirmConfig, {"baseline": BaselineConfig(beta2="0.9")},  # type: ignore[arg-type]
        "study.confirm.baseline.beta2=0.9: expected a number or null"),
    "confirm.alpha=0": (ConfirmConfig, {"alpha": 0.0},
                        "study.confirm.alpha=0.0: must be in (0, 1)"),
    "confirm.alpha=1": (ConfirmConfig, {"alpha": 1.0},
                        "study.confirm.alpha=1.0: must be in (0, 1)"),
    "confirm.alpha=nan": (ConfirmConfig, {"alpha": math.nan},
                          "study.confirm.alpha=nan: must be in (0, 1)"),
    "name with a slash": (StudyConfig, {"name": "a/b"},
                          "study.name='a/b': use letters, digits, '_' and '-' (it names a file "
                          "and a Hydra config)"),
    "name from an underscore": (StudyConfig, {"name": "_a"},
                                "study.name='_a': use letters, digits, '_' and '-' (it names a "
                                "file and a Hydra config)"),
    "storage blank": (StudyConfig, {"storage": "  "},
                      "study.storage is empty: give a database URL or null for the default"),
    "n_trials": (StudyConfig, {"n_trials": 0}, "study.n_trials=0: must be >= 1"),
    "workers": (StudyConfig, {"workers": 0}, "study.workers=0: must be >= 1 or null"),
    "metric": (StudyConfig, {"metric": "test/acc"},
               "study.metric='test/acc': expected one of ['val/loss', 'val/acc']"),
    "direction": (StudyConfig, {"direction": "up"},
                  "study.direction='up': expected minimize, maximize or null"),
    "direction against the loss": (StudyConfig, {"direction": "maximize"},
                                   "study.direction=maximize: val/loss improves by minimizing"),
    "direction against the accuracy": (StudyConfig, {"metric": "val/acc",
                                                     "direction": "minimize"},
                                       "study.direction=minimize: val/acc improves by "
                                       "maximizing"),
    "heartbeat_interval": (StudyConfig, {"heartbeat_interval": 0},
                           "study.heartbeat_interval=0: must be >= 1 (seconds)"),
    "grace_period": (StudyConfig, {"heartbeat_interval": 10, "grace_period": 10},
                     "study.grace_period=10: must exceed study.heartbeat_interval=10"),
    "enqueue not searched": (StudyConfig, {"enqueue": [PointConfig(lr=1e-3),
                                                       PointConfig(eps=1e-8)]},
                             "study.enqueue[1].eps=1e-08: eps is not searched "
                             "(study.space.eps is null)"),
    "enqueue below": (StudyConfig, {"enqueue": [PointConfig(beta1=0.05)]},
                      "study.enqueue[0].beta1=0.05: outside study.space.beta1=[0.1, 0.999]"),
    "enqueue above": (StudyConfig, {"enqueue": [PointConfig(lr=0.2)]},
                      "study.enqueue[0].lr=0.2: outside study.space.lr=[1e-05, 0.1]"),
    "enqueue nan": (StudyConfig, {"enqueue": [PointConfig(beta2=math.nan)]},
                    "study.enqueue[0].beta2=nan: outside study.space.beta2=[0.1, 0.9999]"),
    "grid not searched": (StudyConfig, {"sampler": SamplerConfig(
        grid=SamplerGridConfig(eps=[1e-8]))},
        f"study.sampler.grid.eps: not a searched parameter {SPACE_DEFAULT}"),
    "grid empty": (StudyConfig, {"sampler": SamplerConfig(grid=SamplerGridConfig(lr=[]))},
                   "study.sampler.grid.lr is empty"),
    "grid outside": (StudyConfig, {"sampler": SamplerConfig(
        grid=SamplerGridConfig(lr=[1e-3, 1.0]))},
        "study.sampler.grid.lr=[0.001, 1.0]: outside study.space.lr=[1e-05, 0.1]"),
    "grid too small": (StudyConfig, {"n_trials": 9, "sampler": SamplerConfig(
        name="grid", grid_points=2)}, "study.n_trials=9: the grid has only 8 points"),
    "seed": (StudyRunConfig, {"seed": -1}, "seed=-1: a seed must be an integer in [0, 2**32)"),
    "confirm.seeds hold the seed": (
        StudyRunConfig, {"seed": 2, "study": StudyConfig(confirm=ConfirmConfig(seeds=[1, 2]))},
        "study.confirm.seeds=[1, 2]: holds the search's seed=2; confirmation needs seeds the "
        "search never trained with"),
    "confirm.n_seeds after the seed": (
        StudyRunConfig, {"seed": 0, "study": StudyConfig(confirm=ConfirmConfig(seeds=[0, 3]))},
        "study.confirm.seeds=[0, 3]: holds the search's seed=0; confirmation needs seeds the "
        "search never trained with"),
    "hyperband": (StudyRunConfig, {"trainer": TrainerConfig(max_epochs=2), "study": StudyConfig(
        pruner=PrunerConfig(name="hyperband", min_resource=2))},
        "study.pruner.min_resource=2: must be below trainer.max_epochs=2 for hyperband to prune"),
    "baseline": (StudyRunConfig, {"study": StudyConfig(confirm=ConfirmConfig(
        baseline=BaselineConfig(beta1=1.5)))},
        "study.confirm.baseline: compare arm 'default': optimizer.betas[0]=1.5: beta1 must be "
        "in [0, 1)"),
    "baseline not searched": (StudyRunConfig, {"study": StudyConfig(confirm=ConfirmConfig(
        baseline=BaselineConfig(eps=1e-8)))},
        "study.confirm.baseline.eps=1e-08: eps is not searched (study.space.eps is null); "
        "set it to null"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_every_rule_refuses_with_its_whole_message(case: str) -> None:
    section, arguments, message = REFUSED[case]
    with pytest.raises(ConfigError) as refused:
        section(**arguments)
    assert str(refused.value) == message


def test_cmaes_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cmaes" else find_spec(name, *a))
    with pytest.raises(ConfigError) as refused:
        SamplerConfig(name="cmaes")
    assert str(refused.value) == ("study.sampler.name=cmaes needs the `cmaes` package: "
                                  "pip install cmaes")
    assert SamplerConfig(name="tpe").name == "tpe"


@pytest.mark.parametrize(("section", "arguments"), [
    (SearchSpaceConfig, {"lr": [1e-9, 10.0], "beta1": [0.0, 0.5], "beta2": None,
                         "eps": [1e-10, 1e-4]}),
    (SearchSpaceConfig, {"lr": [1, 2], "beta1": None, "beta2": [0.0, 0.9999999]}),
    (SamplerConfig, {"n_startup_trials": 0, "grid_points": 1, "name": "random"}),
    (PrunerConfig, {"name": "none", "n_startup_trials": 0, "n_warmup_steps": 0,
                    "min_resource": 1, "reduction_factor": 2}),
    (ConfirmConfig, {"top_k": 1, "n_seeds": 2, "seeds": [1, 2**32 - 1], "alpha": 0.5,
                     "baseline": BaselineConfig(lr=None, beta1=None, beta2=None, eps=None)}),
    (ConfirmConfig, {"alpha": 1e-9, "baseline": BaselineConfig(lr=1, eps=0.0)}),
    (StudyConfig, {"name": "A", "storage": "sqlite:///x.db", "n_trials": 1, "workers": 1,
                   "metric": "val/acc", "direction": "maximize", "heartbeat_interval": 1,
                   "grace_period": 2}),
    (StudyConfig, {"name": "a_b-1", "direction": "minimize",
                   "enqueue": [PointConfig(lr=1e-5, beta1=0.999, beta2=0.1), PointConfig()]}),
    (StudyConfig, {"n_trials": 8, "sampler": SamplerConfig(name="grid", grid_points=2)}),
    (StudyConfig, {"sampler": SamplerConfig(grid=SamplerGridConfig(lr=[1e-5, 0.1],
                                                                   beta2=[0.1, 0.9999]))}),
    (StudyConfig, {"sampler": SamplerConfig(grid=SamplerGridConfig(beta1=[0.5]))}),
    (StudyRunConfig, {"seed": 2**32 - 1, "study": StudyConfig(
        confirm=ConfirmConfig(seeds=[0, 1]))}),
    (StudyRunConfig, {"seed": 3, "study": StudyConfig(confirm=ConfirmConfig(
        enabled=False, seeds=[3, 4], baseline=BaselineConfig(beta1=1.5)))}),
    (StudyRunConfig, {"trainer": TrainerConfig(max_epochs=3), "study": StudyConfig(
        pruner=PrunerConfig(name="hyperband", min_resource=2))}),
], ids=lambda value: value.__name__ if isinstance(value, type) else None)
def test_the_boundaries_of_every_rule_are_accepted(section: type,
                                                   arguments: dict[str, Any]) -> None:
    made = section(**arguments)
    assert all(getattr(made, key) == value for key, value in arguments.items())


def test_the_space_names_its_searched_parameters_and_their_sampled_bounds() -> None:
    space = SearchSpaceConfig(lr=[1e-4, 1e-2], beta1=[0.5, 0.99], beta2=None, eps=[1e-9, 1e-6])
    assert space.searched() == ["lr", "beta1", "eps"]
    assert SearchSpaceConfig().searched() == ["lr", "beta1", "beta2"]
    assert space.range("beta1") == (0.5, 0.99) and type(space.range("lr")[0]) is float
    assert space.bounds("lr") == (1e-4, 1e-2) and space.bounds("eps") == (1e-9, 1e-6)
    assert space.bounds("beta1") == pytest.approx((0.01, 0.5))  # 1 - β, low and high swapped


def test_the_defaults_are_the_documented_ones() -> None:
    study, confirm = StudyConfig(), ConfirmConfig()
    assert (study.heartbeat_interval, study.grace_period, study.workers, study.direction,
            study.export_dir, study.enqueue) == (10, 30, None, None, None, [])
    assert (confirm.enabled, confirm.top_k, confirm.n_seeds, confirm.seeds,
            confirm.alpha) == (True, 3, 5, None, 0.01)
    assert (confirm.baseline.lr, confirm.baseline.beta1, confirm.baseline.beta2,
            confirm.baseline.eps) == (1e-3, 0.9, 0.999, None)
    sampler, pruner = SamplerConfig(), PrunerConfig()
    assert (sampler.n_startup_trials, sampler.grid_points, sampler.grid.given()) == (10, 3, {})
    assert (pruner.n_startup_trials, pruner.n_warmup_steps, pruner.min_resource,
            pruner.reduction_factor) == (5, 1, 1, 3)
    assert SearchSpaceConfig().beta1 == [0.1, 0.999] and SearchSpaceConfig().beta2 == [0.1, 0.9999]
    assert StudyConfig(metric="val/acc").resolved_direction == "maximize"
    assert StudyConfig(direction="minimize").resolved_direction == "minimize"


def test_confirmation_seeds_follow_the_search_seed_unless_given() -> None:
    assert ConfirmConfig(n_seeds=3).resolved_seeds(4) == [5, 6, 7]
    assert ConfirmConfig(seeds=[9, 8]).resolved_seeds(4) == [9, 8]
    assert ConfirmConfig().resolved_seeds(0) == [1, 2, 3, 4, 5]


def test_the_baseline_takes_the_optimizer_sections_values_where_null() -> None:
    config = StudyRunConfig(optimizer=OptimizerConfig(lr=0.01, betas=[0.8, 0.99], eps=1e-6),
                            study=StudyConfig(
                                space=SearchSpaceConfig(eps=[1e-9, 1e-5]),
                                confirm=ConfirmConfig(baseline=BaselineConfig(lr=None,
                                                                              beta2=0.9))))
    assert baseline_point(config) == {"lr": 0.01, "beta1": 0.9, "beta2": 0.9, "eps": 1e-6}
    arm = baseline_arm(config)
    assert (arm.name, arm.optimizer) == ("default", {"lr": 0.01, "eps": 1e-6,
                                                     "betas": [0.9, 0.9]})
    from_section = replace(config, study=replace(config.study, confirm=ConfirmConfig(
        baseline=BaselineConfig(lr=None, beta1=None, beta2=None))))
    assert baseline_point(from_section) == {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}
    unsearched = StudyRunConfig(study=StudyConfig(
        space=SearchSpaceConfig(beta2=None),
        confirm=ConfirmConfig(baseline=BaselineConfig(beta2=None))))
    assert baseline_point(unsearched) == {"lr": 1e-3, "beta1": 0.9}


def test_a_point_overrides_only_what_it_sets() -> None:
    optimizer = OptimizerConfig(betas=[0.8, 0.99])
    assert point_overrides({}, optimizer) == {}
    assert point_overrides({"lr": 0.1, "eps": 1e-9}, optimizer) == {"lr": 0.1, "eps": 1e-9}
    assert point_overrides({"beta1": 0.5}, optimizer) == {"betas": [0.5, 0.99]}
    assert point_overrides({"beta2": 0.5}, optimizer) == {"betas": [0.8, 0.5]}


def test_a_run_config_is_the_training_config_without_the_study() -> None:
    config = StudyRunConfig(seed=7, trainer=TrainerConfig(max_epochs=2))
    run = config.run_config()
    assert type(run) is Config
    assert run == Config(seed=7, trainer=TrainerConfig(max_epochs=2))
    with pytest.raises(ConfigError) as refused:
        to_study_config(OmegaConf.structured(Config()))
    assert str(refused.value) == ("the composed config is a Config, not a StudyRunConfig: "
                                  "compose conf/study_config.yaml")


def test_trial_settings_hold_what_makes_trials_comparable() -> None:
    config = StudyRunConfig(seed=3, optimizer=OptimizerConfig(betas=[0.8, 0.99]),
                            trainer=TrainerConfig(max_epochs=2, num_threads=4),
                            study=StudyConfig(space=SearchSpaceConfig(beta2=None),
                                              confirm=ConfirmConfig(enabled=False)))
    settings = trial_settings(config)
    assert list(settings) == ["metric", "direction", "space", "data", "model", "optimizer",
                              "trainer", "seed"]
    assert (settings["metric"], settings["direction"], settings["seed"]) == (
        "val/loss", "minimize", 3)
    assert settings["space"] == asdict(config.study.space)
    assert "root" not in settings["data"] and "download" not in settings["data"]
    assert settings["data"]["batch_size"] == 32 and settings["model"] == asdict(config.model)
    assert settings["trainer"] == {"max_epochs": 2, "deterministic": True}
    optimizer = settings["optimizer"]
    assert "lr" not in optimizer and optimizer["eps"] == 1e-7  # eps is not searched here
    assert optimizer["betas"] == [None, 0.99]  # β1 searched, β2 a setting
    full = trial_settings(StudyRunConfig(study=StudyConfig(
        space=SearchSpaceConfig(eps=[1e-9, 1e-6]))))["optimizer"]
    assert not {"lr", "eps", "betas"} & set(full) and full["name"] == "adam"
    only_beta2 = trial_settings(StudyRunConfig(study=StudyConfig(
        space=SearchSpaceConfig(beta1=None), confirm=ConfirmConfig(enabled=False))))["optimizer"]
    assert only_beta2["betas"] == [0.9, None]


def test_first_difference_names_the_first_differing_key() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}
    assert first_difference(old, old) is None
    assert first_difference(old, {**old, "b": {"c": 2, "d": 5}, "e": 0}) == "b.d"
    assert first_difference(old, {**old, "f": 1}) == "f"
    assert first_difference({"a": {"x": 1}}, {"a": 2}) == "a"
    assert first_difference(1, 2) == ""
    assert first_difference({"aX": {"bX": 1}}, {"aX": {"bX": 2}}) == "aX.bX"  # only "." stripped


def test_optuna_parameters_are_one_minus_beta_and_map_back_exactly() -> None:
    natural = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.1, "eps": 1e-8}
    params = to_optuna_params(natural)
    assert params == {"lr": 1e-3, "1-beta1": pytest.approx(0.1), "1-beta2": 0.9, "eps": 1e-8}
    assert from_optuna_params(params) == natural  # 1 - (1 - 0.1) reads 0.1, as written
    assert from_optuna_params({"1-beta1": 0.001, "other": 5.0}) == {"beta1": 0.999}


def test_the_samplers_and_pruners_get_the_configured_settings() -> None:
    study = StudyConfig(sampler=SamplerConfig(n_startup_trials=4),
                        pruner=PrunerConfig(n_startup_trials=2, n_warmup_steps=3))
    tpe = make_sampler(study, seed=5)
    assert (tpe._n_startup_trials, tpe._constant_liar) == (4, True)
    median = make_pruner(study, max_epochs=9)
    assert (median._n_startup_trials, median._n_warmup_steps) == (2, 3)
    hyperband = make_pruner(replace(study, pruner=PrunerConfig(
        name="hyperband", min_resource=2, reduction_factor=4)), max_epochs=9)
    assert (hyperband._min_resource, hyperband._max_resource,
            hyperband._reduction_factor) == (2, 9, 4)
    cmaes = make_sampler(replace(study, sampler=SamplerConfig(name="cmaes",
                                                              n_startup_trials=6)), seed=5)
    assert cmaes._n_startup_trials == 6 and cmaes._warn_independent_sampling is False
    grid = make_sampler(replace(study, n_trials=2, sampler=SamplerConfig(
        name="grid", grid_points=1, grid=SamplerGridConfig(lr=[1e-3, 1e-2]))), seed=5)
    # One point per range: its low end in the sampled coordinate, 1 - β's.
    assert grid._search_space == {"1-beta1": [pytest.approx(1e-3)],
                                  "1-beta2": [pytest.approx(1e-4)], "lr": [1e-3, 1e-2]}


def test_the_study_schema_is_registered_as_study_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.core.config_store import ConfigStore

    from pipelines.study.config import register

    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", {})  # what register() itself stores, nothing earlier
    register()
    assert list(store.repo) == ["study_schema.yaml"]
    assert OmegaConf.get_type(store.load("study_schema.yaml").node) is StudyRunConfig


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "grid"])
def test_a_samplers_seed_makes_its_proposals_reproducible(name: str) -> None:
    study = StudyConfig(n_trials=10, sampler=SamplerConfig(name=name, n_startup_trials=2))

    def proposals(seed: int) -> list[dict[str, float]]:
        optuna_study = optuna.create_study(sampler=make_sampler(study, seed=seed))
        points = []
        for _ in range(4):
            trial = optuna_study.ask()
            points.append(suggest(trial, study.space))
            optuna_study.tell(trial, sum(points[-1].values()))
        return points

    assert proposals(5) == proposals(5)
    assert proposals(5) != proposals(6)  # the seed is the one given (Optuna's grid takes None as 0)
