"""The typed configuration schema: what a run (or a pipeline of runs) is told to do.

Hydra composes `conf/` onto these dataclasses (registered below as `config_schema`), so an
unknown key or a wrong type fails while composing, before anything is trained. Range checks
live in `__post_init__`, which runs when `to_config` turns the composed DictConfig into
objects — still at start-up.

This module is read by every entry point before anything heavy is imported (a refusal must
answer at once), so it imports Hydra, OmegaConf and the dataset registry, and no more.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.data.sources import DATASETS, default_root


class ConfigError(ValueError):
    """A configuration value that cannot be trained with; the message is one line for the user."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok: the one validation helper of every config section."""
    if not ok:
        raise ConfigError(message)


def finite(x: object) -> bool:
    """A real, finite number (bool excluded: YAML's `true` is not a learning rate)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# Seeds go to numpy (SeedSequence, Generator) and to Lightning's seed_everything, which both
# take 32-bit unsigned seeds; outside that range they fail or are replaced mid-run.
SEED_LIMIT = 2**32


def require_seeds(key: str, seeds: int | list[int]) -> None:
    """Refuse seeds outside [0, 2**32); `key` names the setting (`seed`, `compare.seeds`...)."""
    for i, seed in enumerate(seeds if isinstance(seeds, list) else [seeds]):
        name = key if isinstance(seeds, int) else f"{key}[{i}]"
        require(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT,
                f"{name}={seed}: a seed must be an integer in [0, 2**32)")


@dataclass
class DataConfig:
    name: str = "mnist"  # a key of src.data.DATASETS
    # Relative paths are taken from the working directory; null: the dataset's default
    # location (src.data.default_root: a system copy such as Debian's, a copy beside the
    # checkout such as ../shared/data/mnist, else data/<name>, downloaded there).
    root: str | None = None
    download: bool = True
    # Carved from the training images with a seeded permutation; that it leaves some training
    # images is checked against the file (MNISTDataModule.setup), which the config cannot see.
    val_size: int = 5000
    batch_size: int = 32
    eval_batch_size: int = 1000
    limit_train: int | None = None  # keep only this many training images (tests, smoke runs)

    def __post_init__(self) -> None:
        require(self.name in DATASETS, f"data.name={self.name!r}: expected one of "
                 f"{sorted(DATASETS)}")
        require(self.val_size > 0, f"data.val_size={self.val_size}: must be > 0")
        require(self.batch_size > 0, f"data.batch_size={self.batch_size}: must be > 0")
        require(self.eval_batch_size > 0,
                 f"data.eval_batch_size={self.eval_batch_size}: must be > 0")
        require(self.limit_train is None or self.limit_train > 0,
                 f"data.limit_train={self.limit_train}: must be > 0 or null")

    def location(self) -> str:
        """Where the files are read from: `root`, or where null the dataset's default location.

        Resolved here, not in `__post_init__`: Hydra builds the schema's default DataConfig
        (name mnist) before a `data=` file renames the dataset, and a root filled in then would
        make `data=fashion_mnist` read MNIST's files.
        """
        return self.root if self.root is not None else default_root(self.name)


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = 0.2
    num_classes: int = 10
    init: str = "keras"  # Glorot-uniform weights, zero biases (Keras Dense); or "torch"

    def __post_init__(self) -> None:
        require(self.init in ("keras", "torch"),
                 f"model.init={self.init!r}: expected 'keras' or 'torch'")
        require(all(h > 0 for h in self.hidden), f"model.hidden={self.hidden}: sizes must be > 0")
        require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout}: must be in [0, 1)")
        # Dropout follows hidden layers only: without any it would be silently ignored.
        require(bool(self.hidden) or self.dropout == 0.0,
                 f"model.dropout={self.dropout}: model.hidden=[] (logistic regression) has no "
                 "hidden layer to drop out of; set model.dropout=0")


@dataclass
class SGDOptions:
    """`optimizer.sgd` (optimizer.name=sgd, torch.optim.SGD): torch's defaults and checks."""

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False  # Nesterov's accelerated gradient (the paper's "SGDNesterov")

    def __post_init__(self) -> None:
        require(finite(self.momentum) and self.momentum >= 0,
                 f"optimizer.sgd.momentum={self.momentum}: must be >= 0")
        require(finite(self.dampening) and self.dampening >= 0,
                 f"optimizer.sgd.dampening={self.dampening}: must be >= 0")
        require(not self.nesterov or (self.momentum > 0 and self.dampening == 0),
                 f"optimizer.sgd.nesterov=true needs optimizer.sgd.momentum > 0 and "
                 f"optimizer.sgd.dampening=0 (have {self.momentum:g} and {self.dampening:g}): "
                 "torch.optim.SGD refuses it otherwise")


