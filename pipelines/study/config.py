"""What an Optuna study is told to do: the typed `study:` section, and its Optuna objects.

`conf/study_config.yaml` composes the run's own groups (data, model, optimizer, trainer,
tracking) with a `study` group onto `StudyRunConfig`, registered as `study_schema`; `src/`
never sees it. As in `src.config`, a typo fails while composing and a bad value raises
`ConfigError` (one line naming the key) when `to_study_config` builds the objects — before
any storage or MLflow run is touched.

The search space is sampled where Adam is sensitive: α log-uniform, and β1, β2 through
log(1 − β), so that 0.99 → 0.999 gets as much of the search as 0.5 → 0.9. The Optuna
parameters are therefore named `lr`, `1-beta1`, `1-beta2` (and `eps`); plots, the dashboard
and importances show those coordinates, while trials also carry β1, β2 as user attributes.

One file for both halves on purpose: the sections' rules need the coordinates (a grid's size
is checked against `grid_values` at start-up), and the builders read nothing but the sections.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import optuna
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from src.config import (
    ArmConfig,
    Config,
    ConfigError,
    OptimizerConfig,
    arm_optimizer,
    finite,
    require,
    require_seeds,
    to_config,
)

SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("none", "median", "hyperband")
# The validation metrics a trial reports each epoch, and the direction that improves them.
METRICS = {"val/loss": "minimize", "val/acc": "maximize"}
# Optuna parameter names: β is searched as 1 − β on a log scale (see the module docstring).
PARAM_NAMES = {"lr": "lr", "beta1": "1-beta1", "beta2": "1-beta2", "eps": "eps"}
# The arm name of the confirmation's baseline (see ConfirmConfig).
BASELINE_ARM = "default"
# A study name becomes a file name (mlruns/conf/experiment/best_<name>.yaml) and a config name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _check_range(key: str, r: list[float] | None, inside: str) -> None:
    """A range is [low, high]; `inside` is "(0, inf)" (α, ε) or "[0, 1)" (β)."""
    require(r is not None and len(r) == 2, f"{key}={r}: expected [low, high]")
    assert r is not None
    low, high = r
    require(finite(low) and finite(high), f"{key}=[{low}, {high}]: expected numbers")
    require(low < high, f"{key}=[{low}, {high}]: empty or inverted range (need low < high)")
    ok = low > 0.0 if inside == "(0, inf)" else low >= 0.0 and high < 1.0
    require(ok, f"{key}=[{low}, {high}]: must lie in {inside}")


@dataclass
class SearchSpaceConfig:
    """Ranges [low, high] in natural units; α and ε log-uniform, β through log(1 − β).

    (Lists rather than {low, high} nodes: OmegaConf cannot override a null node with a
    mapping, and `study.space.eps=[1e-10,1e-4]` must work on the command line.)
    """

    lr: list[float] = field(default_factory=lambda: [1e-5, 1e-1])
    # None (β, ε): not searched, the optimizer section's value is used; an optimizer without
    # β (optimizer.name=sgd, ...) needs study.space.beta1=null study.space.beta2=null.
    beta1: list[float] | None = field(default_factory=lambda: [0.1, 0.999])
    beta2: list[float] | None = field(default_factory=lambda: [0.1, 0.9999])
    eps: list[float] | None = None

    def __post_init__(self) -> None:
        _check_range("study.space.lr", self.lr, "(0, inf)")
        for name in ("beta1", "beta2"):
            if getattr(self, name) is not None:  # log(1 - β) needs β < 1
                _check_range(f"study.space.{name}", getattr(self, name), "[0, 1)")
        if self.eps is not None:
            _check_range("study.space.eps", self.eps, "(0, inf)")

    def searched(self) -> list[str]:
        return ["lr"] + [name for name in ("beta1", "beta2", "eps")
                         if getattr(self, name) is not None]

    def range(self, name: str) -> tuple[float, float]:
        low, high = getattr(self, name)
        return float(low), float(high)

    def bounds(self, name: str) -> tuple[float, float]:
        """(low, high) of the Optuna parameter for `name`, in its sampled coordinate."""
        low, high = self.range(name)
        return (1.0 - high, 1.0 - low) if name.startswith("beta") else (low, high)


@dataclass
class SamplerGridConfig:
    """`study.sampler.grid`: the grid sampler's points per parameter, in natural units (null:
    `grid_points` log-spaced points). Not `src.config.GridConfig`, the β grid of a grid run."""

    lr: list[float] | None = None
    beta1: list[float] | None = None
    beta2: list[float] | None = None
    eps: list[float] | None = None

    def given(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items() if v is not None}


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe | random | cmaes | grid
    seed: int = 0
    n_startup_trials: int = 10  # tpe, cmaes: random trials before the model takes over
    grid_points: int = 3  # grid: log-spaced points per parameter over its range ...
    grid: SamplerGridConfig = field(default_factory=SamplerGridConfig)  # ... unless listed here

    def __post_init__(self) -> None:
        require(self.name in SAMPLERS,
                 f"study.sampler.name={self.name!r}: expected one of {list(SAMPLERS)}")
        require(self.n_startup_trials >= 0,
                 f"study.sampler.n_startup_trials={self.n_startup_trials}: must be >= 0")
        require(self.grid_points >= 1,
                 f"study.sampler.grid_points={self.grid_points}: must be >= 1")
        if self.name == "cmaes":
            require(importlib.util.find_spec("cmaes") is not None,
                     "study.sampler.name=cmaes needs the `cmaes` package: pip install cmaes")


@dataclass
class PrunerConfig:
    """Steps are epochs counted from 1, as in MLflow: step k is reported after epoch k."""

    name: str = "median"  # none | median | hyperband
    n_startup_trials: int = 5  # median: finished trials before any pruning
    n_warmup_steps: int = 1  # median: the first epoch after which a trial may be pruned
    min_resource: int = 1  # hyperband: epochs every trial gets; max is trainer.max_epochs
    reduction_factor: int = 3  # hyperband

    def __post_init__(self) -> None:
        require(self.name in PRUNERS,
                 f"study.pruner.name={self.name!r}: expected one of {list(PRUNERS)}")
        require(self.n_startup_trials >= 0,
                 f"study.pruner.n_startup_trials={self.n_startup_trials}: must be >= 0")
        require(self.n_warmup_steps >= 0,
                 f"study.pruner.n_warmup_steps={self.n_warmup_steps}: must be >= 0")
        require(self.min_resource >= 1,
                 f"study.pruner.min_resource={self.min_resource}: must be >= 1")
        require(self.reduction_factor >= 2,
                 f"study.pruner.reduction_factor={self.reduction_factor}: must be >= 2")


@dataclass
class PointConfig:
    """A trial to run before the sampler proposes any (null: sampled as usual)."""

    lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None


@dataclass
class BaselineConfig(PointConfig):
    """`study.confirm.baseline`: the blog's default, what every candidate is tested against;
    a null field takes the optimizer section's value."""

    lr: float | None = 1e-3
    beta1: float | None = 0.9
    beta2: float | None = 0.999


