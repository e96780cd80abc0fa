"""Summarise a dataset: size, shards, and the label distribution (``mpigd data inspect``).

For a sparse dataset also its nonzeros: count, density, per row, and the most frequent
features, streamed through :func:`~mpigd.data.dataset.read_rows` in row chunks of about
:data:`SPARSE_CHUNK_ENTRIES` nonzeros, so every row is validated as training would and
memory holds one chunk plus a count per feature (8 bytes each).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from mpigd.data.dataset import DatasetInfo, open_dataset, read_labels, read_rows

LABEL_CHUNK_ROWS = 1 << 20  # labels read at a time
SPARSE_CHUNK_ENTRIES = 1 << 22  # nonzeros read at a time, on average (48-64 MiB)
TOP_FEATURES = 10  # most frequent features listed


def inspect_dataset(path: str | os.PathLike) -> dict:
    """Describe the dataset at ``path``; reads the metadata and ``y``, and ``X`` only if
    it is sparse.

    Returns
    -------
    dict : JSON-serialisable, with ``path``, ``rows``, ``features``, ``dtype``, ``task``,
    ``n_classes``, ``shards`` (list of ``{"file", "rows"}``) and either ``class_counts``
    and ``class_fractions`` (classification, index = class id) with ``label_values``
    (the original label of each class, as an import recorded them; None if it did not)
    or ``y`` with ``mean``, ``std``, ``min``, ``max`` (regression); ``sparse``; for a
    sparse dataset ``nnz``, ``density`` (``nnz / (rows * features)``), ``nnz_per_row``
    (``mean``, ``min``, ``max``), ``features_used`` (features with a nonzero) and
    ``top_features`` (the :data:`TOP_FEATURES` most frequent: ``feature``, ``count`` =
    rows holding it, ``row_fraction``; ties by feature id). Labels (and sparse rows) are
    validated as in training, so a NaN target or out-of-range class raises
    :class:`~mpigd.errors.DataError`.
    """
    info = open_dataset(path)
    summary = {
        "path": info.path,
        "rows": info.n_rows,
        "features": info.n_features,
        "dtype": info.dtype.name,
        "task": info.task,
        "n_classes": info.n_classes,
        "sparse": info.sparse,
        "shards": [
            {"file": f, "rows": n} for f, n in zip(info.files, info.rows_per_file, strict=True)
        ],
    }
    chunks = (
        read_labels(info, start, min(start + LABEL_CHUNK_ROWS, info.n_rows))
        for start in range(0, info.n_rows, LABEL_CHUNK_ROWS)
    )
    if info.task == "regression":
        summary["y"] = _moments(chunks)
    else:
        counts = sum(np.bincount(y, minlength=info.n_classes) for y in chunks)
        summary["class_counts"] = [int(c) for c in counts]
        summary["class_fractions"] = [float(c) / info.n_rows for c in counts]
        summary["label_values"] = _label_values(info.files[0])
    if info.sparse:
        summary.update(_nonzeros(info))
    return summary


def _nonzeros(info: DatasetInfo) -> dict:
    """The nonzero statistics of a sparse dataset, streamed in row chunks (module docstring)."""
    chunk_rows = max(1, SPARSE_CHUNK_ENTRIES * info.n_rows // max(info.nnz, 1))
    counts = np.zeros(info.n_features, dtype=np.int64)  # rows holding each feature
    low, high = info.nnz, 0
    for start in range(0, info.n_rows, chunk_rows):
        X = read_rows(info, start, min(start + chunk_rows, info.n_rows)).X
        per_row = np.diff(X.indptr)
        low, high = min(low, int(per_row.min())), max(high, int(per_row.max()))
        seen = np.bincount(X.indices)
        counts[: seen.size] += seen
    return {
        "nnz": info.nnz,
        "density": info.nnz / (info.n_rows * info.n_features),
        "nnz_per_row": {"mean": info.nnz / info.n_rows, "min": low, "max": high},
        "features_used": int(np.count_nonzero(counts)),
        "top_features": [
            {"feature": int(j), "count": int(counts[j]), "row_fraction": counts[j] / info.n_rows}
            for j in _most_frequent(counts, TOP_FEATURES)
        ],
    }


def _most_frequent(counts: np.ndarray, k: int) -> np.ndarray:
    """Ids of the ``k`` largest nonzero ``counts``, largest first, ties by smaller id; O(d)
    to find the candidates, a sort of those only."""
    k = min(k, int(np.count_nonzero(counts)))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    threshold = np.partition(counts, counts.size - k)[counts.size - k]
    candidates = np.flatnonzero(counts >= threshold)
    order = np.lexsort((candidates, -counts[candidates]))
    return candidates[order[:k]]


def _label_values(path: str) -> list | None:
    """The ``label_values`` attribute of a dataset file as a list (names or numbers)."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("label_values")
    if raw is None:
        return None
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(raw).tolist()]


def _moments(chunks) -> dict:
    """Mean, (population) std, min and max over 1-D chunks, merged with Chan et al.'s update."""
    n, mean, m2 = 0, 0.0, 0.0
    low, high = np.inf, -np.inf
    for y in chunks:
        k, chunk_mean = y.size, float(y.mean())
        delta = chunk_mean - mean
        m2 += float(((y - chunk_mean) ** 2).sum()) + delta**2 * n * k / (n + k)
        mean += delta * k / (n + k)
        n += k
        low, high = min(low, float(y.min())), max(high, float(y.max()))
    return {"mean": mean, "std": (m2 / n) ** 0.5, "min": low, "max": high}
