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

from src.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "src.data.arrays": ("MnistArrays", "load_arrays"),
    "src.data.datamodule": ("InMemoryBatches", "MNISTDataModule", "unit_scale"),
    "src.data.idx": ("MAGIC_IMAGES", "MAGIC_LABELS", "file_md5", "read_idx", "read_idx_and_md5",
                     "write_idx"),
    "src.data.sources": ("DATASETS", "FASHION_MNIST", "MNIST", "ROLES", "DatasetSpec",
                         "default_root", "download", "find_files", "locate_files"),
    "src.errors": ("DataError",),
}, globals())
