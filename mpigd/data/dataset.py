"""Open a dataset (one HDF5 file or a directory of shards) and read global row ranges.

The dataset contract (docs/architecture.md): each file holds ``X`` (2-D, float32/float64, shape
``(n_i, d)``) and ``y`` (1-D, length ``n_i``), with root attributes ``task`` and, for
classification, ``n_classes``. Shards of a directory (``*.h5``, sorted by name) form one
table of ``N = sum(n_i)`` rows. Rank ``r`` of ``P`` owns rows ``[r*N//P, (r+1)*N//P)`` and
reads only those, with hyperslab reads straight into one preallocated array.

A sparse dataset stores ``X`` as a CSR group instead (:mod:`mpigd.data.csr`); every shard
is sparse or every shard dense. Its rows are read the same way: each shard's slice of
``indptr`` first, then the hyperslabs of ``indices`` and ``data`` they point to, into one
preallocated array each.

Every function here is serial and MPI-free: the trainer calls them on each rank and agrees
on errors itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from mpigd.data import csr
from mpigd.errors import DataError
from mpigd.paths import dataset_files

TASKS = ("regression", "binary", "multiclass")

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CHECK_ELEMENTS = 1 << 20  # elements per slab when scanning for NaN/Inf (8 MiB of float64)


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a validated dataset; no row data.

    Attributes
    ----------
    path : the file or directory the user gave.
    files : shard files in sorted name order (one entry for a single file).
    rows_per_file : rows ``n_i`` of each file, same order as ``files``.
    n_rows : total rows ``N``.
    n_features : features ``d`` (columns of ``X``).
    dtype : dtype of ``X``, float32 or float64.
    task : one of :data:`TASKS`.
    n_classes : ``C`` for classification (2 for binary), ``None`` for regression.
    sparse : whether ``X`` is stored as CSR groups (:mod:`mpigd.data.csr`).
    nnz : total nonzeros of ``X`` (sparse), ``None`` for a dense dataset.
    index_dtype : dtype the column ids of sparse rows are held in (int32 or int64: int64
        if any shard's ids need it), ``None`` for a dense dataset.
    """

    path: str
    files: tuple[str, ...]
    rows_per_file: tuple[int, ...]
    n_rows: int
    n_features: int
    dtype: np.dtype
    task: str
    n_classes: int | None
    sparse: bool = False
    nnz: int | None = None
    index_dtype: np.dtype | None = None


@dataclass
class LocalRows:
    """The rows ``[start, stop)`` of a dataset, held by one rank.

    Attributes
    ----------
    X : ndarray, shape (stop - start, d), dataset dtype, C-contiguous; for a sparse
        dataset a canonical ``scipy.sparse.csr_matrix`` of that shape (sorted column ids,
        no duplicates), ``data`` of the dataset dtype, ``indptr`` int64 and ``indices``
        of ``DatasetInfo.index_dtype``. Count its rows with ``X.shape[0]``.
    y : ndarray, shape (stop - start,); float64 targets for regression, int64 class ids
        ``0..C-1`` for classification.
    start, stop : global index of the first row and one past the last.
    """

    X: np.ndarray
    y: np.ndarray
    start: int
    stop: int


def open_dataset(path: str | os.PathLike, what: str = "dataset path") -> DatasetInfo:
    """Validate a dataset's metadata (no row data is read) and describe it.

    Parameters
    ----------
    path : an HDF5 file, or a directory whose ``*.h5`` files are the shards.
    what : how messages name the path: the flag that gave it (``--data``), if one did.

    Raises
    ------
    DataError
        If the path or a shard is missing or not a regular file (see
        :func:`mpigd.paths.dataset_files`), a file is not HDF5, ``X``/``y`` are missing
        or malformed (for a CSR group: :func:`mpigd.data.csr.csr_meta`), shards mix
        sparse and dense ``X`` or disagree on features, dtype or task, the task
        attributes are invalid, or the dataset has no rows.
    """
    path = os.fspath(path)
    files = dataset_files(path, what)
    metas = [_file_meta(f) for f in files]
    first_file, first = files[0], metas[0]
    for f, meta in zip(files[1:], metas[1:], strict=True):
        if meta["sparse"] != first["sparse"]:
            kinds = {True: "sparse (CSR) X", False: "dense X"}
            raise DataError(
                f"shards mix sparse and dense data: {first_file} has {kinds[first['sparse']]} "
                f"but {f} has {kinds[meta['sparse']]}"
            )
        for key, what in (("d", "features"), ("dtype", "X dtype"), ("task", "task")):
            if meta[key] != first[key]:
                raise DataError(
                    f"shards disagree on {what}: {first_file} has {first[key]} "
                    f"but {f} has {meta[key]}"
                )
        if meta["n_classes"] != first["n_classes"]:
            raise DataError(
                f"shards disagree on n_classes: {first_file} has {first['n_classes']} "
                f"but {f} has {meta['n_classes']}"
            )
    rows = tuple(m["rows"] for m in metas)
    if sum(rows) == 0:
        raise DataError(f"dataset {path} has no rows")
    sparse = first["sparse"]
    return DatasetInfo(
        path=path,
        files=tuple(files),
        rows_per_file=rows,
        n_rows=sum(rows),
        n_features=first["d"],
        dtype=first["dtype"],
        task=first["task"],
        n_classes=first["n_classes"],
        sparse=sparse,
        nnz=sum(m["nnz"] for m in metas) if sparse else None,
        index_dtype=np.result_type(*(m["index_dtype"] for m in metas)) if sparse else None,
    )


