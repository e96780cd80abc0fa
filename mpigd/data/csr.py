"""The sparse (CSR) layout of ``X`` on disk: anndata's ``csr_matrix`` encoding.

A sparse dataset file stores ``X`` as an HDF5 *group* instead of a 2-D dataset, holding

==========  ==============================  ===========================================
name        dtype, shape                    meaning
==========  ==============================  ===========================================
``data``    float32 or float64, ``(nnz,)``  the nonzero values, row by row
``indices`` int32 or int64, ``(nnz,)``      their column ids, strictly increasing
                                            within a row, in ``0..d-1``
``indptr``  int64, ``(n + 1,)``             row ``i``'s nonzeros are positions
                                            ``indptr[i] .. indptr[i+1]-1``;
                                            ``indptr[0] = 0``, ``indptr[n] = nnz``
==========  ==============================  ===========================================

with the group attributes ``encoding-type = "csr_matrix"``, ``encoding-version =
"0.1.0"`` and ``shape = (n, d)``, exactly as anndata writes a ``scipy.sparse`` matrix
(``anndata.io.read_elem`` opens it). ``y`` and the root attributes are those of a
dense file. In memory such rows are a canonical ``scipy.sparse.csr_matrix``.

Validation is in two parts, both serial and MPI-free: :func:`csr_meta` checks what opening
a file can check cheaply (attributes, names, ranks, dtypes, lengths, the two ends of
``indptr``); :func:`read_indptr` and :func:`check_entries` check the rows a rank reads
(``indptr`` monotone, column ids in range and strictly increasing within each row), in
chunks, so that their temporaries stay small whatever the rank's share of nonzeros.
Any other integer dtype of ``indices`` or ``indptr`` is accepted too and converted on
reading (see :func:`memory_index_dtype`).
"""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp

from mpigd.errors import DataError

ENCODING_TYPE = "csr_matrix"
ENCODING_VERSION = "0.1.0"
PARTS = ("data", "indices", "indptr")

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CHECK_ENTRIES = 1 << 22  # indices compared at a time (16-32 MiB of temporaries)


def write_csr(parent: h5py.Group, name: str, matrix: sp.csr_matrix) -> h5py.Group:
    """Write ``matrix`` under ``parent[name]`` in the layout above (indptr as int64).

    ``matrix`` is written as given: it must already be canonical (sorted indices, no
    duplicates) for the file to be valid.
    """
    group = parent.create_group(name)
    set_csr_attrs(group, matrix.shape)
    group.create_dataset("data", data=matrix.data)
    group.create_dataset("indices", data=matrix.indices)
    group.create_dataset("indptr", data=np.asarray(matrix.indptr, dtype=np.int64))
    return group


def set_csr_attrs(group: h5py.Group, shape: tuple[int, int]) -> None:
    """Mark ``group`` as a ``csr_matrix`` of ``shape = (n, d)`` (anndata's attributes)."""
    group.attrs["encoding-type"] = ENCODING_TYPE
    group.attrs["encoding-version"] = ENCODING_VERSION
    group.attrs["shape"] = np.asarray(shape, dtype=np.int64)


def csr_meta(f: str, group: h5py.Group) -> dict:
    """Check the metadata of the CSR group ``X`` of file ``f``; read two values of indptr.

    Returns
    -------
    dict : ``rows`` (n), ``d``, ``dtype`` (of ``data``), ``nnz`` and ``index_dtype`` (the
    in-memory dtype of the column ids, :func:`memory_index_dtype`).

    Raises
    ------
    DataError
        If an encoding attribute or ``shape`` is missing or wrong, a part is missing,
        not 1-D or of the wrong dtype, or the lengths and the ends of ``indptr`` do not
        match ``shape`` and ``len(data)``.
    """
    where = f"sparse X in {f}"
    encoding = _text_attr(group.attrs, "encoding-type")
    if encoding != ENCODING_TYPE:
        raise DataError(
            f"{where} has encoding-type {encoding!r}; expected {ENCODING_TYPE!r} "
            "(X must be a 2-D dataset or a CSR group)"
        )
    version = _text_attr(group.attrs, "encoding-version")
    if version != ENCODING_VERSION:
        raise DataError(f"{where} has encoding-version {version!r}; expected {ENCODING_VERSION!r}")
    shape = np.asarray(group.attrs.get("shape", []))
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any():
        raise DataError(
            f"{where} has shape attribute {shape.tolist()!r}; expected (rows, features)"
        )
    n, d = (int(v) for v in shape)
    if d < 1:
        raise DataError(f"{where} has no feature columns (shape {(n, d)})")
    for part in PARTS:
        if not isinstance(group.get(part), h5py.Dataset):
            raise DataError(f"{where} has no dataset '{part}'")
        if group[part].ndim != 1:
            raise DataError(f"{where} has '{part}' of shape {group[part].shape}; expected 1-D")
    data, indices, indptr = (group[part] for part in PARTS)
    if data.dtype not in _FLOAT_DTYPES:
        raise DataError(f"{where} has 'data' of dtype {data.dtype}; expected float32 or float64")
    for part in (indices, indptr):
        if part.dtype.kind not in "iu":
            raise DataError(
                f"{where} has '{part.name.rsplit('/', 1)[-1]}' of dtype {part.dtype}; "
                "expected an integer dtype"
            )
    if indptr.shape[0] != n + 1:
        raise DataError(
            f"{where} has {indptr.shape[0]} indptr entries for {n} rows; expected {n + 1}"
        )
    nnz = int(data.shape[0])
    if indices.shape[0] != nnz:
        raise DataError(f"{where} has {indices.shape[0]} indices but {nnz} data values")
    ends = (int(indptr[0]), int(indptr[n]))
    if ends != (0, nnz):
        raise DataError(
            f"{where} has indptr[0] = {ends[0]} and indptr[{n}] = {ends[1]}; expected 0 and {nnz} "
            "(the number of data values)"
        )
    return {
        "rows": n,
        "d": d,
        "dtype": data.dtype,
        "nnz": nnz,
        "index_dtype": memory_index_dtype(indices.dtype),
    }


