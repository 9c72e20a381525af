"""The config composes, the public overrides work as written, and bad values fail at start-up."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from src import config as schema
from src.config import ConfigError, to_config
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

