"""Synthetic datasets with a known true model, for correctness and scaling studies.

Rows are generated as one stream of ``rows`` rows in fixed blocks of :data:`BLOCK_ROWS`;
block ``b`` draws from its own generators spawned from ``SeedSequence(seed)``. The data
therefore depend only on ``(seed, rows, features, task, classes)``, never on the shard
count, and are streamed to disk so ``10^8`` rows never need to fit in memory. The first
``rows - n_test`` rows form the training set, the rest the test set.

Features are standard normal (drawn in float64, then stored as ``dtype``). With ``w`` of
unit norm (so ``x.w`` has unit variance):

* regression: ``y = X w + b + noise``, noise ``N(0, NOISE_STD^2)``;
* binary: ``y ~ Bernoulli(sigmoid(X w + b))`` with ``w`` scaled by :data:`LOGIT_SCALE`,
  which makes the true model about 89% accurate;
* multiclass: ``y = argmax(X W^T + b + Gumbel noise)``, i.e. a sample of
  ``softmax(X W^T + b)``, each row of ``W`` scaled by :data:`LOGIT_SCALE`.

The stored ground truth (``weights``, ``bias``) is exactly the model that generated the
labels: logits ``X W^T + b`` for classification.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import h5py
import numpy as np

from mpigd import __version__
from mpigd.data.dataset import TASKS
from mpigd.data.writer import ShardWriter, shard_paths, shard_sizes, staged_output
from mpigd.errors import DataError

BLOCK_ROWS = 65_536  # rows per independently seeded block
NOISE_STD = 0.1  # regression noise standard deviation
LOGIT_SCALE = 5.0  # norm of each true weight vector for classification
_CHUNK_ELEMENTS = 1 << 22  # X elements generated at once (32 MiB of float64)


def write_synthetic(
    out: str | os.PathLike,
    task: str,
    rows: int,
    features: int,
    classes: int | None = None,
    shards: int = 1,
    test_fraction: float = 0.2,
    dtype: str = "float64",
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Generate a dataset and write ``out/train/``, ``out/test/`` and ``out/ground_truth.h5``.

    Parameters
    ----------
    out : output directory, created atomically.
    task : ``regression``, ``binary`` or ``multiclass``.
    rows : total rows, train plus test.
    features : features ``d``.
    classes : ``C``; binary must be 2 (the default), multiclass >= 2 (default 3).
    shards : shards of the training set; the test set gets ``min(shards, test rows)``.
    test_fraction : share of the rows held out as the test set, ``round(fraction * rows)``
        rows, in ``[0, 1)``; with 0 no ``test/`` directory is written.
    dtype : dtype of ``X``, ``float32`` or ``float64``.
    seed : seed of everything generated.
    overwrite : replace an existing ``out``.

    Returns
    -------
    dict : JSON-serialisable summary (paths, rows and shards of each split, ...).
    """
    n_classes = _check_args(task, rows, features, classes, test_fraction, dtype)
    n_test = round(test_fraction * rows)
    n_train = rows - n_test
    if n_train < 1:
        raise DataError(f"test_fraction {test_fraction} of {rows} rows leaves no training rows")
    if test_fraction > 0 and n_test < 1:
        raise DataError(
            f"test_fraction {test_fraction} of {rows} rows gives no test rows; "
            "use more rows or test_fraction 0"
        )
    train_sizes = shard_sizes(n_train, shards)
    test_sizes = shard_sizes(n_test, min(shards, n_test)) if n_test else []
    truth_seq, rows_seq = np.random.SeedSequence(seed).spawn(2)
    weights, bias = _ground_truth(np.random.default_rng(truth_seq), task, features, n_classes)
    attrs = {"source": "mpigd data synth", "seed": seed}
    out = os.path.abspath(os.fspath(out))
    splits = {"train": train_sizes, "test": test_sizes}
    with staged_output(out, directory=True, overwrite=overwrite) as staged, ExitStack() as stack:
        writers = []
        for split, sizes in splits.items():
            if sizes:
                os.mkdir(os.path.join(staged, split))
                paths = shard_paths(os.path.join(staged, split), len(sizes))
                writer = ShardWriter(paths, sizes, features, dtype, task, n_classes, attrs)
                writers.append(stack.enter_context(writer))
        _write_truth(os.path.join(staged, "ground_truth.h5"), task, weights, bias, seed)
        for start, X, y in _generate(rows_seq, rows, features, task, weights, bias):
            _route(writers, n_train, start, X, y)
    summary = {
        split: {"path": os.path.join(out, split), "rows": sum(sizes), "shards": len(sizes)}
        if sizes
        else None
        for split, sizes in splits.items()
    }
    return {
        "out": out,
        "task": task,
        "features": features,
        "n_classes": n_classes,
        "dtype": dtype,
        "seed": seed,
        **summary,
        "ground_truth": os.path.join(out, "ground_truth.h5"),
    }


