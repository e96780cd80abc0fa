"""Convert libsvm/svmlight, CSV, npz and IDX (MNIST) files into the HDF5 dataset format.

CSV, npz and IDX input is read whole into memory (these formats offer no row-range
reads), checked (finite values, labels that fit the task), labels mapped to class ids
``0..C-1``, and written atomically with :func:`mpigd.data.writer.write_dataset`. libsvm
input becomes a sparse dataset, read in chunks and, under ``mpirun``, by every rank
(:mod:`mpigd.data.libsvm`), with the same label rules decided over the whole file
(:func:`decide_labels`). The original label
values are kept as the root attribute ``label_values`` (``label_values[k]`` is class
``k``): integers, or strings for text labels (a CSV column of class names).

Train and test files are imported one at a time, so the label mapping and the number of
features must not depend on which values a file happens to contain. Labels that already
are class ids (``0..C-1``, binary ``0/1``) are kept as they are and ``-1/+1`` becomes
``0/1``; any other coding must be pinned (``label_values``) or is taken from the training
set (``like``), which also fixes ``d``. Codings that cannot be told apart from the file
alone (multiclass labels without class 0, more than two distinct integers without a task)
are errors, never guesses. Two codings are read as class ids from the file alone:
integers that are exactly ``0..C-1``, each present (a file that lacks its highest class
needs ``--classes`` or ``--like``), and text labels, which become class ids in sorted
order (``"cat" -> 0, "dog" -> 1``; import the other splits with ``like`` so that a split
lacking a class keeps the same ids). The summary says which task was chosen and why.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import h5py
import numpy as np

from mpigd.data.csv_reader import read_csv
from mpigd.data.dataset import TASKS, first_nonfinite_row, open_dataset
from mpigd.data.idx import read_idx_pair
from mpigd.data.writer import write_dataset
from mpigd.errors import DataError
from mpigd.paths import check_input_file

FORMATS = ("libsvm", "csv", "npz", "idx")


def import_file(
    path: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    task: str | None = None,
    n_classes: int | None = None,
    shards: int = 1,
    dtype: str = "float64",
    label_column: int | str | None = None,
    overwrite: bool = False,
    *,
    label_values: Sequence[float] | str | None = None,
    like: str | os.PathLike | None = None,
    n_features: int | None = None,
    header: bool | None = None,
    zero_based: bool | None = None,
    labels: str | os.PathLike | None = None,
    scale: float | None = None,
    chunk_mb: float | None = None,
    team=None,
) -> dict:
    """Import ``path`` into a dataset at ``out``.

    Parameters
    ----------
    path : input file.
    fmt : ``libsvm`` (svmlight), ``csv`` (label in ``label_column``), ``npz`` (arrays
        ``X``, ``y``) or ``idx`` (MNIST-style images; labels from ``labels``).
    out : a single ``.h5`` file when ``shards == 1`` and it ends in ``.h5``, otherwise a
        directory of ``shards`` shard files.
    task : ``regression``, ``binary`` or ``multiclass``. When ``None`` it is taken from
        ``like``, ``label_values`` or ``n_classes``, else inferred: fractional labels are
        regression, exactly 2 distinct integers or 2 text labels binary, integers
        ``0..C-1`` (each present) or more text labels multiclass; other integer labels
        need ``task``. IDX labels are class ids: the task defaults to ``multiclass``.
    n_classes : ``C`` for classification; labels must then be class ids ``0..C-1``
        (or values of ``label_values``).
    shards, dtype : shard count and dtype of ``X`` (``float32`` or ``float64``).
    label_column : CSV only: the label column, an index from 0 (``-1`` for the last) or
        a header name; ``None`` for the header's column named ``label``, else column 0.
    overwrite : replace an existing ``out``.
    label_values : the original label of each class, in class order (a sequence, or a
        string ``"v1,v2,..."``; integers, or names for text labels): value
        ``label_values[k]`` becomes class ``k``. Without it, class ids ``0..C-1`` (``C``
        from ``n_classes``, else the largest label + 1) and binary ``0/1`` are kept,
        ``-1/+1`` maps to ``0/1``, any other two binary values map in increasing order,
        and text labels in sorted order.
    like : an imported dataset (file or shard directory), typically the training set:
        its ``task``, ``n_classes``, ``label_values`` and number of features are reused.
        Options given as well must agree with it.
    n_features : ``d``. libsvm rows are padded to it (a larger feature index is an
        error); CSV and npz must have exactly ``d`` feature columns.
    header : CSV only: ``True`` if the first line is a header, ``False`` if it is data,
        ``None`` to detect it (a header has text fields only, a data row numbers only).
    zero_based : libsvm only: feature indices start at 0 (as written by scikit-learn,
        ``True``) or at 1 (LIBSVM's convention, ``False``); ``None`` takes the base of
        ``like`` when it was imported from libsvm, else detects it as scikit-learn does,
        over the whole file: 1-based when no index is 0.
    labels : IDX only, required: the IDX label file matching the images in ``path``.
    scale : IDX only: pixel values are divided by it; ``None`` divides uint8 images by
        255 (pixels in [0, 1]) and keeps other types as they are.
    chunk_mb : libsvm only: MiB of the file parsed at a time (default
        :data:`mpigd.data.libsvm.CHUNK_MB`); memory stays a few times this.
    team : libsvm only: the ranks importing together (``rank``, ``size``, collective
        ``gather``, see :mod:`mpigd.data.libsvm`); default this process alone. Every
        rank of it must call this function with the same arguments.

    libsvm files become sparse datasets (``X`` in the CSR layout of
    :mod:`mpigd.data.csr`), read in chunks and split over the ranks of ``team``
    (:mod:`mpigd.data.libsvm`); the other formats are read whole and stay dense.

    Returns
    -------
    dict : JSON-serialisable summary (output path, rows, features, task and
        ``task_reason``, why it was chosen, label values; CSV: ``label_column`` (from 0),
        ``label_column_name`` and ``label_column_reason``; IDX: label file and pixel
        scale; libsvm: ``nnz``, ``zero_based`` and ``zero_based_reason``, ``ranks``).

    Raises
    ------
    DataError
        If the input cannot be parsed, has missing or non-finite values, or its labels
        or features do not fit the task, ``label_values``, ``n_features`` or ``like``.
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown import format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be float32 or float64, got {dtype!r}")
    if n_features is not None and n_features < 1:
        raise DataError(f"the number of features must be >= 1, got {n_features}")
    check_input_file(path, "input file", expected=f"a {fmt} file")
    if fmt == "idx" and labels is None:
        raise DataError("format 'idx' needs the IDX label file (--labels LABELS)")
    if fmt != "idx" and (labels is not None or scale is not None):
        raise DataError("a label file and a pixel scale apply to format 'idx' only")
    if fmt != "csv" and (label_column is not None or header is not None):
        raise DataError("a label column and a header apply to format 'csv' only")
    if fmt != "libsvm" and (zero_based is not None or chunk_mb is not None):
        raise DataError("an index base and a chunk size apply to format 'libsvm' only")
    if chunk_mb is not None and not chunk_mb > 0:
        raise DataError(f"the chunk size must be > 0 MiB, got {chunk_mb}")
    label_values = _parse_label_values(label_values)
    task_reason = None if task is None else "given (--task)"
    if like is not None:
        task, n_classes, label_values, n_features = _like(
            like, task, n_classes, label_values, n_features
        )
        task_reason = f"from the imported dataset {os.fspath(like)} (--like)"
    if fmt == "idx" and task is None:
        task, task_reason = "multiclass", "IDX labels are class ids"
    if fmt == "libsvm":
        return _import_libsvm(
            path, out, shards, dtype, overwrite, task, task_reason, n_classes, label_values,
            n_features, zero_based, like, chunk_mb, team,
        )  # fmt: skip
    X, y, provenance, notes = _load(path, fmt, label_column, n_features, header, labels, scale)
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{path} has {X.shape[1]} feature columns but {n_features} are expected")
    _check_table(path, X, y)
    task, n_classes, ids, label_values, inferred = _map_labels(
        path, y, task, n_classes, label_values
    )
    attrs = {"source": os.path.abspath(path), "source_format": fmt, **provenance}
    if label_values is not None:
        attrs["label_values"] = _attribute(label_values)
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
        "task_reason": task_reason or inferred,
        "n_classes": n_classes,
        "label_values": None if label_values is None else label_values.tolist(),
        **provenance,
        **notes,
    }