@dataclass
class ConfirmConfig:
    """`study.confirm`: the search's `top_k` best distinct complete trials and the `baseline`
    retrained with fresh seeds once the study is full (pipelines.study.confirm).

    The search picks the best of many noisy one-seed measurements, so its best value is biased
    upward (the winner's curse); retraining on seeds the search never saw measures it again.
    """

    enabled: bool = True
    top_k: int = 3
    n_seeds: int = 5
    seeds: list[int] | None = None  # None: the n_seeds integers after the search's `seed`
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    alpha: float = 0.01  # the level of the Holm-corrected Welch tests on test/acc

    def __post_init__(self) -> None:
        require(self.top_k >= 1, f"study.confirm.top_k={self.top_k}: must be >= 1")
        require(self.n_seeds >= 2, f"study.confirm.n_seeds={self.n_seeds}: must be >= 2 "
                 "(a Welch test needs two seeds per side)")
        if self.seeds is not None:
            require(len(self.seeds) >= 2, f"study.confirm.seeds={list(self.seeds)}: give at "
                     "least two seeds (a Welch test needs two per side)")
            require(len(set(self.seeds)) == len(self.seeds),
                     f"study.confirm.seeds={list(self.seeds)}: seeds repeat")
            require_seeds("study.confirm.seeds", self.seeds)  # they train, as `seed` does
        for name in ("lr", "beta1", "beta2", "eps"):
            value = getattr(self.baseline, name)
            require(value is None or finite(value),
                     f"study.confirm.baseline.{name}={value}: expected a number or null")
        require(finite(self.alpha) and 0.0 < self.alpha < 1.0,
                 f"study.confirm.alpha={self.alpha}: must be in (0, 1)")

    def resolved_seeds(self, search_seed: int) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return list(range(search_seed + 1, search_seed + 1 + self.n_seeds))


