"""src.optim.registry: `optimizer.name` picks the optimizer, the config section's fields become
its arguments, and a wrong name or an option the optimizer lacks fails at start-up, exit 2."""

from __future__ import annotations

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
    (["optimizer.name=sgd"], "optimizer.name='sgd': expected one of adam, adamax, adamw"),
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
    done = run_entry("src.train", f"data.root={tiny_mnist}", "optimizer.name=sgd", store=store)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: optimizer.name='sgd': expected one of adam, adamax, adamw"]
    assert mlflow_runs(store) == []