def _attribute(label_values: np.ndarray) -> np.ndarray:
    """``label_values`` as HDF5 can store them: text as variable-length UTF-8 strings."""
    if label_values.dtype.kind == "U":
        return label_values.astype(h5py.string_dtype())
    return label_values


def _parse_label_values(spec: Sequence | str | None) -> np.ndarray | None:
    """``label_values`` as distinct values, at least 2: int64, or str when any is not a
    number (the names of text labels); ``None`` stays ``None``."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [v.decode() if isinstance(v, bytes) else v for v in items]
    if any(isinstance(v, str) and not _is_number(v) for v in items):
        values = np.array([str(v).strip() for v in items])
    else:
        try:
            values = np.array([float(v) for v in items], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"label values must be numbers or names, got {spec!r}") from exc
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise DataError(f"label values must be integers, got {_preview(values, 20)}")
    if len(values) < 2 or len(np.unique(values)) != len(values):
        raise DataError(f"label values must be >= 2 distinct values, got {_preview(values, 20)}")
    return values if values.dtype.kind == "U" else values.astype(np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _like(
    like: str | os.PathLike,
    task: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
    n_features: int | None,
) -> tuple[str, int | None, np.ndarray | None, int]:
    """Task, classes, label values and ``d`` of the dataset ``like``, checked against the
    options given as well."""
    info = open_dataset(like)
    reference = _stored_label_values(info)
    for name, given, theirs in (
        ("task", task, info.task),
        ("n_classes", n_classes, info.n_classes),
        ("n_features", n_features, info.n_features),
    ):
        if given is not None and given != theirs:
            raise DataError(f"{name}={given} contradicts {info.path}, which has {name}={theirs}")
    if label_values is not None and not np.array_equal(label_values, reference):
        shown = "none" if reference is None else _preview(reference, 20)
        raise DataError(
            f"label values {_preview(label_values, 20)} contradict {info.path}, "
            f"which has label values {shown}"
        )
    return info.task, info.n_classes, reference, info.n_features


def _stored_label_values(info) -> np.ndarray | None:
    """Root attribute ``label_values`` of a dataset; ``0..C-1`` when absent (synth data)."""
    if info.task == "regression":
        return None
    with h5py.File(info.files[0], "r") as f:
        raw = f.attrs.get("label_values")
    if raw is None:
        return np.arange(info.n_classes, dtype=np.int64)
    values = np.asarray(raw).ravel()
    if values.dtype.kind not in "iufOSU" or len(values) != info.n_classes:
        raise DataError(
            f"{info.files[0]} has label_values {values!r}; expected {info.n_classes} values"
        )
    return _parse_label_values(values)


def _load(
    path: str,
    fmt: str,
    label_column: int | str | None,
    n_features: int | None,
    header: bool | None,
    labels: str | os.PathLike | None,
    scale: float | None,
) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """``X`` (float64, shape (N, d)), ``y`` (shape (N,): float64, or str for text labels)
    of the input file, provenance attributes particular to its format, and notes for the
    summary only."""
    if fmt == "idx":
        X, y, scale = read_idx_pair(path, labels, scale)
        return X, y, {"source_labels": os.path.abspath(labels), "pixel_scale": scale}, {}
    if fmt == "csv":
        table = read_csv(path, label_column, header)
        notes = {"label_column_name": table.label_name, "label_column_reason": table.label_reason}
        return table.X, table.y, {"label_column": table.label_column}, notes
    return (*_load_npz(path), {}, {})


def _import_libsvm(
    path: str,
    out: str | os.PathLike,
    shards: int,
    dtype: str,
    overwrite: bool,
    task: str | None,
    task_reason: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
    n_features: int | None,
    zero_based: bool | None,
    like: str | os.PathLike | None,
    chunk_mb: float | None,
    team,
) -> dict:
    """:func:`import_file` for libsvm: a sparse dataset (:mod:`mpigd.data.libsvm`)."""
    from mpigd.data import libsvm

    base_reason = None
    theirs = None if like is None else _stored_index_base(like)
    if theirs is not None:
        if zero_based is not None and zero_based != (theirs == 0):
            flag = "--zero-based" if zero_based else "--no-zero-based"
            raise DataError(
                f"{flag} contradicts {os.fspath(like)}, whose feature ids start at {theirs}"
            )
        zero_based = theirs == 0
        base_reason = f"from the imported dataset {os.fspath(like)} (--like)"
    chunk_bytes = max(1, int((libsvm.CHUNK_MB if chunk_mb is None else chunk_mb) * 2**20))
    summary = libsvm.import_libsvm(
        path,
        os.path.abspath(os.fspath(out)),
        shards=shards,
        dtype=dtype,
        task=task,
        n_classes=n_classes,
        label_values=label_values,
        n_features=n_features,
        zero_based=zero_based,
        zero_based_reason=base_reason,
        chunk_bytes=chunk_bytes,
        attrs={"source": os.path.abspath(path), "source_format": "libsvm"},
        overwrite=overwrite,
        team=team,
    )
    values = summary.pop("label_values")
    return {
        "out": os.path.abspath(os.fspath(out)),
        **summary,
        "dtype": dtype,
        "task_reason": task_reason or summary["task_reason"],
        "label_values": None if values is None else values.tolist(),
    }


def _stored_index_base(like: str | os.PathLike) -> int | None:
    """The ``feature_index_base`` attribute of a dataset imported from libsvm, else None."""
    with h5py.File(open_dataset(like).files[0], "r") as f:
        base = f.attrs.get("feature_index_base")
    return None if base is None else int(base)


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


def _check_table(path: str, X: np.ndarray, y: np.ndarray) -> None:
    """Rows, features, matching lengths and finite values."""
    if X.shape[0] != y.shape[0]:
        raise DataError(f"{path} has {X.shape[0]} rows of features but {y.shape[0]} labels")
    if X.shape[0] == 0:
        raise DataError(f"{path} contains no data rows")
    if X.shape[1] == 0:
        raise DataError(f"{path} has no feature columns")
    for name, array in (("features", X), ("labels", y)):
        if array.dtype.kind == "U":
            continue  # text labels: class names
        bad = first_nonfinite_row(array)
        if bad is not None:
            raise DataError(
                f"{path} has a NaN or infinite value in the {name} of data row {bad} (from 0)"
            )


def _map_labels(
    path: str,
    y: np.ndarray,
    task: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
) -> tuple[str, int | None, np.ndarray, np.ndarray | None, str | None]:
    """Decide the task and map labels to class ids.

    Returns
    -------
    (task, n_classes, y_out, label_values, reason) : ``y_out`` float64 targets for
    regression or int64 ids ``0..C-1``; ``label_values`` (int64 or str, shape (C,)) the
    original value of each class, ``None`` for regression; ``reason`` why the task was
    inferred, ``None`` when ``task`` was given.
    """
    text = y.dtype.kind == "U"
    fractional = np.flatnonzero(y != np.round(y)) if not text else np.array([], dtype=int)
    first = (int(fractional[0]), float(y[fractional[0]])) if fractional.size else None
    task, n_classes, label_values, reason = decide_labels(
        path, np.unique(y), first, y[0], task, n_classes, label_values
    )
    if task == "regression":
        return task, None, y, None, reason
    return task, n_classes, class_ids(path, y, label_values), label_values, reason


def decide_labels(
    path: str,
    values: np.ndarray | None,
    fractional: tuple[int, float] | None,
    example,
    task: str | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
) -> tuple[str, int | None, np.ndarray | None, str | None]:
    """The task, ``n_classes``, label values and why, from what the labels hold.

    The decision needs only a summary of the labels, so that a file read in chunks
    (:mod:`mpigd.data.libsvm`) decides as a file read whole: ``values`` the sorted
    distinct labels (``None`` is allowed when ``fractional`` is set: they are not
    needed then), ``fractional`` the first non-integer label as ``(data row, value)``
    (``None`` if every label is an integer), ``example`` the first label (for messages).
    Text labels (names) come as ``values`` of dtype str. Returns ``(task, n_classes,
    label_values, reason)``, ``label_values`` ``None`` for regression; ``reason`` is
    ``None`` when ``task`` was given.
    """
    text = values is not None and values.dtype.kind == "U"
    if label_values is not None and (label_values.dtype.kind == "U") != text:
        kinds = ("names", "numbers") if text else ("numbers", "names")
        raise DataError(
            f"the labels of {path} are {kinds[0]} (e.g. {_shown(example)}) but the label "
            f"values are {kinds[1]} ({_preview(label_values, 20)})"
        )
    reason = None
    if task is None:
        task, reason = _infer_task(path, values, text, fractional, n_classes, label_values)
    if task == "regression":
        if text:
            raise DataError(
                f"task 'regression' needs numeric labels but the labels of {path} are text "
                f"({_preview(values)})"
            )
        if n_classes is not None or label_values is not None:
            raise DataError("n_classes and label values apply to classification, not regression")
        return task, None, None, reason
    if fractional is not None:
        row, value = fractional
        raise DataError(
            f"task {task!r} needs integer labels but {path} has label {value:g} at data row {row}"
        )
    if label_values is None:
        label_values = _default_label_values(path, task, values, n_classes, text)
    for want in (2 if task == "binary" else None, n_classes):
        if want is not None and len(label_values) != want:
            raise DataError(
                f"task {task!r} with {want} classes does not fit the "
                f"{len(label_values)} label values {_preview(label_values, 20)}"
            )
    return task, len(label_values), label_values, reason


def _infer_task(
    path: str,
    values: np.ndarray | None,
    text: bool,
    fractional: tuple[int, float] | None,
    n_classes: int | None,
    label_values: np.ndarray | None,
) -> tuple[str, str]:
    """The task, and why, from the options or from labels that leave no doubt."""
    if label_values is not None:
        n = len(label_values)
        return ("binary" if n == 2 else "multiclass"), f"{n} label values given"
    if n_classes is not None:
        return ("binary" if n_classes == 2 else "multiclass"), f"{n_classes} classes given"
    if text:
        if len(values) < 2:
            raise DataError(
                f"cannot infer the task of {path}: its labels are all {_shown(values[0])}; "
                "give --label-values NAME0,NAME1,... or --like TRAIN"
            )
        kind = "binary" if len(values) == 2 else "multiclass"
        return kind, f"the labels are text: {len(values)} class names, ids in sorted order"
    if fractional is not None:
        return "regression", f"the labels have fractional values (data row {fractional[0]})"
    if len(values) == 2:
        return "binary", "the labels take exactly 2 distinct integer values"
    if len(values) > 2 and np.array_equal(values, np.arange(len(values))):
        return "multiclass", f"the labels are the integers 0..{len(values) - 1}, each present"
    choices = "multiclass or --task regression"
    if len(values) == 1:
        choices = "binary, --task " + choices
    raise DataError(
        f"cannot infer the task of {path}: its labels take {len(values)} distinct integer "
        f"value(s) ({_preview(values)}), not the class ids 0..C-1; give --task {choices}"
    )


def _default_label_values(
    path: str, task: str, values: np.ndarray, n_classes: int | None, text: bool
) -> np.ndarray:
    """Label values when none are pinned; they depend on the values present only where
    every file of the same data would give the same mapping, or for text labels (the
    distinct names, sorted)."""
    if text:
        return values
    if task == "binary":
        if n_classes not in (None, 2):
            raise DataError(f"a binary task has 2 classes, got n_classes={n_classes}")
        for standard in ((0, 1), (-1, 1)):
            if np.isin(values, standard).all():
                return np.array(standard, dtype=np.int64)
        if len(values) != 2:
            raise DataError(
                f"task 'binary' needs 2 label values but {path} has {len(values)}: "
                f"{_preview(values)}; give --label-values V0,V1 or --like TRAIN"
            )
        return values.astype(np.int64)
    if n_classes is not None and n_classes < 2:
        raise DataError(f"a multiclass task needs n_classes >= 2, got {n_classes}")
    remedy = (
        "give --label-values V0,V1,... in class order (1,2,3 for 1-based labels), "
        "--classes C, or --like TRAIN (the imported training set)"
    )
    if values[0] < 0 or n_classes is not None and values[-1] >= n_classes:
        expected = "0..C-1" if n_classes is None else f"0..{n_classes - 1}"
        raise DataError(
            f"multiclass labels of {path} ({_preview(values)}) are not class ids {expected}; "
            + remedy
        )
    if n_classes is None and (values[0] != 0 or len(values) < 2):
        raise DataError(
            f"multiclass labels of {path} ({_preview(values)}) "
            + ("do not include class 0" if values[0] else "are all class 0")
            + ", so the class ids they stand for are unknown; "
            + remedy
        )
    return np.arange(n_classes or int(values[-1]) + 1, dtype=np.int64)


def class_ids(path: str, y: np.ndarray, label_values: np.ndarray, first_row: int = 0) -> np.ndarray:
    """Class id of each label: its position in ``label_values``. ``y[0]`` is data row
    ``first_row`` (for messages)."""
    order = np.argsort(label_values, kind="stable")
    ordered = label_values[order]
    where = np.minimum(np.searchsorted(ordered, y), len(ordered) - 1)
    missing = np.flatnonzero(ordered[where] != y)
    if missing.size:
        i = missing[0]
        raise DataError(
            f"{path} has label {_shown(y[i])} at data row {first_row + i}, which is not one "
            f"of the label values {_preview(label_values, 20)}"
        )
    return order[where].astype(np.int64)


def _preview(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(_shown(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _shown(value) -> str:
    """A label as messages show it: ``2``, ``0.5`` or ``'cat'``."""
    return repr(str(value)) if isinstance(value, str) else f"{value:g}"
