"""The 8x8 handwritten digits shipped inside scikit-learn, as train and test datasets.

:func:`sklearn.datasets.load_digits` holds 1,797 images of 8x8 pixels with values
0..16, in 10 classes, and needs no download. Pixels are divided by 16, so features lie
in [0, 1]; the class ids are the digits 0..9. The rows are shuffled with the seed and
split into a training and a test set stratified by class (every class keeps its share
in both), then written as shard directories like ``data synth`` writes them.
"""

from __future__ import annotations

import os

import numpy as np

from mpigd.data.writer import staged_output, write_dataset
from mpigd.errors import DataError

PIXEL_SCALE = 16.0  # largest pixel value of the digits images


def write_digits(
    out: str | os.PathLike,
    test_fraction: float = 0.2,
    shards: int = 1,
    dtype: str = "float64",
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the digits as ``out/train/`` and ``out/test/``, atomically.

    Parameters
    ----------
    out : output directory, created atomically.
    test_fraction : share of the rows held out as the test set, in ``(0, 1)``; the split
        is stratified by class.
    shards : shards of the training set; the test set gets ``min(shards, test rows)``.
    dtype : dtype of ``X``, ``float32`` or ``float64``.
    seed : seed of the shuffle and split, ``0 <= seed < 2**32``.
    overwrite : replace an existing ``out``.

    Returns
    -------
    dict : JSON-serialisable summary (paths, rows and shards of each split, ...).

    Raises
    ------
    DataError
        If an argument is out of range, or the split leaves a set with fewer rows than
        there are classes.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be float32 or float64, got {dtype!r}")
    if not 0 <= seed < 2**32:
        raise DataError(f"seed must be in [0, 2**32), got {seed}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / PIXEL_SCALE).astype(dtype)
    y = digits.target.astype(np.int64)
    n_classes = len(digits.target_names)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split the digits with test_fraction {test_fraction}: {exc}"
        ) from exc
    splits = {
        "train": (X_train, y_train, shards),
        "test": (X_test, y_test, min(shards, len(y_test))),
    }
    attrs = {
        "source": "sklearn.datasets.load_digits",
        "pixel_scale": PIXEL_SCALE,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    out = os.path.abspath(os.fspath(out))
    with staged_output(out, directory=True, overwrite=overwrite) as staged:
        for split, (X_split, y_split, k) in splits.items():
            write_dataset(
                os.path.join(staged, split),
                X_split,
                y_split,
                task="multiclass",
                n_classes=n_classes,
                shards=k,
                attrs=attrs,
            )
    return {
        "out": out,
        "task": "multiclass",
        "features": X.shape[1],
        "n_classes": n_classes,
        "dtype": dtype,
        "seed": seed,
        **{
            split: {"path": os.path.join(out, split), "rows": len(y_split), "shards": k}
            for split, (_, y_split, k) in splits.items()
        },
    }
