"""The worker processes of the pipelines: forked from a server that has imported the stack.

forkserver rather than fork, because the parent has threads by then (MLflow, SQLAlchemy)
and forking a threaded process is unsafe; rather than spawn, because each spawned worker
would import torch, Lightning and MLflow again (~4 s). The server imports them once, and
every worker is a cheap fork of it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
from collections.abc import Sequence

# What every training worker needs, including MLflow's SQL store (imported on first use,
# ~0.7 s per worker otherwise).
PRELOAD = ("src.run", "src.model", "mlflow.store.tracking.sqlalchemy_store")


def forkserver(extra: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started now.

    Called before the parent checks the data and opens the MLflow store, so the server's
    imports run on another core meanwhile instead of when the first worker is needed. The
    preload list only counts for the server's first start in this process.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *extra])
    multiprocessing.forkserver.ensure_running()
    return context