@dataclass
class RMSpropOptions:
    """`optimizer.rmsprop` (torch.optim.RMSprop): torch's defaults; its ε is torch's too."""

    alpha: float = 0.99  # the decay of the running mean of squared gradients
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        require(finite(self.alpha) and 0.0 <= self.alpha < 1.0,
                 f"optimizer.rmsprop.alpha={self.alpha}: must be in [0, 1)")
        require(finite(self.eps) and self.eps >= 0,
                 f"optimizer.rmsprop.eps={self.eps}: must be >= 0")
        require(finite(self.momentum) and self.momentum >= 0,
                 f"optimizer.rmsprop.momentum={self.momentum}: must be >= 0")


@dataclass
class AdagradOptions:
    """`optimizer.adagrad` (torch.optim.Adagrad): torch's defaults and checks."""

    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def __post_init__(self) -> None:
        for key in ("lr_decay", "initial_accumulator_value", "eps"):
            value = getattr(self, key)
            require(finite(value) and value >= 0, f"optimizer.adagrad.{key}={value}: must be >= 0")


@dataclass
class AdadeltaOptions:
    """`optimizer.adadelta` (torch.optim.Adadelta): torch's defaults and checks."""

    rho: float = 0.9
    eps: float = 1e-6

    def __post_init__(self) -> None:
        require(finite(self.rho) and 0.0 <= self.rho <= 1.0,
                 f"optimizer.adadelta.rho={self.rho}: must be in [0, 1]")
        require(finite(self.eps) and self.eps >= 0,
                 f"optimizer.adadelta.eps={self.eps}: must be >= 0")


@dataclass
class OptimizerConfig:
    """The optimizer: `name` picks one of src.optim.OPTIMIZERS, the other fields are its keyword
    arguments (names follow torch.optim). A field the named optimizer does not read must keep
    its default here, so a setting cannot be silently ignored."""

    # adam | adamw (decoupled weight decay) | adamax (Algorithm 2): this project's code;
    # sgd | rmsprop | adagrad | adadelta: torch.optim's, options in the section of that name
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7
    weight_decay: float = 0.0
    # The blog trains with Keras, which adds ε to √v_t rather than to √v̂_t; "paper" is
    # Algorithm 1 (and torch.optim.Adam). For AdaMax: ε in the denominator (keras) or inside
    # the max (paper, torch.optim.Adamax).
    eps_mode: str = "keras"
    bias_correction: bool = True
    amsgrad: bool = False  # Adam/AdamW: the running maximum of v_t in the denominator
    sgd: SGDOptions = field(default_factory=SGDOptions)
    rmsprop: RMSpropOptions = field(default_factory=RMSpropOptions)
    adagrad: AdagradOptions = field(default_factory=AdagradOptions)
    adadelta: AdadeltaOptions = field(default_factory=AdadeltaOptions)
    # constant | inv_sqrt (α/√t at step t, src.optim.schedule): for every optimizer
    schedule: str = "constant"

    def __post_init__(self) -> None:
        from src.optim.registry import OPTIMIZERS  # lazy: the optimizers pull in torch
        from src.optim.schedule import SCHEDULE_FACTORS

        require(self.name in OPTIMIZERS, f"optimizer.name={self.name!r}: expected one of "
                 f"{', '.join(sorted(OPTIMIZERS))}")
        require(finite(self.lr) and self.lr > 0, f"optimizer.lr={self.lr}: must be a number > 0")
        require(len(self.betas) == 2,
                 f"optimizer.betas={list(self.betas)}: expected two values [beta1, beta2]")
        for i, beta in enumerate(self.betas):
            require(finite(beta) and 0.0 <= beta < 1.0,
                     f"optimizer.betas[{i}]={beta}: beta{i + 1} must be in [0, 1)")
        require(finite(self.eps) and self.eps >= 0, f"optimizer.eps={self.eps}: must be >= 0")
        require(finite(self.weight_decay) and self.weight_decay >= 0,
                 f"optimizer.weight_decay={self.weight_decay}: must be >= 0")
        require(self.eps_mode in ("paper", "keras"),
                 f"optimizer.eps_mode={self.eps_mode!r}: expected 'paper' or 'keras'")
        require(self.schedule in SCHEDULE_FACTORS, f"optimizer.schedule={self.schedule!r}: "
                 f"expected one of {', '.join(SCHEDULE_FACTORS)}")
        spec = OPTIMIZERS[self.name]
        reads = spec.fields
        for option in fields(self):
            if option.name in ("name", "schedule", spec.section) or option.name in reads:
                continue
            default = (option.default if option.default_factory is MISSING
                       else option.default_factory())
            value = getattr(self, option.name)
            key = option.name
            if is_dataclass(value):  # another optimizer's section: name the field set in it
                key, value, default = next(
                    (f"{key}.{f.name}", getattr(value, f.name), getattr(default, f.name))
                    for f in fields(value) if getattr(value, f.name) != getattr(default, f.name)
                ) if value != default else (key, value, default)
            takes = ", ".join([*reads, *([spec.section] if spec.section else [])])
            require(value == default, f"optimizer.{key}={value}: {self.name} has no option "
                     f"{key!r} (it takes {takes})")


