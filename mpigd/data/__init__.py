"""The data layer: HDF5 datasets, row ranges per rank, validation, synth/digits/import/inspect.

A dataset is one HDF5 file or a directory of shards (docs/architecture.md, "Dataset format").
:func:`open_dataset` validates the metadata, :func:`load_rank_rows` reads one rank's
contiguous rows; nothing here uses MPI (a parallel libsvm import gets its ranks'
collective as a ``team`` object, :mod:`mpigd.data.libsvm`).

=====================  ===========================================================
module                 job
=====================  ===========================================================
``dataset``            open and validate a dataset, read and check row ranges
``csr``                the sparse (CSR) layout of ``X`` on disk and its checks
``writer``             write dense or CSR shard files atomically (synth, import)
``synth``              synthetic data with a known true model
``importers``          libsvm / CSV / npz / IDX to HDF5
``libsvm``             libsvm to sparse shards, in chunks, on every rank of a team
``csv_reader``         parse a numeric CSV table (for ``importers``)
``idx``                read MNIST-style IDX image and label files (for ``importers``)
``digits``             scikit-learn's 8x8 digits as train/test datasets
``inspect``            summary of a dataset: size, shards, label distribution
=====================  ===========================================================
"""

from mpigd.data.dataset import (
    TASKS,
    DatasetInfo,
    LocalRows,
    load_rank_rows,
    open_dataset,
    read_labels,
    read_rows,
    row_range,
)
from mpigd.data.digits import write_digits
from mpigd.data.idx import read_idx, read_idx_pair
from mpigd.data.importers import FORMATS, import_file
from mpigd.data.inspect import inspect_dataset
from mpigd.data.synth import write_synthetic
from mpigd.data.writer import write_dataset

__all__ = [
    "FORMATS",
    "TASKS",
    "DatasetInfo",
    "LocalRows",
    "import_file",
    "inspect_dataset",
    "load_rank_rows",
    "open_dataset",
    "read_idx",
    "read_idx_pair",
    "read_labels",
    "read_rows",
    "row_range",
    "write_dataset",
    "write_digits",
    "write_synthetic",
]