@dataclass
class StudyConfig:
    name: str = "adam-mnist"
    storage: str | None = None  # None: sqlite:///<project>/mlruns/optuna.db
    n_trials: int = 40  # the total of finished (complete + pruned) trials the study reaches
    workers: int | None = None  # None: one process per CPU core
    metric: str = "val/loss"  # at the last epoch; also what the pruner watches each epoch
    direction: str | None = None  # None: the metric's own (minimize loss, maximize acc)
    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    enqueue: list[PointConfig] = field(default_factory=list)  # only when the study is created
    # A worker that stops beating for grace_period seconds has its trial marked FAIL.
    heartbeat_interval: int = 10
    grace_period: int = 30
    # None: <project>/mlruns/conf/experiment (git-ignored; Hydra searches it for src.train).
    export_dir: str | None = None
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)

    def __post_init__(self) -> None:
        require(_NAME.fullmatch(self.name) is not None,
                 f"study.name={self.name!r}: use letters, digits, '_' and '-' "
                 "(it names a file and a Hydra config)")
        require(self.storage is None or self.storage.strip() != "",
                 "study.storage is empty: give a database URL or null for the default")
        require(self.n_trials >= 1, f"study.n_trials={self.n_trials}: must be >= 1")
        require(self.workers is None or self.workers >= 1,
                 f"study.workers={self.workers}: must be >= 1 or null")
        require(self.metric in METRICS,
                 f"study.metric={self.metric!r}: expected one of {list(METRICS)}")
        require(self.direction in (None, "minimize", "maximize"),
                 f"study.direction={self.direction!r}: expected minimize, maximize or null")
        require(self.direction in (None, METRICS[self.metric]),
                 f"study.direction={self.direction}: {self.metric} improves by "
                 f"{METRICS[self.metric].removesuffix('e')}ing")
        require(self.heartbeat_interval >= 1,
                 f"study.heartbeat_interval={self.heartbeat_interval}: must be >= 1 (seconds)")
        require(self.grace_period > self.heartbeat_interval,
                 f"study.grace_period={self.grace_period}: must exceed "
                 f"study.heartbeat_interval={self.heartbeat_interval}")
        for i, point in enumerate(self.enqueue):
            for name in ("lr", "beta1", "beta2", "eps"):
                value = getattr(point, name)
                if value is None:
                    continue
                key = f"study.enqueue[{i}].{name}"
                require(name in self.space.searched(),
                         f"{key}={value}: {name} is not searched (study.space.{name} is null)")
                low, high = self.space.range(name)
                require(finite(value) and low <= value <= high,
                         f"{key}={value}: outside study.space.{name}=[{low:g}, {high:g}]")
        for name, values in self.sampler.grid.given().items():
            require(name in self.space.searched(),
                     f"study.sampler.grid.{name}: not a searched parameter "
                     f"({self.space.searched()})")
            low, high = self.space.range(name)
            require(len(values) > 0, f"study.sampler.grid.{name} is empty")
            require(all(finite(v) and low <= v <= high for v in values),
                     f"study.sampler.grid.{name}={list(values)}: outside "
                     f"study.space.{name}=[{low:g}, {high:g}]")
        if self.sampler.name == "grid":
            size = math.prod(len(v) for v in grid_values(self).values())
            require(self.n_trials <= size,
                     f"study.n_trials={self.n_trials}: the grid has only {size} points")

    @property
    def resolved_direction(self) -> str:
        return self.direction or METRICS[self.metric]


