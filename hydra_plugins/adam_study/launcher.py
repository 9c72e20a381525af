"""The multirun launcher: `python -m src.train -m ...` as one comparison, in worker processes.

Selected in conf/config.yaml (`override hydra/launcher: processes`). Hydra's sweeper expands
the sweep into jobs and hands them here; `pipelines.multirun` validates them all, trains them
in the project's worker pool (one torch thread each), nests each under one MLflow parent run
and writes the comparison's report. `hydra.launcher.workers=N` sets the pool's size.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner runs this module before it
# is in sys.modules, where dataclasses would look string annotations up.
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class ProcessPoolLauncherConf:
    _target_: str = "hydra_plugins.adam_study.launcher.ProcessPoolLauncher"
    workers: int | None = None  # None: one process per CPU core (never more than jobs)


ConfigStore.instance().store(group="hydra/launcher", name="processes",
                             node=ProcessPoolLauncherConf, provider="adam-study")


class ProcessPoolLauncher(Launcher):
    """Runs a sweep's jobs as `pipelines.multirun` does (the task function is not called: each
    job is one `src.run.train` in a worker, as in `+experiment=compare`)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from pipelines.multirun import launch  # imported only for a sweep: it pulls in torch

        assert self.config is not None and self.hydra_context is not None
        return launch(self.hydra_context, self.config, job_overrides, initial_job_idx,
                      self.workers)