def row_range(n_rows: int, rank: int, size: int) -> tuple[int, int]:
    """Global rows ``[start, stop)`` owned by ``rank`` of ``size``: ``[r*N//P, (r+1)*N//P)``.

    Ranks get ``N//P`` or ``N//P + 1`` rows, contiguous and in rank order.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in 0..{size - 1}")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    return rank * n_rows // size, (rank + 1) * n_rows // size


def load_rank_rows(info: DatasetInfo, rank: int, size: int) -> LocalRows:
    """Read and validate the rows that ``rank`` of ``size`` owns (see :func:`row_range`)."""
    if info.n_rows < size:
        raise DataError(
            f"dataset {info.path} has {info.n_rows} rows but the job has {size} ranks; "
            "each rank needs at least one row"
        )
    return read_rows(info, *row_range(info.n_rows, rank, size))


def read_rows(info: DatasetInfo, start: int, stop: int) -> LocalRows:
    """Read global rows ``[start, stop)``, possibly across shard boundaries, and validate them.

    Each overlapping shard is opened read-only and its hyperslab read directly into one
    preallocated ``X`` of shape ``(stop - start, d)``; no copy of the whole block is made.
    A sparse dataset's rows come from :func:`_read_sparse_rows`.

    Raises
    ------
    DataError
        On NaN/Inf in ``X`` or ``y``, or a classification label that is not an integer
        in ``0..C-1``; for sparse rows also on a decreasing ``indptr`` or column ids out
        of ``0..d-1``, unsorted or repeated within a row. The message names the file and
        the global row.
    """
    _check_range(info, start, stop)
    if info.sparse:
        return _read_sparse_rows(info, start, stop)
    X = np.empty((stop - start, info.n_features), dtype=info.dtype)
    y = np.empty(stop - start, dtype=_label_dtype(info))
    for f, lo, hi, offset in _pieces(info, start, stop):
        out = slice(offset, offset + hi - lo)
        with _open(f) as h5:
            h5["X"].read_direct(X, np.s_[lo:hi], np.s_[out])
            y[out] = _checked_labels(info, f, h5["y"][lo:hi], start + offset)
        bad = first_nonfinite_row(X[out])
        if bad is not None:
            row = X[offset + bad]
            column = int(np.flatnonzero(~np.isfinite(row))[0])
            raise DataError(
                f"file {f} has a non-finite value ({row[column]}) in X at row {lo + bad}, "
                f"column {column} (global row {start + offset + bad})"
            )
    return LocalRows(X=X, y=y, start=start, stop=stop)


def _read_sparse_rows(info: DatasetInfo, start: int, stop: int) -> LocalRows:
    """Read and validate global rows ``[start, stop)`` of a sparse dataset (see read_rows).

    Two passes over the overlapping shards: the first reads each one's slice of
    ``indptr`` (and ``y``), which fixes how many nonzeros the block holds; the second reads
    each shard's hyperslabs of ``indices`` and ``data`` straight into the preallocated
    arrays and checks them there. Nothing outside the rows' own ranges is read.
    """
    y = np.empty(stop - start, dtype=_label_dtype(info))
    spans = []  # (file, lo, hi, offset, its indptr slice)
    for f, lo, hi, offset in _pieces(info, start, stop):
        with _open(f) as h5:
            indptr = csr.read_indptr(f, h5["X"], lo, hi, start + offset)
            y[offset : offset + hi - lo] = _checked_labels(info, f, h5["y"][lo:hi], start + offset)
        spans.append((f, lo, hi, offset, indptr))
    nnz = sum(int(s[4][-1] - s[4][0]) for s in spans)
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=info.index_dtype)
    data = np.empty(nnz, dtype=info.dtype)
    at = 0  # nonzeros of the block read so far
    for f, lo, hi, offset, file_indptr in spans:
        first, last = int(file_indptr[0]), int(file_indptr[-1])
        local = file_indptr - first  # this piece's rows, from 0
        indptr[offset : offset + hi - lo + 1] = local + at
        if last > first:
            out = np.s_[at : at + last - first]
            with _open(f) as h5:
                h5["X"]["indices"].read_direct(indices, np.s_[first:last], out)
                h5["X"]["data"].read_direct(data, np.s_[first:last], out)
            csr.check_entries(f, local, indices[out], info.n_features, lo, start + offset)
            bad = first_nonfinite_row(data[out])
            if bad is not None:
                row = csr.row_of(local, bad)
                raise DataError(
                    f"file {f} has a non-finite value ({data[at + bad]}) in X at row {lo + row}, "
                    f"column {indices[at + bad]} (global row {start + offset + row})"
                )
        at += last - first
    X = csr.assemble((stop - start, info.n_features), data, indices, indptr)
    return LocalRows(X=X, y=y, start=start, stop=stop)


def read_labels(info: DatasetInfo, start: int, stop: int) -> np.ndarray:
    """Read and validate only ``y`` of global rows ``[start, stop)`` (as in :func:`read_rows`)."""
    _check_range(info, start, stop)
    y = np.empty(stop - start, dtype=_label_dtype(info))
    for f, lo, hi, offset in _pieces(info, start, stop):
        with _open(f) as h5:
            y[offset : offset + hi - lo] = _checked_labels(info, f, h5["y"][lo:hi], start + offset)
    return y


def first_nonfinite_row(block: np.ndarray) -> int | None:
    """Index of the first row of ``block`` (shape (n,) or (n, d)) holding NaN/Inf, else None.

    Scans slabs of about ``_CHECK_ELEMENTS`` elements. A slab's sum is finite exactly when
    all its values are, barring overflow, so the elementwise test (and its boolean
    temporary, one slab in size) runs only on a slab whose sum is not finite.
    """
    rows = block.reshape(block.shape[0], -1)
    step = max(1, _CHECK_ELEMENTS // max(1, rows.shape[1]))
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, rows.shape[0], step):
            slab = rows[lo : lo + step]
            if np.isfinite(slab.sum()):
                continue
            bad = np.flatnonzero(~np.isfinite(slab).all(axis=1))
            if bad.size:
                return lo + int(bad[0])
    return None


def _open(f: str) -> h5py.File:
    """Open ``f`` read-only, turning h5py's OSError into a DataError."""
    try:
        return h5py.File(f, "r")
    except OSError as exc:
        if not h5py.is_hdf5(f):
            raise DataError(f"dataset file {f} is not an HDF5 file") from exc
        raise DataError(f"cannot open dataset file {f}: {exc}") from exc


