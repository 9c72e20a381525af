"""src.optim.registry: `optimizer.name` picks the optimizer, the config section's fields become
its arguments, and a wrong name or an option the optimizer lacks fails at start-up, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from src.config import ArmConfig, ConfigError, OptimizerConfig, arm_optimizer
from src.optim import OPTIMIZERS, Adam, AdaMax, AdamW, build
from tests.conftest import mlflow_runs, run_entry
from tests.test_config import composed


@pytest.mark.parametrize(("name", "cls"), [("adam", Adam), ("adamw", AdamW), ("adamax", AdaMax)])
def test_build_makes_the_named_optimizer_with_the_sections_values(name, cls):
    options = {"amsgrad": True} if name != "adamax" else {}
    config = OptimizerConfig(name=name, lr=0.01, betas=[0.8, 0.99], eps=1e-6,
                             weight_decay=0.1, eps_mode="paper", bias_correction=False,
                             **options)
    opt = build([torch.nn.Parameter(torch.zeros(3))], config)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        0.01, (0.8, 0.99), 1e-6, 0.1)
    assert group["eps_mode"] == "paper" and group["bias_correction"] is False
    assert group.get("amsgrad", False) is (name != "adamax")
    assert group.get("decoupled_weight_decay", False) is (name == "adamw")


def test_every_field_a_spec_names_is_a_keyword_of_its_class():
    import inspect

    for spec in OPTIMIZERS.values():
        inspect.signature(spec.cls).bind([], **dict.fromkeys(spec.fields))  # TypeError if not
        assert set(spec.fields) <= set(OptimizerConfig.__dataclass_fields__)


def test_the_classifier_builds_its_optimizer_from_the_config():
    from src.model import Classifier

    net = torch.nn.Linear(4, 2)
    for config, cls in ((OptimizerConfig(), Adam), (OptimizerConfig(name="adamax"), AdaMax)):
        opt = Classifier(net, config, num_classes=2, batch_size=4).configure_optimizers()
        assert type(opt) is cls and opt.param_groups[0]["eps_mode"] == "keras"


def test_groups_select_the_optimizer() -> None:
    assert composed().optimizer == OptimizerConfig()
    adamax = composed("optimizer=adamax").optimizer
    assert (adamax.name, adamax.lr) == ("adamax", 2e-3)
    adamw = composed("optimizer=adamw").optimizer
    assert (adamw.name, adamw.weight_decay) == ("adamw", 0.01)
    assert composed("optimizer.amsgrad=true").optimizer.amsgrad is True


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer.name=lbfgs"], "optimizer.name='lbfgs': expected one of adadelta, adagrad, "
                               "adam, adamax, adamw, rmsprop, sgd"),
    (["optimizer=adamax", "optimizer.amsgrad=true"],
     "optimizer.amsgrad=True: adamax has no option 'amsgrad'"),
])
def test_a_wrong_name_or_a_foreign_option_fails_at_config_time(overrides, message) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        composed(*overrides)


def test_compare_arms_pick_an_optimizer_by_name() -> None:
    from pipelines.compare import arm_label

    base = OptimizerConfig()
    adamax = arm_optimizer(base, ArmConfig(name="adamax",
                                           optimizer={"name": "adamax", "lr": 0.002}))
    assert (adamax.name, adamax.lr, adamax.eps_mode) == ("adamax", 0.002, "keras")
    assert arm_label(base, adamax) == "adamax, β=(0.9, 0.999), α=0.002"
    amsgrad = arm_optimizer(base, ArmConfig(name="amsgrad", optimizer={"amsgrad": True}))
    assert arm_label(base, amsgrad) == "β=(0.9, 0.999), amsgrad=True"
    with pytest.raises(ConfigError, match="compare arm 'x'.*expected one of"):
        arm_optimizer(base, ArmConfig(name="x", optimizer={"name": "adamx"}))
    config = composed("+experiment=compare", "compare.arms=[{name:adam,optimizer:{}},"
                      "{name:adamax,optimizer:{name:adamax,lr:0.002}}]")
    assert config.compare is not None and len(config.compare.arms) == 2


def test_unknown_name_exits_2_with_one_line_before_any_run(tiny_mnist: Path, store: Path):
    done = run_entry("src.train", f"data.root={tiny_mnist}", "optimizer.name=lbfgs", store=store)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: optimizer.name='lbfgs': expected one of adadelta, adagrad, adam, adamax, adamw, "
        "rmsprop, sgd"]
    assert mlflow_runs(store) == []


# --- torch.optim's optimizers ------------------------------------------------------------------

TORCH = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
         "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}


@pytest.mark.parametrize(("overrides", "cls", "expected"), [
    (["optimizer=sgd", "optimizer.lr=0.05", "optimizer.sgd.momentum=0.8",
      "optimizer.sgd.nesterov=true", "optimizer.weight_decay=1e-4"], torch.optim.SGD,
     {"lr": 0.05, "momentum": 0.8, "nesterov": True, "dampening": 0.0, "weight_decay": 1e-4}),
    (["optimizer=rmsprop", "optimizer.rmsprop.alpha=0.9", "optimizer.rmsprop.eps=1e-6",
      "optimizer.rmsprop.momentum=0.5", "optimizer.rmsprop.centered=true"], torch.optim.RMSprop,
     {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True}),
    (["optimizer=adagrad", "optimizer.lr=0.1", "optimizer.adagrad.lr_decay=0.01",
      "optimizer.adagrad.initial_accumulator_value=0.1", "optimizer.adagrad.eps=1e-8"],
     torch.optim.Adagrad,
     {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-8}),
    (["optimizer=adadelta", "optimizer.adadelta.rho=0.95", "optimizer.adadelta.eps=1e-5"],
     torch.optim.Adadelta, {"lr": 1.0, "rho": 0.95, "eps": 1e-5}),
])
def test_each_torch_optimizer_is_built_with_the_configured_values(overrides, cls, expected):
    optimizer = composed(*overrides).optimizer
    built = build([torch.nn.Parameter(torch.zeros(3))], optimizer)
    assert type(built) is cls
    group = built.param_groups[0]
    assert {k: group[k] for k in expected} == expected
    if cls is torch.optim.Adagrad:  # torch fills the accumulator from its option
        assert torch.equal(built.state[group["params"][0]]["sum"], torch.full((3,), 0.1))


@pytest.mark.parametrize("name", sorted(TORCH))
def test_the_group_files_and_sections_hold_torchs_defaults(name: str) -> None:
    import dataclasses
    import inspect

    optimizer = composed(f"optimizer={name}").optimizer
    signature = inspect.signature(TORCH[name].__init__).parameters
    section = dataclasses.asdict(getattr(optimizer, name))
    assert {k: signature[k].default for k in section} == section
    assert optimizer.lr == signature["lr"].default
    assert optimizer.weight_decay == signature["weight_decay"].default
    spec = OPTIMIZERS[name]
    inspect.signature(spec.cls).bind([], **dict.fromkeys(spec.fields), **section)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer=sgd", "optimizer.sgd.nesterov=true"],
     "optimizer.sgd.nesterov=true needs optimizer.sgd.momentum > 0 and "
     "optimizer.sgd.dampening=0 (have 0 and 0): torch.optim.SGD refuses it otherwise"),
    (["optimizer=sgd", "optimizer.sgd.momentum=0.9", "optimizer.sgd.dampening=0.1",
      "optimizer.sgd.nesterov=true"], "optimizer.sgd.nesterov=true needs"),
    (["optimizer=sgd", "optimizer.sgd.momentum=-0.1"], "optimizer.sgd.momentum=-0.1: must be"),
    (["optimizer=sgd", "optimizer.betas=[0.5,0.9]"],
     "optimizer.betas=[0.5, 0.9]: sgd has no option 'betas' (it takes lr, weight_decay, sgd)"),
    (["optimizer=rmsprop", "optimizer.eps=1e-8"], "optimizer.eps=1e-08: rmsprop has no option"),
    (["optimizer.sgd.momentum=0.9"], "optimizer.sgd.momentum=0.9: adam has no option "
                                     "'sgd.momentum'"),
    (["optimizer=rmsprop", "optimizer.rmsprop.alpha=1.0"], "optimizer.rmsprop.alpha=1.0: must"),
    (["optimizer=rmsprop", "optimizer.rmsprop.eps=-1"], "optimizer.rmsprop.eps=-1.0: must"),
    (["optimizer=adagrad", "optimizer.adagrad.lr_decay=-1"], "optimizer.adagrad.lr_decay=-1.0"),
    (["optimizer=adadelta", "optimizer.adadelta.rho=1.5"], "optimizer.adadelta.rho=1.5: must"),
    (["optimizer.schedule=cosine"],
     "optimizer.schedule='cosine': expected one of constant, inv_sqrt"),
])
def test_bad_torch_optimizer_values_name_the_key(overrides, message) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        composed(*overrides)


def test_nesterov_without_momentum_is_one_line_before_any_run(tiny_mnist: Path, store: Path):
    done = run_entry("src.train", f"data.root={tiny_mnist}", "optimizer=sgd",
                     "optimizer.sgd.nesterov=true", store=store)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: optimizer.sgd.nesterov=true needs optimizer.sgd.momentum > 0 and "
        "optimizer.sgd.dampening=0 (have 0 and 0): torch.optim.SGD refuses it otherwise"]
    assert mlflow_runs(store) == []


def test_compare_arms_and_labels_take_torch_optimizers() -> None:
    from pipelines.compare import arm_label

    base = OptimizerConfig()
    sgd = arm_optimizer(base, ArmConfig(name="sgd", optimizer={
        "name": "sgd", "lr": 0.1, "sgd": {"momentum": 0.9, "nesterov": True}}))
    assert (sgd.name, sgd.sgd.momentum, sgd.sgd.nesterov) == ("sgd", 0.9, True)
    assert arm_label(base, sgd) == "sgd, α=0.1, momentum=0.9, nesterov=True"
    with pytest.raises(ConfigError, match="compare arm 'bad'.*nesterov=true needs"):
        arm_optimizer(base, ArmConfig(name="bad", optimizer={"name": "sgd",
                                                             "sgd": {"nesterov": True}}))


def test_a_spec_gives_its_fields_and_its_section_as_keyword_arguments() -> None:
    adam = OPTIMIZERS["adam"].kwargs(OptimizerConfig(betas=[0.8, 0.9], lr=0.01))
    assert adam == {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-7, "weight_decay": 0.0,
                    "amsgrad": False, "eps_mode": "keras", "bias_correction": True}
    sgd = OPTIMIZERS["sgd"].kwargs(OptimizerConfig(name="sgd", lr=0.1, weight_decay=0.5))
    assert sgd == {"lr": 0.1, "weight_decay": 0.5, "momentum": 0.0, "dampening": 0.0,
                   "nesterov": False}
    assert OPTIMIZERS["adadelta"].cls is torch.optim.Adadelta and OPTIMIZERS["adam"].cls is Adam
    assert OPTIMIZERS["sgd"].section == "sgd" and OPTIMIZERS["adam"].section is None