# Lightning's accelerator names (its AcceleratorRegistry, plus "auto" and "gpu", which pick
# one); whether this machine has the one asked for is checked before a run starts
# (src.run.check_accelerator), since that needs torch.
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "tpu")


@dataclass
class TrainerConfig:
    max_epochs: int = 5
    accelerator: str = "cpu"  # one of ACCELERATORS
    # One torch thread per process: on small models the second thread costs more in
    # synchronisation than it gives, and parallelism belongs across runs (processes).
    num_threads: int = 1
    deterministic: bool = True
    progress_bar: bool = False
    # Optimizer steps per Lightning training_step call (see src.model.Classifier): amortises
    # Lightning's per-call overhead; results do not depend on it.
    steps_per_call: int = 64
    # Flush subnormal floats to zero while training, as TensorFlow's CPU kernels do. Adam's m
    # and v for weights that never get a gradient (MNIST's always-blank border pixels) decay
    # geometrically into the subnormal range, where CPU arithmetic is much slower (the
    # README's performance section has the measurement). Nothing above 1.2e-38 moves.
    flush_denormal: bool = True

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, f"trainer.max_epochs={self.max_epochs}: must be >= 1")
        require(self.accelerator in ACCELERATORS,
                f"trainer.accelerator={self.accelerator!r}: expected one of "
                f"{', '.join(ACCELERATORS)}")
        require(self.steps_per_call >= 1,
                 f"trainer.steps_per_call={self.steps_per_call}: must be >= 1")
        require(self.num_threads >= 1, f"trainer.num_threads={self.num_threads}: must be >= 1")


@dataclass
class InternalsConfig:
    """Adam's internals (src.internals.AdamInternals): per-parameter step, 1/(√v̂+ε) and
    update-to-weight ratio, logged as `internals/*` quantiles at the end of training epochs."""

    enabled: bool = False  # off: no callback is attached at all
    every_n_epochs: int = 1  # also logged after the last epoch
    # Percentiles are exact up to this many parameter elements, else over a seeded sample.
    max_elements: int = 1 << 18

    def __post_init__(self) -> None:
        require(self.every_n_epochs >= 1,
                 f"internals.every_n_epochs={self.every_n_epochs}: must be >= 1")
        require(1 <= self.max_elements <= 1 << 24,
                 f"internals.max_elements={self.max_elements}: must be in [1, 2**24]")


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns/mlflow.db
    experiment: str = "mnist-adam"
    run_name: str | None = None
    # The trained network as the run's MLflow model (runs:/<id>/model, src.logged_model). On
    # for a run of its own; the many-run experiments (compare, grids, the study's trials)
    # switch it off in their YAML, since a statistic needs their metrics, not their networks.
    log_model: bool = True


@dataclass
class ArmConfig:
    """One arm of a comparison: a name and overrides of the optimizer section."""

    name: str = "???"
    optimizer: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompareConfig:
    arms: list[ArmConfig] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    workers: int | None = None  # None: one process per CPU core
    # The pair tested against each other in the report (names of arms); empty: first two.
    contrast: list[str] = field(default_factory=list)
    metric: str = "test/acc"

    def __post_init__(self) -> None:
        require(len(self.seeds) > 0, "compare.seeds is empty: give at least one seed")
        require_seeds("compare.seeds", self.seeds)
        require(len(set(self.seeds)) == len(self.seeds),
                 f"compare.seeds={list(self.seeds)}: seeds repeat")
        require(len(self.arms) > 0, "compare.arms is empty: give at least one arm")
        names = [arm.name for arm in self.arms]
        require(len(set(names)) == len(names), f"compare.arms: arm names repeat: {names}")
        require(self.workers is None or self.workers >= 1,
                 f"compare.workers={self.workers}: must be >= 1")
        valid_contrast = len(self.contrast) == 2 and set(self.contrast) <= set(names)
        require(not self.contrast or valid_contrast,
                 f"compare.contrast={list(self.contrast)}: expected two arm names of {names}")


