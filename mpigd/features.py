"""Which features a batch of sparse rows touches, and the batch renumbered to them.

A mini-batch of CSR rows (``scipy.sparse.csr_matrix``, sorted indices, no duplicates)
reads only the weights of the features its nonzeros name. The sparse exchange sends
gradients at those features only, and a sharded parameter server sends a worker only
their weights; both start from :func:`batch_features`. :func:`compact_rows` renumbers the
batch's columns to positions in that list, so that a model of ``len(features)`` features
computes the batch's loss and gradient on the pulled weights alone. Both cost
O(nnz log nnz) of the batch, never O(d).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def batch_nonzeros(X: sp.csr_matrix, rows: np.ndarray | None) -> np.ndarray:
    """Positions in ``X.indices``/``X.data`` of the nonzeros of ``rows`` (None: all rows),
    row by row in the order of ``rows``; int64."""
    if rows is None:
        return np.arange(X.indptr[-1], dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = X.indptr[rows], X.indptr[rows + 1]
    lengths = stops - starts
    total = int(lengths.sum())
    # position k of row j's run is starts[j] + k: a ramp restarted at each row's start
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def batch_features(X: sp.csr_matrix, rows: np.ndarray | None) -> np.ndarray:
    """Sorted unique column ids (int64) of the nonzeros of ``rows`` (None: all rows)."""
    columns = X.indices if rows is None else X.indices[batch_nonzeros(X, rows)]
    return sorted_unique(columns)


def sorted_unique(values: np.ndarray, kind: str = "quicksort") -> np.ndarray:
    """``np.unique(values)`` as int64, by a sort and a pass dropping repeats: numpy 2's
    ``np.unique`` hashes first and is 15-200x slower on the 10^4-10^5 column ids of a
    batch, a cost paid every step. ``kind="stable"`` merges sorted runs faster."""
    ordered = np.sort(values, kind=kind).astype(np.int64, copy=False)
    if ordered.size:
        keep = np.empty(ordered.size, dtype=bool)
        keep[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
        ordered = ordered[keep]
    return ordered


def column_square_sums(X) -> np.ndarray:
    """Σ_i x_ij² of every column j of ``X`` (dense (n, d), or CSR), float64 (d,); one
    pass over the values (L-BFGS's diagonal preconditioner, summed over the ranks)."""
    if sp.issparse(X):
        squares = np.square(X.data, dtype=np.float64)
        return np.bincount(X.indices, weights=squares, minlength=X.shape[1])
    return np.einsum("ij,ij->j", X, X, dtype=np.float64)


def compact_rows(X: sp.csr_matrix, rows: np.ndarray | None, features: np.ndarray) -> sp.csr_matrix:
    """The rows ``rows`` of ``X`` (None: all) as a CSR matrix of ``len(features)`` columns,
    column ``j`` of the result being column ``features[j]`` of ``X``.

    ``features`` must be sorted and hold every column the rows use (as
    :func:`batch_features` returns); the order of the rows and of each row's entries is
    kept, so the result is canonical CSR again.
    """
    positions = batch_nonzeros(X, rows)
    columns = np.searchsorted(features, X.indices[positions])
    if rows is None:
        indptr = np.asarray(X.indptr, dtype=np.int64)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        lengths = X.indptr[rows + 1] - X.indptr[rows]
        indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return sp.csr_matrix(
        (X.data[positions], columns.astype(X.indices.dtype), indptr),
        shape=(len(indptr) - 1, len(features)),
    )
