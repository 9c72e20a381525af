"""`python -m src.train`: a real run end to end, determinism, and refusals of bad input."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from src.config import Config, ConfigError, DataConfig, TrackingConfig, TrainerConfig
from src.errors import TrackingError
from src.run import check_accelerator, train
from tests.conftest import REPO, mlflow_runs, run_entry

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
    ("seed=-1", "seed=-1: a seed must be an integer in [0, 2**32)"),
    (f"seed={2**64}", f"seed={2**64}: a seed must be an integer in [0, 2**32)"),
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


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The refusal contract: exit 2, no traceback, and exactly one `error:` line on stderr."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def _absent_accelerator() -> str:
    """An accelerator name this machine lacks ("gpu" unless it has CUDA or MPS)."""
    return "tpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "gpu"


def test_missing_accelerator_is_one_line_naming_what_exists_and_no_run(
        tiny_mnist: Path, store: Path) -> None:
    name = _absent_accelerator()
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY,
                     f"trainer.accelerator={name}", store=store)
    line = _one_error_line(done)
    assert line.startswith(f"error: trainer.accelerator={name}: this machine has no ")
    assert "(available: cpu" in line
    assert mlflow_runs(store) == []


@pytest.mark.parametrize("name", ["cuda", "mps", "tpu", "gpu"])
def test_check_accelerator_refuses_only_what_is_missing(name: str) -> None:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "tpu": False}
    available["gpu"] = available["cuda"] or available["mps"]
    if available[name]:
        check_accelerator(name)
        return
    with pytest.raises(ConfigError, match=rf"trainer.accelerator={name}: this machine has no "
                                          r".*\(available: cpu"):
        check_accelerator(name)
    check_accelerator("cpu")
    check_accelerator("auto")


def test_divergence_is_one_line_naming_the_step_and_the_run_failed(tiny_mnist: Path,
                                                                   store: Path) -> None:
    # eps=0 divides by sqrt(v)=0 where a gradient is exactly zero: NaN within a few steps.
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY, "optimizer.eps=0",
                     "optimizer.eps_mode=paper", store=store)
    line = _one_error_line(done)
    assert re.match(r"error: training diverged: .*\bnan\b.*\bstep \d+", line), line
    (run,) = mlflow_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure"].startswith("NonFiniteLoss: ")


# Runs `python -m src.train ARGS` with every local artifact write failing with `errno`.
_ARTIFACT_WRITES_FAIL = """
import errno, os, runpy, sys
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

def refuse(self, *args, **kwargs):
    code = getattr(errno, os.environ["FAIL_ERRNO"])
    raise OSError(code, os.strerror(code))

LocalArtifactRepository.log_artifact = refuse
sys.argv = ["src.train", *sys.argv[1:]]
runpy.run_module("src.train", run_name="__main__", alter_sys=True)
"""


def test_full_artifact_storage_is_one_line_naming_it(tiny_mnist: Path, store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ARTIFACT_WRITES_FAIL, f"data.root={tiny_mnist}", *TINY],
        cwd=REPO, capture_output=True, text=True, timeout=240,
        env={**os.environ, "FAIL_ERRNO": "ENOSPC",
             "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})
    line = _one_error_line(done)
    (run,) = mlflow_runs(store)
    folder = store / "artifacts" / "mnist-adam" / run.info.run_id / "artifacts"
    assert line == (f"error: cannot write the run's artifacts to {folder}: "
                    "No space left on device")
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_artifact_storage_is_named(tiny_mnist: Path, store: Path, code: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod cannot make a folder read-only for root (CI runs as root), so the write fails here.
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(code, os.strerror(code), str(store / "artifacts"))

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", refuse)
    with pytest.raises(TrackingError, match=re.escape(f"{store / 'artifacts'}/mnist-adam/")
                       + r"\w+/artifacts: " + re.escape(os.strerror(code))):
        train(tiny_config(tiny_mnist, store))
    (run,) = mlflow_runs(store)
    assert run.info.status == "FAILED"


def _corrupt_table_pages(db: Path, tables: tuple[str, ...]) -> None:
    """Overwrite the root pages of `tables` (as a disk fault would), leaving the rest intact."""
    with closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page into the main file
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        roots = [con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                             (table,)).fetchone()[0] for table in tables]
    with db.open("r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(b"\xff" * page_size)


def test_corrupt_store_is_one_line_naming_the_file(tiny_mnist: Path, store: Path) -> None:
    train(tiny_config(tiny_mnist, store))  # a store with runs and metrics
    _corrupt_table_pages(store / "mlflow.db", ("metrics", "latest_metrics"))
    done = run_entry("src.train", f"data.root={tiny_mnist}", *TINY, store=store)
    line = _one_error_line(done)
    assert line.startswith(f"error: the MLflow store {store / 'mlflow.db'} is corrupt "
                           "(database disk image is malformed): restore it from a backup")

def test_help_lists_only_the_groups_a_run_accepts(store: Path) -> None:
    done = run_entry("src.train", "--help", store=store, timeout=120)
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = {line.split(":", 1)[0] for line in section.splitlines()[2:] if ":" in line}
    # `study` belongs to `python -m pipelines.study`, whose search path alone has it.
    assert groups == {"data", "experiment", "model", "optimizer", "tracking", "trainer"}, section
