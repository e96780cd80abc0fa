"""A cheap fingerprint of a dataset's content, to tell whether a checkpoint belongs to it."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np

from mpigd.data.dataset import DatasetInfo

#: Rows hashed at each end of every shard.
EDGE_ROWS = 16


def content_hash(info: DatasetInfo) -> str:
    """SHA-256 over shape, dtype and the first and last rows of ``X`` and ``y`` per shard.

    Reads at most 2 x EDGE_ROWS rows per shard, so it costs milliseconds on any size;
    it catches a different, reordered, resharded-differently or re-generated dataset,
    not a change in the middle of a shard (hashing everything would cost a full pass).
    A sparse dataset hashes its nonzero count too and, for the same rows, their
    ``indptr`` entries, column ids (as int64, whatever the file's integer dtype) and
    values; a dense dataset's hash is what it was before sparse data existed.
    """
    digest = hashlib.sha256()
    digest.update(repr((info.n_rows, info.n_features, str(info.dtype), info.task)).encode())
    if info.sparse:
        digest.update(repr(("csr", info.nnz)).encode())
    for path, rows in zip(info.files, info.rows_per_file, strict=True):
        with h5py.File(path, "r") as handle:
            edges = (slice(0, min(EDGE_ROWS, rows)), slice(max(rows - EDGE_ROWS, 0), rows))
            for part in _edge_parts(handle, edges, info.sparse):
                digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _edge_parts(handle: h5py.File, edges: tuple[slice, slice], sparse: bool):
    """Yield the arrays hashed for the row ranges ``edges`` of one open shard."""
    if not sparse:
        for name in ("X", "y"):
            for rows in edges:
                yield handle[name][rows]
        return
    group = handle["X"]
    for rows in edges:
        indptr = np.asarray(group["indptr"][rows.start : rows.stop + 1], dtype=np.int64)
        entries = slice(int(indptr[0]), int(indptr[-1]))
        yield indptr
        yield np.asarray(group["indices"][entries], dtype=np.int64)
        yield group["data"][entries]
    for rows in edges:
        yield handle["y"][rows]
