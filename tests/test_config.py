"""The config composes, the public overrides work as written, and bad values fail at start-up."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from src import config as schema
from src.config import (
    AdadeltaOptions,
    AdagradOptions,
    ArmConfig,
    CompareConfig,
    Config,
    ConfigError,
    DataConfig,
    GridConfig,
    InternalsConfig,
    ModelConfig,
    OptimizerConfig,
    RMSpropOptions,
    SGDOptions,
    TrainerConfig,
    TuneConfig,
    arm_optimizer,
    finite,
    to_config,
)
from src.data import default_root
from src.optim.registry import OPTIMIZERS, OptimizerSpec
from src.tracking import PROJECT_ROOT

schema.register()


def composed(*overrides: str) -> schema.Config:
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        return to_config(compose("config", overrides=list(overrides)))


def test_defaults_are_the_blog_setup() -> None:
    c = composed()
    assert (c.optimizer.lr, c.optimizer.betas, c.optimizer.eps) == (1e-3, [0.9, 0.999], 1e-7)
    assert c.optimizer.eps_mode == "keras"
    assert (c.data.batch_size, c.trainer.max_epochs) == (32, 5)
    assert (c.model.hidden, c.model.dropout, c.model.init) == ([128], 0.2, "keras")
    assert c.pipeline is None and c.compare is None


def test_public_overrides_work_exactly_as_written(tmp_path) -> None:
    c = composed(f"data.root={tmp_path}", "trainer.max_epochs=3", "optimizer.lr=0.01",
                 "optimizer.betas=[0.1,0.1]", "optimizer.eps=1e-8", "seed=7")
    assert c.data.root == str(tmp_path)
    assert c.trainer.max_epochs == 3
    assert c.optimizer.lr == 0.01 and c.optimizer.betas == [0.1, 0.1]
    assert c.optimizer.eps == 1e-8 and c.seed == 7


@pytest.mark.parametrize(("override", "names"), [
    ("optimizer.betas=[1.0,0.999]", "betas[0]"),
    ("optimizer.betas=[0.9,-0.1]", "betas[1]"),
    ("optimizer.betas=[0.9]", "betas"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1e-3", "optimizer.lr"),
    ("optimizer.lr=nan", "optimizer.lr"),
    ("optimizer.eps=-1e-8", "optimizer.eps"),
    ("optimizer.eps_mode=tf", "eps_mode"),
    ("trainer.max_epochs=0", "max_epochs"),
    ("model.dropout=1.0", "dropout"),
    ("model.hidden=[]", "model.dropout=0.2: model.hidden=[] (logistic regression) has no hidden"),
    ("data.name=cifar", "data.name"),
    # The rules MNISTDataModule trusts (it only asserts them): checked here, naming the key.
    ("data.name=cifar", "data.name='cifar': expected one of ['fashion_mnist', 'mnist']"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0"),
    ("data.val_size=0", "data.val_size=0"),
    ("data.limit_train=0", "data.limit_train=0"),
    ("trainer.steps_per_call=0", "trainer.steps_per_call=0"),
    ("trainer.num_threads=0", "trainer.num_threads=0"),
    ("trainer.accelerator=gpus", "trainer.accelerator='gpus': expected one of auto, cpu"),
    # numpy and Lightning take 32-bit unsigned seeds.
    ("seed=-1", "seed=-1: a seed must be an integer in [0, 2**32)"),
    (f"seed={2**32}", f"seed={2**32}: a seed must be an integer in [0, 2**32)"),
    (f"seed={2**64}", f"seed={2**64}: a seed"),
])
def test_bad_values_name_the_key(override: str, names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        composed(override)


@pytest.mark.parametrize("override", ["optimizer.lrr=0.1", "optimizer.lr=abc", "seed=x",
                                      "trainer.max_epochs=1.5", "bogus=1"])
def test_unknown_keys_and_wrong_types_fail_while_composing(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        composed(override)


def test_seeds_at_the_ends_of_the_range_are_accepted() -> None:
    assert composed("seed=0").seed == 0
    assert composed(f"seed={2**32 - 1}").seed == 2**32 - 1
    grid = composed("+experiment=beta_grid", f"grid.seeds=[0,{2**32 - 1}]").grid
    assert grid is not None and grid.seeds == [0, 2**32 - 1]


@pytest.mark.parametrize(("seeds", "message"), [
    (-1, "study.seed=-1: a seed must be an integer in [0, 2**32)"),
    ([0, 2**32], f"grid.seeds[1]={2**32}: a seed"),
    ([True], "seeds[0]=True: a seed must be an integer"),
])
def test_require_seeds_names_the_setting_and_the_seed(seeds: int | list[int],
                                                       message: str) -> None:
    key = "study.seed" if isinstance(seeds, int) else "grid.seeds"
    with pytest.raises(ConfigError, match=re.escape(message)):
        schema.require_seeds(key, seeds)


def test_logreg_is_a_net_without_hidden_layers() -> None:
    from src.model import build_mlp

    c = composed("model=logreg")
    assert (c.model.hidden, c.model.dropout) == ([], 0.0)
    net = build_mlp(784, c.model.hidden, c.model.num_classes, c.model.dropout, c.model.init)
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert len(net) == 2 and len(linear) == 1  # Flatten, Linear: nothing else
    assert (linear[0].in_features, linear[0].out_features) == (784, 10)
    assert sum(p.numel() for p in net.parameters()) == 784 * 10 + 10


def test_compare_experiment_composes() -> None:
    c = composed("+experiment=compare")
    assert c.pipeline == "pipelines.compare.main"
    assert c.compare is not None
    assert [a.name for a in c.compare.arms] == ["beta_0.9_0.999", "beta_0.1_0.1"]
    assert c.compare.seeds == [0, 1, 2, 3, 4]
    three = composed("+experiment=compare_three", "compare.seeds=[0,1]")
    assert three.compare is not None and len(three.compare.arms) == 3


@pytest.mark.parametrize(("override", "message"), [
    ("compare.seeds=[]", "compare.seeds is empty"),
    ("compare.workers=0", "compare.workers"),
    ("compare.arms=[{name:a,optimizer:{betas:[1.5,0.9]}}]", "arm 'a'.*betas"),
    ("compare.arms=[{name:a,optimizer:{lrr:0.1}}]", "arm 'a'.*lrr"),
    ("compare.arms=[]", "compare.arms is empty"),
    ("compare.contrast=[x,y]", "compare.contrast"),
    ("compare.seeds=[-1,0]", re.escape("compare.seeds[0]=-1: a seed must be an integer in")),
    (f"compare.seeds=[0,{2**40}]", re.escape(f"compare.seeds[1]={2**40}: a seed")),
])
def test_bad_compare_settings_fail_before_training(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        composed("+experiment=compare", override)


@pytest.mark.parametrize(("override", "message"), [
    ("grid.seeds=[-1]", "grid.seeds[0]=-1: a seed must be an integer in [0, 2**32)"),
    (f"grid.seeds=[0,{2**32}]", f"grid.seeds[1]={2**32}: a seed"),
])
def test_bad_grid_seeds_fail_before_training(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        composed("+experiment=beta_grid", override)


def test_accelerator_names_are_lightnings() -> None:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    # "auto" and "gpu" are Lightning's choosers; the rest are its registered accelerators.
    registered = AcceleratorRegistry.available_accelerators()
    assert set(schema.ACCELERATORS) == {"auto", "gpu", *registered}


# --- every rule, checked on the dataclasses directly (no composing): the whole message ---------

TWO_ARMS = {"arms": [ArmConfig("a"), ArmConfig("b")]}
ADAMAX_TAKES = "lr, betas, eps, weight_decay, eps_mode, bias_correction"
ADAM_TAKES = "lr, betas, eps, weight_decay, amsgrad, eps_mode, bias_correction"
NESTEROV = ("optimizer.sgd.nesterov=true needs optimizer.sgd.momentum > 0 and "
            "optimizer.sgd.dampening=0 (have {}): torch.optim.SGD refuses it otherwise")
ONE_LR = {"lr": {"a": [0.1]}}

REFUSED: dict[str, tuple[type, dict[str, Any], str]] = {
    # case: (section, its arguments, the message)
    "data.name": (DataConfig, {"name": "cifar"},
                  "data.name='cifar': expected one of ['fashion_mnist', 'mnist']"),
    "data.val_size": (DataConfig, {"val_size": 0}, "data.val_size=0: must be > 0"),
    "data.batch_size": (DataConfig, {"batch_size": -1}, "data.batch_size=-1: must be > 0"),
    "data.eval_batch_size": (DataConfig, {"eval_batch_size": 0},
                             "data.eval_batch_size=0: must be > 0"),
    "data.limit_train": (DataConfig, {"limit_train": 0},
                         "data.limit_train=0: must be > 0 or null"),
    "model.init": (ModelConfig, {"init": "he"}, "model.init='he': expected 'keras' or 'torch'"),
    "model.hidden": (ModelConfig, {"hidden": [128, 0]},
                     "model.hidden=[128, 0]: sizes must be > 0"),
    "model.dropout<0": (ModelConfig, {"dropout": -0.1}, "model.dropout=-0.1: must be in [0, 1)"),
    "model.dropout=1": (ModelConfig, {"dropout": 1.0}, "model.dropout=1.0: must be in [0, 1)"),
    "optimizer.name": (OptimizerConfig, {"name": "lion"},
                       "optimizer.name='lion': expected one of adadelta, adagrad, adam, adamax, "
                       "adamw, rmsprop, sgd"),
    "optimizer.lr=0": (OptimizerConfig, {"lr": 0.0}, "optimizer.lr=0.0: must be a number > 0"),
    "optimizer.lr=inf": (OptimizerConfig, {"lr": math.inf},
                         "optimizer.lr=inf: must be a number > 0"),
    "optimizer.lr=true": (OptimizerConfig, {"lr": True},
                          "optimizer.lr=True: must be a number > 0"),
    "optimizer.betas x3": (OptimizerConfig, {"betas": [0.9, 0.99, 0.999]},
                           "optimizer.betas=[0.9, 0.99, 0.999]: expected two values "
                           "[beta1, beta2]"),
    "optimizer.betas[0]=1": (OptimizerConfig, {"betas": [1.0, 0.999]},
                             "optimizer.betas[0]=1.0: beta1 must be in [0, 1)"),
    "optimizer.betas[1]<0": (OptimizerConfig, {"betas": [0.9, -0.1]},
                             "optimizer.betas[1]=-0.1: beta2 must be in [0, 1)"),
    "optimizer.betas[1]=nan": (OptimizerConfig, {"betas": [0.9, math.nan]},
                               "optimizer.betas[1]=nan: beta2 must be in [0, 1)"),
    "optimizer.eps<0": (OptimizerConfig, {"eps": -1e-8}, "optimizer.eps=-1e-08: must be >= 0"),
    "optimizer.eps=inf": (OptimizerConfig, {"eps": math.inf}, "optimizer.eps=inf: must be >= 0"),
    "optimizer.weight_decay<0": (OptimizerConfig, {"weight_decay": -0.1},
                                 "optimizer.weight_decay=-0.1: must be >= 0"),
    "optimizer.weight_decay=nan": (OptimizerConfig, {"weight_decay": math.nan},
                                   "optimizer.weight_decay=nan: must be >= 0"),
    "optimizer.eps_mode": (OptimizerConfig, {"eps_mode": "tf"},
                           "optimizer.eps_mode='tf': expected 'paper' or 'keras'"),
    "optimizer.amsgrad for adamax": (OptimizerConfig, {"name": "adamax", "amsgrad": True},
                                     "optimizer.amsgrad=True: adamax has no option 'amsgrad' "
                                     f"(it takes {ADAMAX_TAKES})"),
    "optimizer.sgd.momentum for adam": (OptimizerConfig, {"sgd": SGDOptions(momentum=0.9)},
                                        "optimizer.sgd.momentum=0.9: adam has no option "
                                        f"'sgd.momentum' (it takes {ADAM_TAKES})"),
    "optimizer.eps for sgd": (OptimizerConfig, {"name": "sgd", "eps": 1e-8},
                              "optimizer.eps=1e-08: sgd has no option 'eps' "
                              "(it takes lr, weight_decay, sgd)"),
    "optimizer.schedule": (OptimizerConfig, {"schedule": "cosine"},
                           "optimizer.schedule='cosine': expected one of constant, inv_sqrt"),
    "optimizer.sgd.momentum<0": (SGDOptions, {"momentum": -0.1},
                                 "optimizer.sgd.momentum=-0.1: must be >= 0"),
    "optimizer.sgd.momentum=inf": (SGDOptions, {"momentum": math.inf},
                                   "optimizer.sgd.momentum=inf: must be >= 0"),
    "optimizer.sgd.dampening<0": (SGDOptions, {"dampening": -0.5},
                                  "optimizer.sgd.dampening=-0.5: must be >= 0"),
    "optimizer.sgd.dampening=inf": (SGDOptions, {"dampening": math.inf},
                                    "optimizer.sgd.dampening=inf: must be >= 0"),
    "optimizer.sgd.nesterov without momentum": (SGDOptions, {"nesterov": True},
                                                NESTEROV.format("0 and 0")),
    "optimizer.sgd.nesterov with dampening": (
        SGDOptions, {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        NESTEROV.format("0.9 and 0.1")),
    "optimizer.rmsprop.alpha=1": (RMSpropOptions, {"alpha": 1.0},
                                  "optimizer.rmsprop.alpha=1.0: must be in [0, 1)"),
    "optimizer.rmsprop.alpha<0": (RMSpropOptions, {"alpha": -0.1},
                                  "optimizer.rmsprop.alpha=-0.1: must be in [0, 1)"),
    "optimizer.rmsprop.alpha=nan": (RMSpropOptions, {"alpha": math.nan},
                                    "optimizer.rmsprop.alpha=nan: must be in [0, 1)"),
    "optimizer.rmsprop.eps<0": (RMSpropOptions, {"eps": -1.0},
                                "optimizer.rmsprop.eps=-1.0: must be >= 0"),
    "optimizer.rmsprop.eps=inf": (RMSpropOptions, {"eps": math.inf},
                                  "optimizer.rmsprop.eps=inf: must be >= 0"),
    "optimizer.rmsprop.momentum<0": (RMSpropOptions, {"momentum": -0.5},
                                     "optimizer.rmsprop.momentum=-0.5: must be >= 0"),
    "optimizer.rmsprop.momentum=inf": (RMSpropOptions, {"momentum": math.inf},
                                       "optimizer.rmsprop.momentum=inf: must be >= 0"),
    "optimizer.adagrad.lr_decay<0": (AdagradOptions, {"lr_decay": -1.0},
                                     "optimizer.adagrad.lr_decay=-1.0: must be >= 0"),
    "optimizer.adagrad.initial_accumulator_value=inf": (
        AdagradOptions, {"initial_accumulator_value": math.inf},
        "optimizer.adagrad.initial_accumulator_value=inf: must be >= 0"),
    "optimizer.adagrad.eps<0": (AdagradOptions, {"eps": -1e-10},
                                "optimizer.adagrad.eps=-1e-10: must be >= 0"),
    "optimizer.adadelta.rho>1": (AdadeltaOptions, {"rho": 1.5},
                                 "optimizer.adadelta.rho=1.5: must be in [0, 1]"),
    "optimizer.adadelta.rho<0": (AdadeltaOptions, {"rho": -0.1},
                                 "optimizer.adadelta.rho=-0.1: must be in [0, 1]"),
    "optimizer.adadelta.rho=inf": (AdadeltaOptions, {"rho": math.inf},
                                   "optimizer.adadelta.rho=inf: must be in [0, 1]"),
    "optimizer.adadelta.eps<0": (AdadeltaOptions, {"eps": -1e-6},
                                 "optimizer.adadelta.eps=-1e-06: must be >= 0"),
    "optimizer.adadelta.eps=inf": (AdadeltaOptions, {"eps": math.inf},
                                   "optimizer.adadelta.eps=inf: must be >= 0"),
    "trainer.max_epochs": (TrainerConfig, {"max_epochs": 0},
                           "trainer.max_epochs=0: must be >= 1"),
    "trainer.steps_per_call": (TrainerConfig, {"steps_per_call": 0},
                               "trainer.steps_per_call=0: must be >= 1"),
    "trainer.num_threads": (TrainerConfig, {"num_threads": 0},
                            "trainer.num_threads=0: must be >= 1"),
    "internals.every_n_epochs": (InternalsConfig, {"every_n_epochs": 0},
                                 "internals.every_n_epochs=0: must be >= 1"),
    "internals.max_elements=0": (InternalsConfig, {"max_elements": 0},
                                 "internals.max_elements=0: must be in [1, 2**24]"),
    "internals.max_elements>2**24": (InternalsConfig, {"max_elements": 2**24 + 1},
                                     "internals.max_elements=16777217: must be in [1, 2**24]"),
    "compare.seeds empty": (CompareConfig, TWO_ARMS | {"seeds": []},
                            "compare.seeds is empty: give at least one seed"),
    "compare.seeds repeat": (CompareConfig, TWO_ARMS | {"seeds": [0, 1, 0]},
                             "compare.seeds=[0, 1, 0]: seeds repeat"),
    "compare.arms empty": (CompareConfig, {"arms": []},
                           "compare.arms is empty: give at least one arm"),
    "compare.arms repeat": (CompareConfig, {"arms": [ArmConfig("a"), ArmConfig("a")]},
                            "compare.arms: arm names repeat: ['a', 'a']"),
    "compare.workers": (CompareConfig, TWO_ARMS | {"workers": 0},
                        "compare.workers=0: must be >= 1"),
    "compare.contrast of one": (CompareConfig, TWO_ARMS | {"contrast": ["a"]},
                                "compare.contrast=['a']: expected two arm names of ['a', 'b']"),
    "compare.contrast unknown": (CompareConfig, TWO_ARMS | {"contrast": ["a", "c"]},
                                 "compare.contrast=['a', 'c']: expected two arm names of "
                                 "['a', 'b']"),
    "grid.beta1 empty": (GridConfig, {"beta1": []},
                         "grid.beta1 is empty: give at least one value"),
    "grid.lr empty": (GridConfig, {"lr": []}, "grid.lr is empty: give at least one value"),
    "grid.bias_correction repeat": (GridConfig, {"bias_correction": [True, True]},
                                    "grid.bias_correction=[True, True]: values repeat"),
    "grid.seeds repeat": (GridConfig, {"seeds": [1, 1]}, "grid.seeds=[1, 1]: values repeat"),
    "grid.beta1[1]=1": (GridConfig, {"beta1": [0.5, 1.0]},
                        "grid.beta1[1]=1.0: beta1 must be in [0, 1)"),
    "grid.beta2[0]=nan": (GridConfig, {"beta2": [math.nan]},
                          "grid.beta2[0]=nan: beta2 must be in [0, 1)"),
    "grid.lr[1]<0": (GridConfig, {"lr": [1e-3, -1.0]}, "grid.lr[1]=-1.0: must be a number > 0"),
    "grid.lr[0]=inf": (GridConfig, {"lr": [math.inf]}, "grid.lr[0]=inf: must be a number > 0"),
    "grid.workers": (GridConfig, {"workers": 0}, "grid.workers=0: must be >= 1"),
    "tune.lr empty": (TuneConfig, {"lr": {}},
                      "tune.lr is empty: give step sizes for at least one arm"),
    "tune.lr.a empty": (TuneConfig, {"lr": {"a": []}},
                        "tune.lr.a is empty: give at least one step size"),
    "tune.lr.a repeat": (TuneConfig, {"lr": {"a": [0.1, 0.1]}},
                         "tune.lr.a=[0.1, 0.1]: values repeat"),
    "tune.lr.b[1]=0": (TuneConfig, {"lr": {"a": [0.1], "b": [0.1, 0.0]}},
                       "tune.lr.b[1]=0.0: must be a number > 0"),
    "tune.lr.a[0]=inf": (TuneConfig, {"lr": {"a": [math.inf]}},
                         "tune.lr.a[0]=inf: must be a number > 0"),
    "tune.seeds empty": (TuneConfig, ONE_LR | {"seeds": []},
                         "tune.seeds is empty: give at least one seed"),
    "tune.seeds repeat": (TuneConfig, ONE_LR | {"seeds": [2, 2]},
                          "tune.seeds=[2, 2]: seeds repeat"),
    "tune.metric": (TuneConfig, ONE_LR | {"metric": "test/acc"},
                    "tune.metric='test/acc': expected 'val/loss' or 'val/acc' (validation)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_every_rule_refuses_with_its_whole_message(case: str) -> None:
    section, arguments, message = REFUSED[case]
    with pytest.raises(ConfigError) as refused:
        section(**arguments)
    assert str(refused.value) == message


@pytest.mark.parametrize(("section", "arguments"), [
    (DataConfig, {"val_size": 1, "batch_size": 1, "eval_batch_size": 1, "limit_train": 1}),
    (ModelConfig, {"hidden": [1], "dropout": 0.0, "init": "torch"}),
    (ModelConfig, {"hidden": [16], "dropout": 0.999}),
    (ModelConfig, {"hidden": [], "dropout": 0.0}),  # logistic regression: nothing to drop
    (OptimizerConfig, {"lr": 1, "betas": [0.0, 0.0], "eps": 0, "weight_decay": 0.0,
                       "eps_mode": "paper"}),
    (OptimizerConfig, {"lr": 1e-12, "betas": [0.999999, 0.5], "eps": 1e-30}),
    (OptimizerConfig, {"name": "adamw", "amsgrad": True, "weight_decay": 0.01}),
    (OptimizerConfig, {"name": "adamax", "bias_correction": False, "eps_mode": "paper"}),
    (OptimizerConfig, {"schedule": "inv_sqrt"}),
    (OptimizerConfig, {"name": "sgd", "lr": 0.1, "weight_decay": 0.1, "schedule": "inv_sqrt",
                       "sgd": SGDOptions(momentum=0.9, nesterov=True)}),
    (OptimizerConfig, {"name": "adadelta", "adadelta": AdadeltaOptions(rho=0.5)}),
    (SGDOptions, {"momentum": 0.0, "dampening": 0.0, "nesterov": False}),
    (SGDOptions, {"momentum": 1e-9, "dampening": 0.0, "nesterov": True}),
    (RMSpropOptions, {"alpha": 0.0, "eps": 0.0, "momentum": 0.0, "centered": True}),
    (RMSpropOptions, {"alpha": 0.999999}),
    (AdagradOptions, {"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 0.0}),
    (AdadeltaOptions, {"rho": 0.0, "eps": 0.0}),
    (AdadeltaOptions, {"rho": 1.0}),
    (TrainerConfig, {"max_epochs": 1, "steps_per_call": 1, "num_threads": 1}),
    (InternalsConfig, {"every_n_epochs": 1, "max_elements": 1}),
    (InternalsConfig, {"max_elements": 2**24}),
    (CompareConfig, {"arms": [ArmConfig("a")], "seeds": [3], "workers": 1}),
    (CompareConfig, TWO_ARMS | {"contrast": ["b", "a"]}),
    (GridConfig, {"beta1": [0.0], "beta2": [0.999], "lr": [1e-9], "seeds": [0],
                  "bias_correction": [True, False], "workers": 1}),
    (TuneConfig, {"lr": {"a": [1e-3, 1e-2], "b": [1.0]}, "seeds": [7, 8], "metric": "val/acc"}),
], ids=lambda value: value.__name__ if isinstance(value, type) else None)
def test_the_boundaries_of_every_rule_are_accepted(section: type,
                                                   arguments: dict[str, Any]) -> None:
    made = section(**arguments)
    assert all(getattr(made, key) == value for key, value in arguments.items())


def test_a_null_data_root_is_the_datasets_default_location() -> None:
    assert DataConfig(root=None).root is None  # resolved per dataset, never at construction
    assert DataConfig(root=None).location() == default_root("mnist")
    assert DataConfig(name="fashion_mnist").location() == default_root("fashion_mnist")
    assert DataConfig(root="somewhere").location() == "somewhere"
    assert composed("data=fashion_mnist").data.root == default_root("fashion_mnist")


def test_finite_means_a_real_finite_number() -> None:
    assert finite(1) and finite(-2.5) and finite(0)
    assert not any(finite(x) for x in (True, False, math.nan, -math.inf, "1", None))


def test_what_to_config_refuses_is_one_line() -> None:
    with pytest.raises(ConfigError) as missing:
        composed("+experiment=compare", "compare.arms=[{optimizer:{}}]")
    assert str(missing.value) == (
        "Structured config of type `ArmConfig` has missing mandatory value: name")
    with pytest.raises(ConfigError) as plain:
        to_config(OmegaConf.create({"seed": 1}))
    assert str(plain.value) == "the composed config is a dict, not a Config"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lrr": 0.1}, "compare arm 'a': Key 'lrr' not in 'OptimizerConfig'"),
    ({"betas": [1.5, 0.9]}, "compare arm 'a': optimizer.betas[0]=1.5: beta1 must be in [0, 1)"),
])
def test_an_arms_bad_override_is_named_with_the_arm(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        arm_optimizer(OptimizerConfig(), ArmConfig("a", overrides))
    assert str(refused.value) == message
    merged = arm_optimizer(OptimizerConfig(lr=0.01), ArmConfig("b", {"betas": [0.1, 0.1]}))
    assert merged == OptimizerConfig(lr=0.01, betas=[0.1, 0.1])


def test_the_schema_is_registered_as_config_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", {})  # what register() itself stores, nothing earlier
    schema.register()
    assert list(store.repo) == ["config_schema.yaml"]
    assert OmegaConf.get_type(store.load("config_schema.yaml").node) is Config


def test_an_optimizer_without_betas_refuses_them_against_their_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry's way to add an optimizer: fields it does not read must keep their
    # defaults, a default_factory's (betas) included.
    monkeypatch.setitem(OPTIMIZERS, "sgd", OptimizerSpec(torch.optim.SGD, ("lr",)))
    assert OptimizerConfig(name="sgd", lr=0.1).lr == 0.1
    with pytest.raises(ConfigError) as refused:
        OptimizerConfig(name="sgd", betas=[0.5, 0.5])
    assert str(refused.value) == (
        "optimizer.betas=[0.5, 0.5]: sgd has no option 'betas' (it takes lr)")


def test_a_tune_section_defaults_to_seed_0_and_the_validation_loss() -> None:
    tune = TuneConfig(lr={"a": [0.1]})
    assert (tune.seeds, tune.metric) == ([0], "val/loss")


def test_to_config_refuses_a_tune_section_its_comparison_cannot_take() -> None:
    compare = CompareConfig(arms=[ArmConfig("a"), ArmConfig("b")], seeds=[1, 2])

    def checked(config: Config) -> Config:
        return to_config(OmegaConf.structured(config))

    refused = [
        (Config(tune=TuneConfig(lr={"a": [1e-3]})),
         "tune: needs a compare: section whose arms it tunes"),
        (Config(compare=compare, tune=TuneConfig(lr={"d": [1e-3], "a": [1e-3], "c": [1e-3]})),
         "tune.lr: ['c', 'd'] are not compare arms (['a', 'b'])"),
        (Config(compare=compare, tune=TuneConfig(lr={"a": [1e-3]}, seeds=[0, 2, 1])),
         "tune.seeds=[0, 2, 1]: [1, 2] also in compare.seeds=[1, 2]; choose α on other seeds"),
    ]
    for config, message in refused:
        with pytest.raises(ConfigError) as raised:
            checked(config)
        assert str(raised.value) == message
    tune = checked(Config(compare=compare, tune=TuneConfig(lr={"b": [1e-3]}, seeds=[0, 3]))).tune
    assert tune is not None and (tune.lr, tune.seeds) == ({"b": [1e-3]}, [0, 3])
