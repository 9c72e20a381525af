"""`python -m src.train`: a real run end to end, determinism, and refusals of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from src.config import Config, DataConfig, TrackingConfig, TrainerConfig
from src.run import train
from tests.conftest import mlflow_runs, run_entry

TINY = ("data.val_size=100", "trainer.max_epochs=2")


def tiny_config(root: Path, store: Path, seed: int = 0) -> Config:
    return Config(data=DataConfig(root=str(root), val_size=100, download=False),
                  trainer=TrainerConfig(max_epochs=2),
                  tracking=TrackingConfig(uri=f"sqlite:///{store / 'mlflow.db'}"), seed=seed)


def test_cli_run_records_a_finished_mlflow_run(tiny_mnist: Path, store: Path) -> None:
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY, "optimizer.betas=[0.5,0.9]",
                     "seed=3", store=store)
    assert done.returncode == 0, done.stderr
    (run,) = mlflow_runs(store)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["optimizer.betas.0"], p["optimizer.betas.1"]) == ("0.5", "0.9")
    assert (p["optimizer.lr"], p["optimizer.eps"], p["seed"]) == ("0.001", "1e-07", "3")
    assert (p["data.batch_size"], p["trainer.max_epochs"]) == ("32", "2")
    assert {"train/loss", "val/loss", "val/acc", "test/loss", "test/acc"} <= set(run.data.metrics)
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2]
    assert run.data.metrics["test/acc"] > 0.5  # the tiny set is learnable
    tags = run.data.tags
    assert {"torch_version", "lightning_version", "mlflow_version"} <= set(tags)
    assert "mlflow.source.git.commit" in tags
    assert any(k.startswith("data.md5.") for k in tags)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts
    assert f"run {run.info.run_id}" in done.stdout


def test_same_seed_same_metrics_other_seed_other_metrics(tiny_mnist: Path, store: Path) -> None:
    first = train(tiny_config(tiny_mnist, store, seed=0))
    again = train(tiny_config(tiny_mnist, store, seed=0))
    other = train(tiny_config(tiny_mnist, store, seed=1))
    assert first.history == again.history and first.final == again.final
    assert first.history["train/loss"] != other.history["train/loss"]


def _assert_refused(done, message: str, store: Path) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), done.stderr
    assert message in lines[-1], lines[-1]
    assert "Traceback" not in done.stderr + done.stdout
    assert all(r.info.status != "RUNNING" for r in mlflow_runs(store))


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.betas=[1.0,0.999]", "optimizer.betas[0]=1.0"),
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.eps=-1e-8", "optimizer.eps"),
    ("optimizer.lrr=0.1", "optimizer.lrr"),
    ("+experiment=nope", "experiment/nope"),
])
def test_bad_config_is_one_line_and_no_run(tiny_mnist: Path, store: Path, override: str,
                                           message: str) -> None:
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY, override, store=store)
    _assert_refused(done, message, store)
    assert mlflow_runs(store) == []


def test_missing_data_root_says_where_to_put_files(tmp_path: Path, store: Path) -> None:
    missing = tmp_path / "nowhere"
    done = run_entry("src.train", f"data.root={missing}", "data.download=false", store=store)
    _assert_refused(done, str(missing), store)
    assert "train-images-idx3-ubyte.gz" in done.stderr


def test_corrupt_data_file_is_named(tiny_mnist: Path, store: Path) -> None:
    labels = tiny_mnist / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-20])
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY, store=store)
    _assert_refused(done, "train-labels-idx1-ubyte.gz", store)


@pytest.mark.slow
def test_one_epoch_on_real_mnist_reaches_95_percent(real_mnist: Path, store: Path) -> None:
    config = Config(data=DataConfig(root=str(real_mnist), download=False),
                    trainer=TrainerConfig(max_epochs=1),
                    tracking=TrackingConfig(uri=f"sqlite:///{store / 'mlflow.db'}"))
    outcome = train(config)
    assert outcome.final["val/acc"] >= 0.95


def test_results_do_not_depend_on_steps_per_call(tiny_mnist: Path, store: Path) -> None:
    one, chunked = (tiny_config(tiny_mnist, store) for _ in range(2))
    one.trainer.steps_per_call = 1
    chunked.trainer.steps_per_call = 5  # 16 minibatches per epoch: chunks of 5, 5, 5, 1
    a, b = train(one), train(chunked)
    assert a.history == b.history and a.final == b.final


class _SubnormalProbe(pl.Callback):
    """Whether a subnormal float survives arithmetic during training."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.kept = bool((torch.tensor(1e-39) * 1.0).item() != 0.0)


@pytest.mark.parametrize("flush", [True, False])
def test_subnormals_are_flushed_while_training_only(tiny_mnist: Path, store: Path,
                                                    flush: bool) -> None:
    config = tiny_config(tiny_mnist, store)
    config.trainer.flush_denormal = flush
    probe = _SubnormalProbe()
    train(config, callbacks=[probe])
    assert probe.kept is not flush
    assert (torch.tensor(1e-39) * 1.0).item() != 0.0  # the process default is back


def test_help_lists_only_the_groups_a_run_accepts(store: Path) -> None:
    done = run_entry("src.train", "--help", store=store, timeout=120)
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = {line.split(":", 1)[0] for line in section.splitlines()[2:] if ":" in line}
    # `study` belongs to `python -m pipelines.study`, whose search path alone has it.
    assert groups == {"data", "experiment", "model", "optimizer", "tracking", "trainer"}, section
