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

**Sparse data** (``sparse=True``, written as CSR shards) models text and click logs.
Row ``i`` holds ``n_i = min(d, max(1, Poisson(k)))`` distinct features, ``k`` being
``nnz_per_row``, drawn from a power law over popularity ranks: a draw is the feature of
rank ``r`` (``r = 1..d``) with probability about proportional to ``r^-s``, ``s`` being
``zipf_exponent`` (default :data:`ZIPF_EXPONENT` = 1, Zipf's law of word frequencies; 0
is uniform), sampled by inverting the continuous power law's CDF on ``[1, d + 1)``. A
draw repeating a feature of its row is replaced by a new draw (up to
:data:`REDRAW_ROUNDS` rounds over the rows still short; only ``k`` close to ``d`` under a
steep law leaves a row short). So rows are samples without replacement, and the most
popular features appear in nearly every row. Ranks map to column ids through a seeded
random permutation, so that popular features are spread over the id range as hashed
features are. The nonzero values are
standard normal. The true weights have i.i.d. ``N(0, 1/k)`` entries (times
:data:`LOGIT_SCALE` for classification), so ``x.w`` again has about unit variance (about
``LOGIT_SCALE^2`` for classification); labels follow the same three models. Rows are
generated in independently seeded blocks of ``max(1, SPARSE_BLOCK_ENTRIES // k)`` rows,
each block at once (vectorised, never densified), so the data depend only on ``(seed,
rows, features, task, classes, nnz_per_row, zipf_exponent)`` and memory stays bounded
by a block's nonzeros.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import h5py
import numpy as np
import scipy.sparse as sp

from mpigd import __version__
from mpigd.data.dataset import TASKS
from mpigd.data.writer import (
    ShardWriter,
    SparseShardWriter,
    shard_paths,
    shard_sizes,
    staged_output,
)
from mpigd.errors import DataError

BLOCK_ROWS = 65_536  # rows per independently seeded block
NOISE_STD = 0.1  # regression noise standard deviation
LOGIT_SCALE = 5.0  # norm of each true weight vector for classification
_CHUNK_ELEMENTS = 1 << 22  # X elements generated at once (32 MiB of float64)
ZIPF_EXPONENT = 1.0  # default power-law exponent of sparse feature popularity
NNZ_PER_ROW = 40  # default mean features drawn per sparse row
SPARSE_BLOCK_ENTRIES = 1 << 21  # feature draws per sparse block (about 100 MiB of temporaries)
REDRAW_ROUNDS = 32  # rounds of redrawing the features that repeated one of their row's


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
    sparse: bool = False,
    nnz_per_row: int | None = None,
    zipf_exponent: float | None = None,
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
    sparse : write sparse (CSR) shards with power-law feature popularity (module docstring).
    nnz_per_row : sparse only: mean feature draws per row ``k``, in ``1..features``
        (default :data:`NNZ_PER_ROW`, capped at ``features``).
    zipf_exponent : sparse only: the power law's exponent ``s >= 0`` (default
        :data:`ZIPF_EXPONENT`).

    Returns
    -------
    dict : JSON-serialisable summary (paths, rows and shards of each split, ...; for
    sparse data also the nonzeros of each split and the law's parameters).
    """
    n_classes = _check_args(task, rows, features, classes, test_fraction, dtype)
    law = _check_sparse_args(sparse, features, nnz_per_row, zipf_exponent)
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
    truth_rng = np.random.default_rng(truth_seq)
    if law:
        weights, bias = _sparse_ground_truth(truth_rng, task, features, n_classes, law["k"])
        popularity = truth_rng.permutation(features)  # column id of each popularity rank
        chunks = _generate_sparse(rows_seq, rows, features, task, weights, bias, law, popularity)
    else:
        weights, bias = _ground_truth(truth_rng, task, features, n_classes)
        chunks = _generate(rows_seq, rows, features, task, weights, bias)
    attrs = {"source": "mpigd data synth", "seed": seed, **_law_attrs(law)}
    kind = SparseShardWriter if law else ShardWriter
    out = os.path.abspath(os.fspath(out))
    splits = {"train": train_sizes, "test": test_sizes}
    nnz = [0, 0]  # nonzeros written to train, test
    with staged_output(out, directory=True, overwrite=overwrite) as staged, ExitStack() as stack:
        writers = []
        for split, sizes in splits.items():
            if sizes:
                os.mkdir(os.path.join(staged, split))
                paths = shard_paths(os.path.join(staged, split), len(sizes))
                writer = kind(paths, sizes, features, dtype, task, n_classes, attrs)
                writers.append(stack.enter_context(writer))
        _write_truth(os.path.join(staged, "ground_truth.h5"), task, weights, bias, seed, law)
        for start, X, y in chunks:
            _route(writers, n_train, start, X, y, nnz)
    summary = {
        split: {"path": os.path.join(out, split), "rows": sum(sizes), "shards": len(sizes)}
        | ({"nnz": count} if law else {})
        if sizes
        else None
        for (split, sizes), count in zip(splits.items(), nnz, strict=True)
    }
    return {
        "out": out,
        "task": task,
        "features": features,
        "n_classes": n_classes,
        "dtype": dtype,
        "seed": seed,
        **({"sparse": True, "nnz_per_row": law["k"], "zipf_exponent": law["s"]} if law else {}),
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


def _check_sparse_args(sparse, features, nnz_per_row, zipf_exponent) -> dict | None:
    """Validate the sparse options; return the law ``{"k", "s"}``, or None for dense data."""
    if not sparse:
        for name, value in (("nnz_per_row", nnz_per_row), ("zipf_exponent", zipf_exponent)):
            if value is not None:
                flag = "--" + name.replace("_", "-")
                raise DataError(f"{name} ({flag}) applies to sparse data only (--sparse)")
        return None
    k = min(NNZ_PER_ROW, features) if nnz_per_row is None else nnz_per_row
    if not 1 <= k <= features:
        raise DataError(
            f"nnz_per_row (--nnz-per-row) must be in 1..{features} (the features), got {k}"
        )
    s = ZIPF_EXPONENT if zipf_exponent is None else float(zipf_exponent)
    if not (np.isfinite(s) and s >= 0):
        raise DataError(
            f"zipf_exponent (--zipf-exponent) must be a finite number >= 0, got {zipf_exponent}"
        )
    return {"k": int(k), "s": s}


def _law_attrs(law: dict | None) -> dict:
    """Root attributes recording the sparse law (none for dense data)."""
    return {} if law is None else {"nnz_per_row": law["k"], "zipf_exponent": law["s"]}


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


def _sparse_ground_truth(rng, task, features, n_classes, k) -> tuple[np.ndarray, np.ndarray]:
    """True ``weights`` (i.i.d. ``N(0, 1/k)``, times LOGIT_SCALE for classification) and
    ``bias``, shaped as :func:`_ground_truth`'s."""
    shape = (features,) if task != "multiclass" else (n_classes, features)
    scale = (1.0 if task == "regression" else LOGIT_SCALE) / np.sqrt(k)
    w = scale * rng.standard_normal(shape)
    if task == "regression":
        return w, np.asarray(rng.standard_normal())
    return w, LOGIT_SCALE * 0.1 * rng.standard_normal(shape[:-1])


def _generate_sparse(rows_seq, rows, features, task, weights, bias, law, popularity):
    """Yield ``(start, X, y)`` blocks (float64 CSR ``X``) covering global rows ``0..rows-1``.

    Block ``b`` of ``max(1, SPARSE_BLOCK_ENTRIES // k)`` rows draws its feature counts,
    feature ranks, values and label noise from generators spawned for it alone.
    """
    block_rows = max(1, SPARSE_BLOCK_ENTRIES // law["k"])
    n_blocks = -(-rows // block_rows)
    for b, block_seq in enumerate(rows_seq.spawn(n_blocks)):
        x_rng, noise_rng = (np.random.default_rng(s) for s in block_seq.spawn(2))
        start = b * block_rows
        X = _sparse_rows(x_rng, min(block_rows, rows - start), features, law, popularity)
        yield start, X, _labels(noise_rng, task, X @ weights.T + bias)


def _sparse_rows(rng, m, d, law, popularity) -> sp.csr_matrix:
    """``m`` canonical CSR rows of ``d`` columns, drawn as the module docstring says.

    Vectorised over the block: every draw gets the key ``row * d + column``; sorted keys
    are the entries row by row, columns increasing, and a repeat is a key equal to its
    predecessor. Each round draws, for the rows still short, the features they lack,
    merges the new keys into the sorted ones (a stable sort of two sorted runs, a linear
    merge) and drops the repeats.
    """
    counts = np.minimum(np.maximum(rng.poisson(law["k"], m), 1), d)
    keys = np.empty(0, dtype=np.int64)
    short = counts
    for _ in range(REDRAW_ROUNDS):
        rows = np.flatnonzero(short)
        if not rows.size:
            break
        ranks = power_law_ranks(rng.random(int(short[rows].sum())), d, law["s"])
        new = np.sort(np.repeat(rows, short[rows]) * d + popularity[ranks])
        keys = np.concatenate([keys, new])
        keys.sort(kind="stable")
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        short = counts - np.bincount(keys // d, minlength=m)
    row, column = np.divmod(keys, d)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=m), out=indptr[1:])
    values = rng.standard_normal(keys.shape[0])
    index_dtype = np.int32 if d <= 2**31 else np.int64
    return sp.csr_matrix((values, column.astype(index_dtype), indptr), shape=(m, d))


def power_law_ranks(u: np.ndarray, d: int, s: float) -> np.ndarray:
    """Popularity ranks ``0..d-1`` (int64) for uniform draws ``u`` in [0, 1).

    ``floor(x) - 1`` for ``x`` with density proportional to ``x^-s`` on ``[1, d + 1)``,
    by inverting its CDF, so rank ``r`` (from 0) has probability proportional to
    ``integral over [r+1, r+2) of x^-s dx``, about ``(r + 1.5)^-s``.
    """
    if s == 1.0:
        x = np.exp(u * np.log(d + 1.0))
    else:
        top = (d + 1.0) ** (1.0 - s)
        x = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - s))
    return np.clip(x.astype(np.int64) - 1, 0, d - 1)


