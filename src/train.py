"""`python -m src.train [overrides]`: one training run, or the pipeline an experiment names.

    python -m src.train optimizer.betas=[0.1,0.1] seed=3
    python -m src.train +experiment=compare          # many runs + a report (pipelines/)

The config is composed and validated before torch, Lightning or MLflow is imported, so
`--help` and a refused command answer at once; the run's modules are imported after that.
"""

from __future__ import annotations

import time
from pathlib import Path

STARTED = time.perf_counter()  # before the heavy imports: start-up is measured from here

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src import config as schema  # noqa: E402
from src.cli import hydra_entry, user_errors  # noqa: E402
from src.data.sources import DATASETS, find_files  # noqa: E402
from src.errors import DivergedError  # noqa: E402

schema.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        config = schema.to_config(cfg)
        # Missing data files are refused (or fetched) before torch, Lightning and MLflow load.
        find_files(DATASETS[config.data.name], Path(config.data.root), config.data.download)
        if config.pipeline:
            # Multi-run experiments live in pipelines/; reached by name, never imported here.
            return hydra.utils.get_method(config.pipeline)(cfg)
        return train_once(config)


def train_once(config: schema.Config) -> float | None:
    """The single run: train, report its metrics and where the time went, or why it stopped."""
    from src.model import NonFiniteLoss
    from src.run import describe, train

    print(f"training: {describe(config)}, {config.trainer.max_epochs} epochs", flush=True)
    try:
        outcome = train(config, started=STARTED)
    except NonFiniteLoss as err:
        # The run is recorded FAILED with the reason; for the user it is a setting to change.
        raise DivergedError(f"training diverged: {err}") from err
    print(f"run {outcome.run_id}: " + ", ".join(
        f"{k}={v:.4f}" for k, v in sorted(outcome.final.items())), flush=True)
    print(f"time: start-up {outcome.startup_seconds:.1f} s (imports, data, store), "
          f"training {outcome.seconds - outcome.startup_seconds:.1f} s", flush=True)
    return outcome.final.get("val/acc")


if __name__ == "__main__":
    hydra_entry(main)