@dataclass
class TuneConfig:
    """A step-size grid per comparison arm (pipelines.tuned): each arm named in `lr` is first
    trained with every α of its list on `seeds`, then compared at the α with the best mean
    `metric`, a validation metric, so that the test set plays no part in choosing. The
    comparison's own seeds must differ from `seeds`: the α chosen on a seed would flatter
    the arm on that same seed."""

    lr: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "val/loss"

    def __post_init__(self) -> None:
        require(len(self.lr) > 0, "tune.lr is empty: give step sizes for at least one arm")
        for arm, values in self.lr.items():
            require(len(values) > 0, f"tune.lr.{arm} is empty: give at least one step size")
            require(len(set(values)) == len(values), f"tune.lr.{arm}={list(values)}: values repeat")
            for i, lr in enumerate(values):
                require(finite(lr) and lr > 0, f"tune.lr.{arm}[{i}]={lr}: must be a number > 0")
        require(len(self.seeds) > 0, "tune.seeds is empty: give at least one seed")
        require(len(set(self.seeds)) == len(self.seeds),
                 f"tune.seeds={list(self.seeds)}: seeds repeat")
        require(self.metric in ("val/loss", "val/acc"),
                 f"tune.metric={self.metric!r}: expected 'val/loss' or 'val/acc' (validation)")


@dataclass
class GridConfig:
    """A grid of optimizer settings (pipelines.grid): every combination of the lists is one arm,
    trained with every seed. `lr` / `bias_correction` null: the optimizer section's value."""

    beta1: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.9, 0.99])
    beta2: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    lr: list[float] | None = None
    bias_correction: list[bool] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    workers: int | None = None  # None: one process per CPU core

    def __post_init__(self) -> None:
        for key in ("beta1", "beta2", "lr", "bias_correction", "seeds"):
            values = getattr(self, key)
            if values is None:
                continue
            require(len(values) > 0, f"grid.{key} is empty: give at least one value")
            require(len(set(values)) == len(values), f"grid.{key}={list(values)}: values repeat")
        for key in ("beta1", "beta2"):
            for i, beta in enumerate(getattr(self, key)):
                require(finite(beta) and 0.0 <= beta < 1.0,
                         f"grid.{key}[{i}]={beta}: {key} must be in [0, 1)")
        for i, lr in enumerate(self.lr or []):
            require(finite(lr) and lr > 0, f"grid.lr[{i}]={lr}: must be a number > 0")
        require_seeds("grid.seeds", self.seeds)
        require(self.workers is None or self.workers >= 1,
                 f"grid.workers={self.workers}: must be >= 1")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    # Dotted path of a callable taking the composed DictConfig: set by experiments that run
    # many trainings (e.g. pipelines.compare.main), so this package never imports pipelines.
    pipeline: str | None = None
    compare: CompareConfig | None = None
    grid: GridConfig | None = None  # set by +experiment=beta_grid / bias_correction
    tune: TuneConfig | None = None  # set by +experiment=paper_logreg / paper_mlp
    internals: InternalsConfig = field(default_factory=InternalsConfig)

    def __post_init__(self) -> None:
        require_seeds("seed", self.seed)


def register() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """Validate a composed config and return it as typed objects (raises ConfigError)."""
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        # OmegaConf reports multi-line diagnostics; the first line names key and problem.
        raise ConfigError(str(err).splitlines()[0]) from err
    if not isinstance(config, Config):
        raise ConfigError(f"the composed config is a {type(config).__name__}, not a Config")
    config.data.root = config.data.location()  # logged with the run: where the files were
    if config.compare is not None:
        for arm in config.compare.arms:
            arm_optimizer(config.optimizer, arm)  # fail at start-up, not in a worker
    if config.tune is not None:
        require(config.compare is not None, "tune: needs a compare: section whose arms it tunes")
        assert config.compare is not None
        names = [arm.name for arm in config.compare.arms]
        unknown = sorted(set(config.tune.lr) - set(names))
        require(not unknown, f"tune.lr: {unknown} are not compare arms ({names})")
        shared = sorted(set(config.tune.seeds) & set(config.compare.seeds))
        require(not shared, f"tune.seeds={list(config.tune.seeds)}: {shared} also in "
                 f"compare.seeds={list(config.compare.seeds)}; choose α on other seeds")
    return config


def arm_optimizer(base: OptimizerConfig, arm: ArmConfig) -> OptimizerConfig:
    """The optimizer settings of one comparison arm: the base section with the arm's overrides."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(base), arm.optimizer)
        optimizer = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"compare arm {arm.name!r}: {str(err).splitlines()[0]}") from err
    except ConfigError as err:
        raise ConfigError(f"compare arm {arm.name!r}: {err}") from err
    assert isinstance(optimizer, OptimizerConfig)
    return optimizer
