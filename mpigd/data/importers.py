"""Convert libsvm/svmlight, CSV and npz files into the HDF5 dataset format.

The input is read whole into memory (these formats offer no row-range reads), checked
(finite values, labels that fit the task), labels mapped to class ids ``0..C-1``, and
written atomically with :func:`mpigd.data.writer.write_dataset`. The original label
values are kept as the root attribute ``label_values`` (``label_values[k]`` is class
``k``).
"""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np

from mpigd.data.dataset import TASKS, first_nonfinite_row
from mpigd.data.writer import write_dataset
from mpigd.errors import DataError

FORMATS = ("libsvm", "csv", "npz")
MAX_INFERRED_CLASSES = 1000  # more distinct integer labels than this are taken as regression


def import_file(
    path: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    task: str | None = None,
    n_classes: int | None = None,
    shards: int = 1,
    dtype: str = "float64",
    label_column: int = 0,
    overwrite: bool = False,
) -> dict:
    """Import ``path`` into a dataset at ``out``.

    Parameters
    ----------
    path : input file.
    fmt : ``libsvm`` (svmlight), ``csv`` (label in ``label_column``, ``-1`` for the last;
        a first row that is not all numbers is a header) or ``npz`` (arrays ``X``, ``y``).
    out : a single ``.h5`` file when ``shards == 1`` and it ends in ``.h5``, otherwise a
        directory of ``shards`` shard files.
    task : ``regression``, ``binary`` or ``multiclass``; inferred when ``None``: integer
        labels with 2 distinct values are binary, with 3 to ``MAX_INFERRED_CLASSES``
        multiclass, anything else regression.
    n_classes : ``C`` for classification. Multiclass labels already in ``0..C-1`` (or
        ``1..C``) then keep their meaning even when some classes are absent.
    shards, dtype : shard count and dtype of ``X`` (``float32`` or ``float64``).
    label_column : CSV column holding the label.
    overwrite : replace an existing ``out``.

    Returns
    -------
    dict : JSON-serialisable summary (output path, rows, features, task, label values).
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown import format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be float32 or float64, got {dtype!r}")
    if not os.path.isfile(path):
        raise DataError(f"input file {path} does not exist")
    X, y = _load(path, fmt, label_column)
    _check_table(path, X, y)
    task, n_classes, ids, label_values = _map_labels(path, y, task, n_classes)
    attrs = {"source": os.path.abspath(path), "source_format": fmt}
    if label_values is not None:
        attrs["label_values"] = label_values
    files = write_dataset(
        out,
        X.astype(dtype, copy=False),
        ids,
        task=task,
        n_classes=n_classes,
        shards=shards,
        attrs=attrs,
        overwrite=overwrite,
    )
    return {
        "out": os.path.abspath(os.fspath(out)),
        "files": files,
        "rows": int(X.shape[0]),
        "features": int(X.shape[1]),
        "dtype": dtype,
        "task": task,
        "n_classes": n_classes,
        "label_values": None if label_values is None else label_values.tolist(),
    }


def _load(path: str, fmt: str, label_column: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (float64, shape (N, d)) and ``y`` (float64, shape (N,)) of the input file."""
    if fmt == "libsvm":
        return _load_libsvm(path)
    if fmt == "csv":
        return _load_csv(path, label_column)
    return _load_npz(path)