def _file_meta(f: str) -> dict:
    """Shape, dtype and task attributes of one file, validated against the contract."""
    with _open(f) as h5:
        if isinstance(h5.get("X"), h5py.Group):
            return _sparse_file_meta(f, h5)
        for name, what in (("X", "the feature matrix"), ("y", "the labels")):
            if not isinstance(h5.get(name), h5py.Dataset):
                raise DataError(f"file {f} has no dataset '{name}' ({what})")
        X = h5["X"]
        if X.ndim != 2:
            raise DataError(f"dataset 'X' in {f} must be 2-D (rows, features), got shape {X.shape}")
        if X.dtype not in _FLOAT_DTYPES:
            raise DataError(f"dataset 'X' in {f} has dtype {X.dtype}; expected float32 or float64")
        if X.shape[1] < 1:
            raise DataError(f"dataset 'X' in {f} has no feature columns (shape {X.shape})")
        return {
            "rows": int(X.shape[0]),
            "d": int(X.shape[1]),
            "dtype": X.dtype,
            "sparse": False,
            "nnz": None,
            **_labels_meta(f, h5, int(X.shape[0])),
        }


def _sparse_file_meta(f: str, h5: h5py.File) -> dict:
    """:func:`_file_meta` of a file whose ``X`` is a group: checked as CSR."""
    meta = csr.csr_meta(f, h5["X"])
    if not isinstance(h5.get("y"), h5py.Dataset):
        raise DataError(f"file {f} has no dataset 'y' (the labels)")
    return {**meta, "sparse": True, **_labels_meta(f, h5, meta["rows"])}


