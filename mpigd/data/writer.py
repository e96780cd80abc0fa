"""Write datasets atomically: rows streamed into shard files under a temporary sibling name.

Shards are ``part-00000.h5``, ``part-00001.h5``, ... holding ``X``, ``y`` (float64 for
regression, int64 class ids for classification) and root attributes ``task``,
``n_classes`` (classification) and any provenance attributes the caller passes. ``N``
rows are split evenly over ``K`` shards, shard ``k`` holding rows ``[k*N//K, (k+1)*N//K)``.

Nothing appears at the output path until everything is written: :func:`staged_output`
hands out a hidden temporary sibling and renames it into place only when the ``with``
block completes, so an interrupted or failed write never leaves a file or directory that
looks like a valid dataset.

Dense rows go through :class:`ShardWriter`, sparse rows (``scipy.sparse`` matrices)
through :class:`SparseShardWriter`, which writes ``X`` in the CSR layout of
:mod:`mpigd.data.csr`; :func:`write_dataset` picks one by the type of ``X``. A typical
streamed write of sparse data (an importer, a generator), never holding all rows::

    sizes = shard_sizes(n_rows, shards)
    with staged_output(out, directory=True) as staged:
        paths = shard_paths(staged, shards)
        with SparseShardWriter(paths, sizes, d, "float32", "binary", 2) as writer:
            for X_block, y_block in blocks:  # csr_matrix (m, d) and (m,), in row order
                writer.write(X_block, y_block)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import h5py
import numpy as np
import scipy.sparse as sp

from mpigd import __version__
from mpigd.data import csr
from mpigd.data.dataset import TASKS
from mpigd.errors import DataError
from mpigd.preemption import raise_if_terminated


def shard_sizes(n_rows: int, n_shards: int) -> list[int]:
    """Rows of each of ``n_shards`` shards: shard ``k`` holds ``[k*N//K, (k+1)*N//K)``."""
    if n_shards < 1:
        raise DataError(f"the number of shards must be >= 1, got {n_shards}")
    if n_shards > n_rows:
        raise DataError(f"cannot split {n_rows} rows into {n_shards} shards; use at most {n_rows}")
    return [(k + 1) * n_rows // n_shards - k * n_rows // n_shards for k in range(n_shards)]


def shard_paths(directory: str, n_shards: int) -> list[str]:
    """``directory/part-00000.h5`` ... for ``n_shards`` shards."""
    return [os.path.join(directory, f"part-{k:05d}.h5") for k in range(n_shards)]


@contextmanager
def staged_output(
    out: str | os.PathLike, *, directory: bool, overwrite: bool = False
) -> Iterator[str]:
    """Yield a temporary path to write to; move it to ``out`` when the block completes.

    Parameters
    ----------
    out : final path of the output file or directory.
    directory : True to stage a (created, empty) directory, False to stage a file path.
    overwrite : replace an existing ``out``. Without it an existing ``out`` that is not
        an empty directory is refused.

    If the block raises, the temporary path is removed and ``out`` is left untouched.
    """
    out = os.path.abspath(os.fspath(out))
    _refuse_existing(out, overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        staged = tmp_dir if directory else os.path.join(tmp_dir, os.path.basename(out))
        yield staged
        raise_if_terminated()  # a stop signal whose exception a finaliser swallowed
        _refuse_existing(out, overwrite)
        _move_into_place(staged, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


class ShardWriter:
    """Write rows, in order, into files of fixed row counts; one file open at a time.

    Parameters
    ----------
    paths : the files to create, in row order.
    rows_per_file : rows of each file (see :func:`shard_sizes`).
    n_features : columns ``d`` of ``X``.
    dtype : dtype of ``X`` in the files, float32 or float64.
    task : ``regression``, ``binary`` or ``multiclass``.
    n_classes : ``C`` for classification, ``None`` for regression.
    attrs : extra root attributes (provenance) written to every file.

    Use as a context manager; :meth:`close` checks that every row was written (and
    creates the files of 0 rows that no row reached).
    """

    def __init__(
        self,
        paths: list[str],
        rows_per_file: list[int],
        n_features: int,
        dtype: str | np.dtype,
        task: str,
        n_classes: int | None = None,
        attrs: Mapping | None = None,
    ):
        if len(paths) != len(rows_per_file):
            raise ValueError("paths and rows_per_file differ in length")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"X dtype must be float32 or float64, got {dtype}")
        if task not in TASKS or (task != "regression" and n_classes is None):
            raise ValueError(f"invalid task {task!r} with n_classes {n_classes}")
        self._paths = list(paths)
        self._rows = list(rows_per_file)
        self._d = n_features
        self._dtype = np.dtype(dtype)
        self._y_dtype = np.dtype(np.float64 if task == "regression" else np.int64)
        self._attrs = {"task": task, "created_by": f"mpigd {__version__}", **(attrs or {})}
        if task != "regression":
            self._attrs["n_classes"] = int(n_classes)
        self._index = -1  # file being written
        self._filled = 0  # rows written to it
        self._file: h5py.File | None = None

    def write(self, X, y: np.ndarray) -> None:
        """Append rows: ``X`` shape (m, d), ``y`` shape (m,)."""
        X = self._block(X)
        if X.ndim != 2 or X.shape[1] != self._d or y.shape != (X.shape[0],):
            raise ValueError(f"expected X (m, {self._d}) and y (m,), got {X.shape} and {y.shape}")
        done = 0
        while done < X.shape[0]:
            if self._file is None or self._filled == self._rows[self._index]:
                self._next_file()
            take = min(X.shape[0] - done, self._rows[self._index] - self._filled)
            self._put_X(X, done, take)
            rows = slice(self._filled, self._filled + take)
            self._file["y"][rows] = np.asarray(y[done : done + take], dtype=self._y_dtype)
            self._filled += take
            done += take

    def close(self) -> None:
        """Close the open file; raise if fewer rows than planned were written."""
        written = sum(self._rows[: self._index]) + self._filled if self._index >= 0 else 0
        if written == sum(self._rows):
            while self._index + 1 < len(self._paths):  # trailing files of 0 rows
                self._next_file()
        self._close_file()
        if written != sum(self._rows):
            raise ValueError(f"wrote {written} of {sum(self._rows)} rows")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_file()

    def _next_file(self) -> None:
        self._close_file()
        self._index += 1
        if self._index == len(self._paths):
            raise ValueError(f"more rows than the {sum(self._rows)} planned")
        n = self._rows[self._index]
        self._file = h5py.File(self._paths[self._index], "w-")
        self._create_X(n)
        self._file.create_dataset("y", shape=(n,), dtype=self._y_dtype)
        self._file.attrs.update(self._attrs)
        self._filled = 0

    def _block(self, X) -> np.ndarray:
        """``X`` as this writer stores it (here: any array)."""
        return np.asarray(X)

    def _create_X(self, n: int) -> None:
        """Create ``X`` of ``n`` rows in the file just opened."""
        self._file.create_dataset("X", shape=(n, self._d), dtype=self._dtype)

    def _put_X(self, X: np.ndarray, done: int, take: int) -> None:
        """Store rows ``done .. done + take - 1`` of the block at the file's next rows."""
        rows = slice(self._filled, self._filled + take)
        self._file["X"][rows] = np.asarray(X[done : done + take], dtype=self._dtype)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SparseShardWriter(ShardWriter):
    """Write sparse rows, in order, into CSR shard files (:mod:`mpigd.data.csr`) of fixed
    row counts; one file open at a time, as :class:`ShardWriter` (same parameters).

    :meth:`write` takes any ``scipy.sparse`` matrix of shape (m, d) (made canonical CSR:
    column ids sorted, duplicates summed; explicit zeros are kept) and ``y`` of shape
    (m,), and appends them: the file's ``indptr`` (int64, ``n + 1`` entries) is filled
    in place, ``data`` and ``indices`` grow (chunked, resizable datasets) by the block's
    nonzeros. Column ids are stored as int32 when ``d <= 2**31``, else int64. Memory is
    the block's; a file holds any number of nonzeros.
    """

    #: elements per HDF5 chunk of ``data`` and ``indices`` (256-512 KiB)
    CHUNK_ENTRIES = 1 << 16

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._index_dtype = np.dtype(np.int32 if self._d <= 2**31 else np.int64)
        self._nnz = 0  # nonzeros written to the open file

    def _block(self, X) -> sp.csr_matrix:
        if not sp.issparse(X):
            raise ValueError(f"expected a scipy.sparse matrix, got {type(X).__name__}")
        X = sp.csr_matrix(X)
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        return X

    def _create_X(self, n: int) -> None:
        group = self._file.create_group("X")
        csr.set_csr_attrs(group, (n, self._d))
        for name, dtype in (("data", self._dtype), ("indices", self._index_dtype)):
            group.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(self.CHUNK_ENTRIES,), dtype=dtype
            )
        group.create_dataset("indptr", data=np.zeros(n + 1, dtype=np.int64))
        self._nnz = 0

    def _put_X(self, X: sp.csr_matrix, done: int, take: int) -> None:
        group = self._file["X"]
        first, last = int(X.indptr[done]), int(X.indptr[done + take])
        grown = self._nnz + last - first
        for name, values in (("data", X.data), ("indices", X.indices)):
            group[name].resize((grown,))
            group[name][self._nnz : grown] = values[first:last]
        ends = X.indptr[done + 1 : done + take + 1].astype(np.int64) - first + self._nnz
        group["indptr"][self._filled + 1 : self._filled + take + 1] = ends
        self._nnz = grown


def write_dataset(
    out: str | os.PathLike,
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    n_classes: int | None = None,
    shards: int = 1,
    attrs: Mapping | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write in-memory arrays as a dataset, atomically; return the final file paths.

    ``out`` becomes a single HDF5 file when ``shards == 1`` and it ends in ``.h5``,
    otherwise a directory of ``shards`` shard files. ``X`` (shape (N, d)) keeps its dtype;
    a ``scipy.sparse`` ``X`` is written in the CSR layout (:class:`SparseShardWriter`).
    """
    out = os.path.abspath(os.fspath(out))
    sizes = shard_sizes(X.shape[0], shards)
    single = shards == 1 and out.endswith(".h5")
    kind = SparseShardWriter if sp.issparse(X) else ShardWriter
    with staged_output(out, directory=not single, overwrite=overwrite) as staged:
        paths = [staged] if single else shard_paths(staged, shards)
        with kind(paths, sizes, X.shape[1], X.dtype, task, n_classes, attrs) as writer:
            writer.write(X, y)
    return [out] if single else shard_paths(out, shards)


def _refuse_existing(out: str, overwrite: bool) -> None:
    if overwrite or not os.path.lexists(out):
        return
    if os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        return
    raise DataError(f"output {out} already exists; remove it or choose another output path")


def _move_into_place(staged: str, out: str) -> None:
    """Rename ``staged`` to ``out``, replacing an empty directory or (if allowed) anything."""
    if not os.path.lexists(out):
        os.rename(staged, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rename(out, os.path.join(old, "previous"))
    try:
        os.rename(staged, out)
    except OSError:
        os.rename(os.path.join(old, "previous"), out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