def _check_args(task, rows, features, classes, test_fraction, dtype) -> int | None:
    """Validate the arguments of :func:`write_synthetic`; return ``n_classes``."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if rows < 1:
        raise DataError(f"rows must be >= 1, got {rows}")
    if features < 1:
        raise DataError(f"features must be >= 1, got {features}")
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be float32 or float64, got {dtype!r}")
    if task == "regression":
        if classes is not None:
            raise DataError("classes applies to binary and multiclass tasks, not regression")
        return None
    if task == "binary":
        if classes not in (None, 2):
            raise DataError(f"a binary task has 2 classes, got classes={classes}")
        return 2
    if classes is not None and classes < 2:
        raise DataError(f"a multiclass task needs classes >= 2, got {classes}")
    return 3 if classes is None else classes


def _ground_truth(rng, task, features, n_classes) -> tuple[np.ndarray, np.ndarray]:
    """True ``weights`` (shape (d,) or (C, d)) and ``bias`` (shape () or (C,))."""
    if task == "regression":
        w = rng.standard_normal(features)
        return w / np.linalg.norm(w), np.asarray(rng.standard_normal())
    shape = (features,) if task == "binary" else (n_classes, features)
    w = rng.standard_normal(shape)
    w *= LOGIT_SCALE / np.linalg.norm(w, axis=-1, keepdims=True)
    return w, LOGIT_SCALE * 0.1 * rng.standard_normal(shape[:-1])


def _generate(rows_seq, rows, features, task, weights, bias):
    """Yield ``(start, X, y)`` chunks (float64 ``X``) covering global rows ``0..rows-1``.

    Block ``b`` of :data:`BLOCK_ROWS` rows draws ``X`` from one spawned generator and the
    label noise from another, in chunks whose values do not depend on the chunking.
    """
    n_blocks = -(-rows // BLOCK_ROWS)
    chunk = max(1, min(BLOCK_ROWS, _CHUNK_ELEMENTS // features))
    for b, block_seq in enumerate(rows_seq.spawn(n_blocks)):
        x_rng, noise_rng = (np.random.default_rng(s) for s in block_seq.spawn(2))
        block_start = b * BLOCK_ROWS
        block_stop = min(rows, block_start + BLOCK_ROWS)
        for start in range(block_start, block_stop, chunk):
            m = min(chunk, block_stop - start)
            X = x_rng.standard_normal((m, features))
            yield start, X, _labels(noise_rng, task, X @ weights.T + bias)


def _labels(rng, task, z) -> np.ndarray:
    """Draw labels from the true model's outputs ``z``, shape (m,) or (m, C)."""
    if task == "regression":
        return z + NOISE_STD * rng.standard_normal(z.shape[0])
    if task == "binary":
        return (rng.random(z.shape[0]) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return np.argmax(z + rng.gumbel(size=z.shape), axis=1)


def _route(writers, n_train, start, X, y) -> None:
    """Send the chunk's rows below ``n_train`` to the train writer, the rest to test."""
    cut = min(max(n_train - start, 0), X.shape[0])
    if cut:
        writers[0].write(X[:cut], y[:cut])
    if cut < X.shape[0]:
        writers[1].write(X[cut:], y[cut:])


def _write_truth(path, task, weights, bias, seed) -> None:
    with h5py.File(path, "w-") as f:
        f.create_dataset("weights", data=weights)
        f.create_dataset("bias", data=bias)
        f.attrs.update(
            task=task,
            seed=seed,
            noise_std=NOISE_STD if task == "regression" else 0.0,
            logit_scale=1.0 if task == "regression" else LOGIT_SCALE,
            model=_MODEL_TEXT[task],
            created_by=f"mpigd {__version__}",
        )


_MODEL_TEXT = {
    "regression": "y = X weights + bias + N(0, noise_std^2)",
    "binary": "y ~ Bernoulli(sigmoid(X weights + bias))",
    "multiclass": "y ~ Categorical(softmax(X weights^T + bias)), by Gumbel-max",
}
