"""src.logged_model: a run's network as an MLflow model that reproduces the run's test accuracy."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from src.config import Config, DataConfig, OptimizerConfig, TrackingConfig, TrainerConfig
from src.data import MNIST, read_idx
from src.run import train
from tests.studies import composed as study_composed
from tests.test_config import composed


def _config(root: Path, store: Path, log_model: bool = True) -> Config:
    # A small step size leaves some test digits wrong, so that matching accuracies say something.
    return Config(data=DataConfig(root=str(root), val_size=100, download=False),
                  optimizer=OptimizerConfig(lr=3e-5), trainer=TrainerConfig(max_epochs=1),
                  tracking=TrackingConfig(uri=f"sqlite:///{store / 'mlflow.db'}",
                                          log_model=log_model))


def test_the_logged_model_reproduces_the_runs_test_accuracy(tiny_mnist: Path,
                                                            store: Path) -> None:
    outcome = train(_config(tiny_mnist, store))
    logged = outcome.final["test/acc"]
    assert 0.0 < logged < 1.0, logged
    images = read_idx(tiny_mnist / MNIST.files["test_images"])  # (N, 28, 28) uint8
    labels = read_idx(tiny_mnist / MNIST.files["test_labels"])
    x = torch.tensor(images).float().div(255)  # what the network saw: pixels in [0, 1]

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    uri = f"runs:/{outcome.run_id}/model"
    model = mlflow.pytorch.load_model(uri)
    assert not model.training  # dropout off, as in the run's test
    with torch.no_grad():
        correct = int((model(x).argmax(1).numpy() == labels).sum())
    # Exactly the run's number: the same count, and the same float32 that torchmetrics logged.
    assert correct == round(logged * len(labels))
    assert np.float32(correct) / np.float32(len(labels)) == np.float32(logged)

    served = mlflow.pyfunc.load_model(uri)
    signature = served.metadata.signature.to_dict()
    assert "float32" in signature["inputs"] and "[-1, 784]" in signature["inputs"]
    assert "[-1, 10]" in signature["outputs"]
    logits = served.predict(x.reshape(len(x), -1).numpy())
    assert int((logits.argmax(1) == labels).sum()) == correct

    local = mlflow.artifacts.download_artifacts(uri)
    example = Model.load(local).load_input_example(local)
    assert example.shape == (5, 784) and example.dtype == np.float32
    assert example.min() >= 0.0 and example.max() <= 1.0


def test_no_model_is_logged_when_switched_off(tiny_mnist: Path, store: Path) -> None:
    outcome = train(_config(tiny_mnist, store, log_model=False))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    with pytest.raises(MlflowException):
        mlflow.pytorch.load_model(f"runs:/{outcome.run_id}/model")


def test_models_are_logged_by_single_runs_not_by_the_many_run_pipelines() -> None:
    assert composed().tracking.log_model is True
    assert composed("+experiment=compare").tracking.log_model is False
    assert composed("+experiment=beta_grid").tracking.log_model is False
    assert composed("+experiment=bias_correction").tracking.log_model is False
    assert study_composed().tracking.log_model is False  # the trials; a replay logs again