@dataclass
class StudyRunConfig(Config):
    """A training run's config (what every trial starts from) plus the study around it."""

    study: StudyConfig = field(default_factory=StudyConfig)

    def __post_init__(self) -> None:
        super().__post_init__()  # the training config's own rules (its seed's range)
        c = self.study.confirm
        if c.enabled:
            seeds = c.resolved_seeds(self.seed)
            require(self.seed not in seeds,
                     f"study.confirm.seeds={seeds}: holds the search's seed={self.seed}; "
                     "confirmation needs seeds the search never trained with")
            baseline_arm(self)  # an optimizer setting that cannot train fails now
        p = self.study.pruner
        if p.name == "hyperband":
            require(p.min_resource < self.trainer.max_epochs,
                     f"study.pruner.min_resource={p.min_resource}: must be below "
                     f"trainer.max_epochs={self.trainer.max_epochs} for hyperband to prune")

    def run_config(self) -> Config:
        """The plain training config (no study section), as a trial's MLflow child logs it."""
        return Config(**{f.name: getattr(self, f.name) for f in fields(Config)})


def point_overrides(point: dict[str, float], optimizer: OptimizerConfig) -> dict[str, Any]:
    """The `optimizer` section's fields a point of the space sets (natural units: lr, beta1,
    beta2, eps; any subset): a β the point lacks keeps the section's value."""
    overrides: dict[str, Any] = {k: point[k] for k in ("lr", "eps") if k in point}
    if "beta1" in point or "beta2" in point:
        overrides["betas"] = [point.get("beta1", optimizer.betas[0]),
                              point.get("beta2", optimizer.betas[1])]
    return overrides


def baseline_point(config: StudyRunConfig) -> dict[str, float]:
    """`study.confirm.baseline` over the searched parameters, in natural units: a null field
    takes the optimizer section's value, as every trial does for what is not searched."""
    b, o = config.study.confirm.baseline, config.optimizer
    section = {"lr": o.lr, "beta1": o.betas[0], "beta2": o.betas[1], "eps": o.eps}
    searched = config.study.space.searched()
    for name in ("lr", "beta1", "beta2", "eps"):
        value = getattr(b, name)
        require(value is None or name in searched,
                 f"study.confirm.baseline.{name}={value}: {name} is not searched "
                 f"(study.space.{name} is null); set it to null")
    return {name: getattr(b, name) if getattr(b, name) is not None else section[name]
            for name in searched}


def baseline_arm(config: StudyRunConfig) -> ArmConfig:
    """The confirmation's baseline as a comparison arm, checked as compare checks its arms."""
    arm = ArmConfig(name=BASELINE_ARM,
                    optimizer=point_overrides(baseline_point(config), config.optimizer))
    try:
        arm_optimizer(config.optimizer, arm)
    except ConfigError as err:
        raise ConfigError(f"study.confirm.baseline: {err}") from err
    return arm


def register() -> None:
    ConfigStore.instance().store(name="study_schema", node=StudyRunConfig)


def to_study_config(cfg: DictConfig) -> StudyRunConfig:
    """Validate a composed study config and return it as typed objects (raises ConfigError)."""
    config = to_config(cfg)
    if not isinstance(config, StudyRunConfig):
        raise ConfigError(f"the composed config is a {type(config).__name__}, not a "
                          "StudyRunConfig: compose conf/study_config.yaml")
    return config