def _load_libsvm(path: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(path, dtype=np.float64)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot parse {path} as libsvm/svmlight: {exc}") from exc
    return X.toarray(), y


def _load_csv(path: str, label_column: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        delimiter = "," if "," in first else None
        header = not _all_numbers(first.split(delimiter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, delimiter=delimiter, skiprows=int(header), ndmin=2)
    except ValueError as exc:
        raise DataError(f"cannot parse {path} as CSV: {exc}") from exc
    if table.size == 0:
        raise DataError(f"{path} contains no data rows")
    n_columns = table.shape[1]
    if n_columns < 2:
        raise DataError(f"CSV file {path} needs a label column and at least one feature column")
    if not -n_columns <= label_column < n_columns:
        raise DataError(
            f"label column {label_column} is out of range for the {n_columns} columns of {path}"
        )
    return np.delete(table, label_column, axis=1), table[:, label_column]


def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ("X", "y") if name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
        raise DataError(f"{path} is not a readable .npz archive: {exc}") from exc
    for name in ("X", "y"):
        if name not in arrays:
            raise DataError(f"npz file {path} has no array '{name}'")
    X, y = arrays["X"], arrays["y"]
    for name, array, ndim in (("X", X, 2), ("y", y, 1)):
        if array.ndim != ndim or array.dtype.kind not in "biuf":
            raise DataError(
                f"array '{name}' in {path} must be {ndim}-D numeric, "
                f"got shape {array.shape} dtype {array.dtype}"
            )
    return X.astype(np.float64, copy=False), y.astype(np.float64, copy=False)


def _all_numbers(fields: list[str]) -> bool:
    try:
        [float(field) for field in fields]
    except ValueError:
        return False
    return True


def _check_table(path: str, X: np.ndarray, y: np.ndarray) -> None:
    """Rows, features, matching lengths and finite values."""
    if X.shape[0] != y.shape[0]:
        raise DataError(f"{path} has {X.shape[0]} rows of features but {y.shape[0]} labels")
    if X.shape[0] == 0:
        raise DataError(f"{path} contains no data rows")
    if X.shape[1] == 0:
        raise DataError(f"{path} has no feature columns")
    for name, array in (("features", X), ("labels", y)):
        bad = first_nonfinite_row(array)
        if bad is not None:
            raise DataError(
                f"{path} has a NaN or infinite value in the {name} of data row {bad} (from 0)"
            )


def _map_labels(
    path: str, y: np.ndarray, task: str | None, n_classes: int | None
) -> tuple[str, int | None, np.ndarray, np.ndarray | None]:
    """Decide the task and map labels to class ids.

    Returns
    -------
    (task, n_classes, y_out, label_values) : ``y_out`` float64 targets for regression or
    int64 ids ``0..C-1``; ``label_values`` (int64, shape (C,), sorted) the original value
    of each class, ``None`` for regression.
    """
    values = np.unique(y)
    fractional = np.flatnonzero(y != np.round(y))
    if task is None:
        task = _infer_task(values, fractional.size == 0, n_classes)
    if task == "regression":
        if n_classes is not None:
            raise DataError("n_classes applies to binary and multiclass tasks, not regression")
        return task, None, y, None
    if fractional.size:
        i = fractional[0]
        raise DataError(
            f"task {task!r} needs integer labels but {path} has label {y[i]:g} at data row {i}"
        )
    if task == "binary":
        label_values = _binary_values(path, values, n_classes)
    else:
        label_values = _multiclass_values(path, values, n_classes)
    ids = np.searchsorted(label_values, y).astype(np.int64)
    return task, len(label_values), ids, label_values.astype(np.int64)


def _infer_task(values: np.ndarray, integral: bool, n_classes: int | None) -> str:
    if n_classes is not None:
        return "binary" if n_classes == 2 else "multiclass"
    if integral and len(values) == 2:
        return "binary"
    if integral and 3 <= len(values) <= MAX_INFERRED_CLASSES:
        return "multiclass"
    return "regression"


def _binary_values(path: str, values: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Original values of classes 0 and 1: ``{0, 1}``, ``{-1, +1}`` or any two values."""
    if n_classes not in (None, 2):
        raise DataError(f"a binary task has 2 classes, got n_classes={n_classes}")
    for standard in ((0.0, 1.0), (-1.0, 1.0)):
        if np.isin(values, standard).all():
            return np.array(standard)
    if len(values) != 2:
        raise DataError(
            f"task 'binary' needs 2 label values but {path} has {len(values)}: {_preview(values)}"
        )
    return values


def _multiclass_values(path: str, values: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Original values of classes ``0..C-1``: the sorted distinct labels, or ``0..C-1`` /
    ``1..C`` when ``n_classes`` is given and the labels fit."""
    if n_classes is None:
        if len(values) < 2:
            raise DataError(f"task 'multiclass' needs >= 2 label values but {path} has 1")
        return values
    if n_classes < 2:
        raise DataError(f"a multiclass task needs n_classes >= 2, got {n_classes}")
    for first in (0, 1):
        candidate = np.arange(first, first + n_classes, dtype=np.float64)
        if np.isin(values, candidate).all():
            return candidate
    raise DataError(
        f"labels of {path} ({_preview(values)}) are not class ids 0..{n_classes - 1} "
        f"or 1..{n_classes} for n_classes={n_classes}"
    )


def _preview(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")