def _labels_meta(f: str, h5: h5py.File, rows: int) -> dict:
    """Check ``y`` (1-D, numeric, ``rows`` long) and the task attributes of file ``f``."""
    y = h5["y"]
    if y.ndim != 1:
        raise DataError(f"dataset 'y' in {f} must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"dataset 'y' in {f} has non-numeric dtype {y.dtype}")
    if y.shape[0] != rows:
        raise DataError(f"file {f} has {rows} rows in X but {y.shape[0]} in y")
    task = _task_attr(f, h5.attrs)
    n_classes = None if task == "regression" else _n_classes_attr(f, h5.attrs, task)
    return {"task": task, "n_classes": n_classes}


def _task_attr(f: str, attrs: h5py.AttributeManager) -> str:
    """The root attribute ``task``, decoded and checked against :data:`TASKS`."""
    if "task" not in attrs:
        raise DataError(f"file {f} has no root attribute 'task' (one of {', '.join(TASKS)})")
    task = attrs["task"]
    if isinstance(task, np.ndarray) and task.size == 1:
        task = task.item()
    if isinstance(task, bytes):
        task = task.decode("utf-8", "replace")
    if task not in TASKS:
        raise DataError(f"file {f} has task attribute {task!r}; expected one of {', '.join(TASKS)}")
    return task


def _n_classes_attr(f: str, attrs: h5py.AttributeManager, task: str) -> int:
    """The root attribute ``n_classes``: 2 for binary, an integer >= 2 for multiclass."""
    if "n_classes" not in attrs:
        raise DataError(f"file {f} has task {task!r} but no root attribute 'n_classes'")
    value = np.asarray(attrs["n_classes"])
    if value.size != 1 or value.dtype.kind not in "iuf" or not float(value.item()).is_integer():
        raise DataError(f"file {f} has n_classes attribute {value!r}; expected an integer")
    n_classes = int(value.item())
    if task == "binary" and n_classes != 2:
        raise DataError(f"file {f} has task 'binary' but n_classes {n_classes}; expected 2")
    if n_classes < 2:
        raise DataError(f"file {f} has task {task!r} but n_classes {n_classes}; expected >= 2")
    return n_classes


def _check_range(info: DatasetInfo, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= info.n_rows:
        raise ValueError(f"rows [{start}, {stop}) are not within [0, {info.n_rows})")


def _label_dtype(info: DatasetInfo) -> np.dtype:
    return np.dtype(np.float64 if info.task == "regression" else np.int64)


def _pieces(info: DatasetInfo, start: int, stop: int) -> Iterator[tuple[str, int, int, int]]:
    """Yield ``(file, lo, hi, offset)``: file rows ``[lo, hi)`` land at ``offset`` of the block.

    Only files overlapping global rows ``[start, stop)`` are yielded.
    """
    file_start = 0
    for f, n in zip(info.files, info.rows_per_file, strict=True):
        lo, hi = max(start, file_start), min(stop, file_start + n)
        if lo < hi:
            yield f, lo - file_start, hi - file_start, lo - start
        file_start += n


def _checked_labels(info: DatasetInfo, f: str, y: np.ndarray, first_row: int) -> np.ndarray:
    """Validate labels read from ``f`` (global rows from ``first_row``); return them converted.

    Regression targets must be finite; class labels integers in ``0..n_classes-1``.
    """
    if y.dtype.kind == "f":
        bad = first_nonfinite_row(y)
        if bad is not None:
            raise DataError(
                f"file {f} has a non-finite label {y[bad]} at global row {first_row + bad}"
            )
    if info.task == "regression":
        return y
    if y.dtype.kind == "f":
        fractional = np.flatnonzero(y != np.round(y))
        if fractional.size:
            i = fractional[0]
            raise DataError(
                f"file {f} has non-integer class label {y[i]} at global row {first_row + i}"
            )
    outside = np.flatnonzero((y < 0) | (y >= info.n_classes))
    if outside.size:
        i = outside[0]
        raise DataError(
            f"file {f} has class label {y[i]} at global row {first_row + i}, "
            f"outside 0..{info.n_classes - 1}"
        )
    return y
