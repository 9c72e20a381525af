"""A run's trained network as an MLflow PyTorch model: logged with a signature and an input example.

    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")       # the torch.nn.Module
    logits = model(torch.from_numpy(images).float().div(255))         # images: (N, 28, 28) uint8

The model is the network alone (`nn.Sequential`: Flatten, Linear, ReLU, Dropout, Linear), in
eval mode, pickled whole: loading it needs torch, not this project. Its input is what the
network saw in training, float32 pixels in [0, 1] (x/255), as (N, 784) or (N, 28, 28); its
output the 10 logits. `tracking.log_model` switches it (on for a single run, off in the
many-run pipelines' configs: see conf/).
"""

from __future__ import annotations

import copy
import logging

import torch
from mlflow.tracking import MlflowClient
from torch import nn

MODEL_NAME = "model"  # runs:/<run_id>/model
EXAMPLE_ROWS = 5


def _chosen_format_warning(record: logging.LogRecord) -> bool:
    # MLflow warns on every pickled model that unpickling runs code; pickle is chosen here
    # (see below) and loading one's own runs is the use, so the warning is only noise.
    return not record.getMessage().startswith("Saving pytorch model by Pickle")


def log_network(client: MlflowClient, run_id: str, net: nn.Module, inputs: torch.Tensor,
                step: int) -> None:
    """Log `net` as run `run_id`'s model `model`, with the first rows of `inputs` (float32, as
    the network sees them) as input example and the signature they and the logits imply; the
    run's metrics at `step` (its last epoch) are linked to the model."""
    # Imported here: mlflow.pytorch and the model machinery are paid for only when logging.
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    frozen = copy.deepcopy(net).eval()  # dropout off, as in validation and test
    example = inputs[:EXAMPLE_ROWS].contiguous()
    with torch.no_grad():
        logits = frozen(example)
    signature = infer_signature(example.numpy(), logits.numpy())
    # The fluent API files a model under the active experiment (else "Default", where
    # runs:/<id>/model would not find it): point it at this run's store and experiment.
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    logging.getLogger("mlflow.pytorch").addFilter(_chosen_format_warning)
    mlflow.pytorch.log_model(
        frozen, name=MODEL_NAME, run_id=run_id, step=step, signature=signature,
        input_example=example.numpy(),
        # The whole module pickled (not torch.export's pt2, which fixes the batch size).
        serialization_format="pickle",
        # Stated rather than inferred: inference re-imports the model in a subprocess.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


__all__ = ["MODEL_NAME", "log_network"]
