"""MNIST-format (IDX) datasets: from files on disk (or a mirror) to in-memory batches.

- :mod:`src.data.idx`: the IDX format (parse, validate, write) and the parse cache;
- :mod:`src.data.sources`: the datasets, finding their files, downloading from mirrors;
- :mod:`src.data.arrays`: a dataset's four arrays, checked against each other;
- :mod:`src.data.datamodule`: in-memory batches and the LightningDataModule.

Every problem with the data raises :class:`DataError` with a single self-contained line naming
the file or directory, because the CLI prints ``str(err)`` and exits.
"""

from src.data.arrays import MnistArrays, load_arrays
from src.data.datamodule import InMemoryBatches, MNISTDataModule, unit_scale
from src.data.idx import (
    MAGIC_IMAGES,
    MAGIC_LABELS,
    DataError,
    file_md5,
    read_idx,
    read_idx_and_md5,
    write_idx,
)
from src.data.sources import (
    DATASETS,
    FASHION_MNIST,
    MNIST,
    ROLES,
    DatasetSpec,
    default_root,
    download,
    locate_files,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "MAGIC_IMAGES",
    "MAGIC_LABELS",
    "MNIST",
    "ROLES",
    "DataError",
    "DatasetSpec",
    "InMemoryBatches",
    "MNISTDataModule",
    "MnistArrays",
    "default_root",
    "download",
    "file_md5",
    "load_arrays",
    "locate_files",
    "read_idx",
    "read_idx_and_md5",
    "unit_scale",
    "write_idx",
]