def memory_index_dtype(file_dtype: np.dtype) -> np.dtype:
    """The dtype column ids are held in: int32 or int64 as in the file; other integer
    dtypes become the smallest of the two that holds all their values."""
    file_dtype = np.dtype(file_dtype)
    return np.dtype(np.int32 if np.can_cast(file_dtype, np.int32) else np.int64)


def read_indptr(f: str, group: h5py.Group, lo: int, hi: int, first_row: int) -> np.ndarray:
    """``indptr[lo : hi + 1]`` of the CSR group of file ``f``, as int64, checked.

    ``first_row`` is the global index of file row ``lo``, for messages. The slice must be
    non-decreasing and within ``[0, nnz]``, so the hyperslabs of ``indices`` and ``data``
    it points to exist (:func:`csr_meta` checked the file's two ends already).
    """
    indptr = np.asarray(group["indptr"][lo : hi + 1], dtype=np.int64)
    nnz = group["data"].shape[0]
    down = np.flatnonzero(indptr[1:] < indptr[:-1])
    if down.size:
        k = int(down[0])
        raise DataError(
            f"file {f} has indptr decreasing at row {lo + k} (global row {first_row + k}): "
            f"indptr[{lo + k}] = {indptr[k]} > indptr[{lo + k + 1}] = {indptr[k + 1]}"
        )
    if indptr[0] < 0 or indptr[-1] > nnz:
        k = 0 if indptr[0] < 0 else int(np.flatnonzero(indptr > nnz)[0])
        row = max(k - 1, 0)  # indptr[k] ends row k - 1 (starts row 0 when k = 0)
        raise DataError(
            f"file {f} has indptr[{lo + k}] = {indptr[k]} outside 0..{nnz} at row {lo + row} "
            f"(global row {first_row + row})"
        )
    return indptr


def check_entries(
    f: str, indptr: np.ndarray, indices: np.ndarray, d: int, lo: int, first_row: int
) -> None:
    """Check the column ids of file rows ``lo..`` as read: in ``0..d-1``, strictly
    increasing within each row.

    ``indptr`` is the rows' slice of the file's indptr shifted to start at 0 (so
    ``indices[indptr[i]:indptr[i+1]]`` are row ``lo + i``'s column ids); ``first_row`` is
    the global index of row ``lo``. Works on chunks of the entries.
    """
    for p in range(0, indices.shape[0], _CHECK_ENTRIES):
        chunk = indices[p : p + _CHECK_ENTRIES]
        if chunk.min() < 0 or chunk.max() >= d:
            j = p + int(np.flatnonzero((chunk < 0) | (chunk >= d))[0])
            row = row_of(indptr, j)
            raise DataError(
                f"file {f} has column index {indices[j]} at row {lo + row} "
                f"(global row {first_row + row}), outside 0..{d - 1}"
            )
        # pairs (j, j+1) that do not increase, the last one straddling into the next chunk
        after = indices[p + 1 : p + 1 + chunk.shape[0]]
        j = p + np.flatnonzero(after <= chunk[: after.shape[0]])
        # ... and do not straddle a row boundary (j + 1 starts a row)
        k = np.minimum(np.searchsorted(indptr, j + 1), indptr.shape[0] - 1)
        j = j[indptr[k] != j + 1]
        if j.size:
            j = int(j[0])
            row = row_of(indptr, j)
            a, b = indices[j], indices[j + 1]
            what = (
                f"repeated column index {a}"
                if a == b
                else f"unsorted column indices ({a} before {b})"
            )
            raise DataError(f"file {f} has {what} in row {lo + row} (global row {first_row + row})")


def row_of(indptr: np.ndarray, position: int) -> int:
    """The row (from 0) whose entries include ``position``, given a non-decreasing indptr."""
    return int(np.searchsorted(indptr, position, side="right")) - 1


def assemble(
    shape: tuple[int, int], data: np.ndarray, indices: np.ndarray, indptr: np.ndarray
) -> sp.csr_matrix:
    """A ``csr_matrix`` holding exactly these (already validated, canonical) arrays.

    The constructor is bypassed because it would rescan every column id and may
    re-type the arrays; the rows keep ``indptr`` int64 and ``indices`` their own dtype.
    """
    matrix = sp.csr_matrix(shape, dtype=data.dtype)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    matrix.has_sorted_indices = True
    matrix.has_canonical_format = True
    return matrix


def _text_attr(attrs: h5py.AttributeManager, name: str) -> str | None:
    value = attrs.get(name)
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value
