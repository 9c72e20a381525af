"""MNIST-format (IDX) datasets: from files on disk (or a mirror) to in-memory batches.

- :mod:`src.data.idx`: the IDX format (parse, validate, write) and the parse cache;
- :mod:`src.data.sources`: the datasets, finding their files, downloading from mirrors;
- :mod:`src.data.arrays`: a dataset's four arrays, checked against each other;
- :mod:`src.data.datamodule`: in-memory batches and the LightningDataModule.

Every problem with the data raises :class:`DataError` with a single self-contained line naming
the file or directory, because the CLI prints ``str(err)`` and exits.

The names below are imported from their submodule on first use (PEP 562), so that the config
can read the dataset registry, and the CLI name DataError, without importing numpy, torch and
Lightning, which only the datamodule needs.
"""

from __future__ import annotations

import importlib

_HOMES: dict[str, tuple[str, ...]] = {
    "src.data.arrays": ("MnistArrays", "load_arrays"),
    "src.data.datamodule": ("InMemoryBatches", "MNISTDataModule", "unit_scale"),
    "src.data.idx": ("MAGIC_IMAGES", "MAGIC_LABELS", "file_md5", "read_idx", "read_idx_and_md5",
                     "write_idx"),
    "src.data.sources": ("DATASETS", "FASHION_MNIST", "MNIST", "ROLES", "DatasetSpec",
                         "default_root", "download", "locate_files"),
    "src.errors": ("DataError",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> object:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
