"""Summarise a dataset: size, shards, and the label distribution (``mpigd data inspect``)."""

from __future__ import annotations

import os

import h5py
import numpy as np

from mpigd.data.dataset import open_dataset, read_labels

LABEL_CHUNK_ROWS = 1 << 20  # labels read at a time


def inspect_dataset(path: str | os.PathLike) -> dict:
    """Describe the dataset at ``path``; reads the metadata and ``y``, never ``X``.

    Returns
    -------
    dict : JSON-serialisable, with ``path``, ``rows``, ``features``, ``dtype``, ``task``,
    ``n_classes``, ``shards`` (list of ``{"file", "rows"}``) and either ``class_counts``
    and ``class_fractions`` (classification, index = class id) with ``label_values``
    (the original label of each class, as an import recorded them; None if it did not)
    or ``y`` with ``mean``, ``std``, ``min``, ``max`` (regression). Labels are validated
    as in training, so a NaN target or out-of-range class raises
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
    return summary


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