def _labels(rng, task, z) -> np.ndarray:
    """Draw labels from the true model's outputs ``z``, shape (m,) or (m, C)."""
    if task == "regression":
        return z + NOISE_STD * rng.standard_normal(z.shape[0])
    if task == "binary":
        return (rng.random(z.shape[0]) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return np.argmax(z + rng.gumbel(size=z.shape), axis=1)


def _route(writers, n_train, start, X, y, nnz) -> None:
    """Send the chunk's rows below ``n_train`` to the train writer, the rest to test;
    add the nonzeros each got to ``nnz`` (sparse ``X``)."""
    cut = min(max(n_train - start, 0), X.shape[0])
    for k, rows in ((0, slice(0, cut)), (1, slice(cut, X.shape[0]))):
        if rows.stop > rows.start:
            part = X[rows]
            writers[k].write(part, y[rows])
            nnz[k] += part.nnz if sp.issparse(part) else 0


def _write_truth(path, task, weights, bias, seed, law) -> None:
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
            **_law_attrs(law),
        )


_MODEL_TEXT = {
    "regression": "y = X weights + bias + N(0, noise_std^2)",
    "binary": "y ~ Bernoulli(sigmoid(X weights + bias))",
    "multiclass": "y ~ Categorical(softmax(X weights^T + bias)), by Gumbel-max",
}