def trial_settings(config: StudyRunConfig) -> dict[str, Any]:
    """What makes trials comparable: a study resumed with other values would mix results.

    Left out on purpose: where things are (data.root, storage, tracking), how many and how
    fast (n_trials, workers, threads), and sampler/pruner, which may change between
    invocations (e.g. random first, TPE later) without changing what a trial measures.
    """
    s = config.study
    optimizer = asdict(config.optimizer)
    searched = s.space.searched()
    for name in ("lr", "eps"):
        if name in searched:
            optimizer.pop(name)
    if "beta1" in searched and "beta2" in searched:
        optimizer.pop("betas")
    else:  # a β that is not searched is a setting like any other
        optimizer["betas"] = [None if f"beta{i}" in searched else beta
                              for i, beta in enumerate(optimizer["betas"], start=1)]
    data = asdict(config.data)
    for where in ("root", "download"):
        data.pop(where)
    return {"metric": s.metric, "direction": s.resolved_direction, "space": asdict(s.space),
            "data": data, "model": asdict(config.model), "optimizer": optimizer,
            "trainer": {"max_epochs": config.trainer.max_epochs,
                        "deterministic": config.trainer.deterministic},
            "seed": config.seed}


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The dotted key of the first setting that differs, e.g. `trainer.max_epochs`."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if old == new else prefix.rstrip(".")


def grid_values(study: StudyConfig) -> dict[str, list[float]]:
    """Grid points per parameter, in natural units (α, β, ε)."""
    values: dict[str, list[float]] = {}
    for name in study.space.searched():
        given = study.sampler.grid.given()
        if name in given:
            values[name] = [float(v) for v in given[name]]
            continue
        low, high = study.space.bounds(name)
        points = [float(x) for x in np.geomspace(low, high, study.sampler.grid_points)]
        values[name] = sorted(1.0 - x for x in points) if name.startswith("beta") else points
    return values


def to_optuna_params(point: dict[str, float]) -> dict[str, float]:
    """Natural values (lr, beta1, ...) → Optuna parameters (lr, 1-beta1, ...)."""
    return {PARAM_NAMES[name]: (1.0 - value if name.startswith("beta") else value)
            for name, value in point.items()}


def from_optuna_params(params: dict[str, float]) -> dict[str, float]:
    """Optuna parameters (lr, 1-beta1, ...) → natural values (lr, beta1, ...)."""
    natural = {optuna_name: name for name, optuna_name in PARAM_NAMES.items()}
    return {natural[key]: (_one_minus(value) if key.startswith("1-") else value)
            for key, value in params.items() if key in natural}


def _one_minus(x: float) -> float:
    # 1 - (1 - 0.1) is 0.09999999999999998 in floating point: round the last bits away so
    # that β reads (and is trained, logged and exported) as written.
    return float(f"{1.0 - x:.15g}")


def suggest(trial: optuna.Trial, space: SearchSpaceConfig) -> dict[str, float]:
    """Sample one point of the space; returns natural values (lr, beta1, beta2[, eps])."""
    params = {PARAM_NAMES[name]: trial.suggest_float(PARAM_NAMES[name], *space.bounds(name),
                                                     log=True)
              for name in space.searched()}
    return from_optuna_params(params)


def make_sampler(study: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    s = study.sampler
    if s.name == "tpe":
        # Optuna 5's TPE is multivariate (β1 and β2 interact) and, with constant_liar,
        # avoids proposing what parallel workers are already running.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                          constant_liar=True)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                            warn_independent_sampling=False)
    assert s.name == "grid"
    grid = {PARAM_NAMES[name]: [to_optuna_params({name: v})[PARAM_NAMES[name]] for v in values]
            for name, values in grid_values(study).items()}
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(study: StudyConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    p = study.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              max_resource=max_epochs,
                                              reduction_factor=p.reduction_factor)
    assert p.name == "none"
    return optuna.pruners.NopPruner()

__all__ = ["BASELINE_ARM", "METRICS", "PARAM_NAMES", "BaselineConfig", "ConfirmConfig",
           "PointConfig", "PrunerConfig", "SamplerConfig", "SamplerGridConfig", "SearchSpaceConfig",
           "StudyConfig", "StudyRunConfig", "baseline_arm", "baseline_point",
           "first_difference", "from_optuna_params", "grid_values", "make_pruner",
           "make_sampler", "point_overrides", "register", "suggest", "to_optuna_params",
           "to_study_config", "trial_settings"]
