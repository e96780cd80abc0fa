"""Shared test helpers: small datasets written straight with h5py, and mpirun launching."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def write_h5(path, X, y, task, n_classes=None, **attrs) -> Path:
    """One dataset file in the format of docs/architecture.md (no validation: tests write
    bad ones too)."""
    return _write_dataset_file(path, lambda handle: handle.create_dataset("X", data=X), y,
                               task, n_classes, attrs)  # fmt: skip


def write_csr_h5(path, X, y, task, n_classes=None, **attrs) -> Path:
    """One sparse dataset file: ``X`` (a scipy.sparse matrix, written as given) in the
    CSR group layout of :mod:`mpigd.data.csr`; no validation, as :func:`write_h5`."""
    from mpigd.data.csr import write_csr

    return _write_dataset_file(path, lambda handle: write_csr(handle, "X", X), y, task,
                               n_classes, attrs)  # fmt: skip


def _write_dataset_file(path, write_X, y, task, n_classes, attrs) -> Path:
    """``write_X(handle)``, then ``y`` and the root attributes, into a new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        write_X(handle)
        handle.create_dataset("y", data=y)
        handle.attrs["task"] = task
        if n_classes is not None:
            handle.attrs["n_classes"] = n_classes
        for key, value in attrs.items():
            handle.attrs[key] = value
    return path


def make_problem(task, n_rows=1001, d=6, n_classes=None, seed=0, dtype=np.float64):
    """A small random classification or regression problem: (X, y)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, d)).astype(dtype)
    if task == "regression":
        y = X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n_rows)
    elif task == "binary":
        y = (X @ rng.standard_normal(d) + 0.3 + rng.logistic(size=n_rows) > 0).astype(np.int64)
    else:
        Z = X @ rng.standard_normal((d, n_classes)) + rng.gumbel(size=(n_rows, n_classes))
        y = np.argmax(Z, axis=1).astype(np.int64)
    return X, y


def write_sharded(directory, X, y, task, n_classes=None, sizes=(400, 350)) -> Path:
    """Split rows into shards of the given sizes (the rest in a last shard)."""
    directory = Path(directory)
    bounds = np.cumsum((0, *sizes, len(X) - sum(sizes)))
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        write_h5(directory / f"part-{i:05d}.h5", X[lo:hi], y[lo:hi], task, n_classes)
    return directory


def mpirun_command(n_ranks: int, *args: str, fault: str | None = None) -> list[str]:
    """``mpirun -n N python -m mpigd ARGS`` with the mpirun that sits beside this Python.

    ``fault`` (``none``, ``ACTION@RANK:STEP`` or ``sigterm-at-start@RANK``, see
    ``tests/run_with_fault.py``) runs the same command line through that wrapper.
    """
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or "mpirun"
    program = ["-m", "mpigd"] if fault is None else [str(REPO / "tests/run_with_fault.py"), fault]
    return [mpirun, "-n", str(n_ranks), sys.executable, *program, *args]


def run_mpigd(
    n_ranks: int,
    *args: str,
    timeout: float = 120,
    env: dict | None = None,
    fault=None,
    statuses=None,
) -> subprocess.CompletedProcess:
    """Run mpigd under mpirun; a hang fails the test after ``timeout`` seconds.

    ``env`` adds variables to this process's environment; ``fault`` injects a fault
    (see :func:`mpirun_command`). ``statuses`` (a directory) collects every rank's exit
    status: read them with :func:`rank_statuses`.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env or {}))
    if statuses is not None:
        Path(statuses).mkdir(parents=True, exist_ok=True)
        env["MPIGD_TEST_STATUS_DIR"] = str(statuses)
        fault = fault or "none"
    return subprocess.run(
        mpirun_command(n_ranks, *args, fault=fault),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def rank_statuses(statuses, n_ranks: int) -> list[int | None]:
    """The exit status of each rank of a :func:`run_mpigd` run with ``statuses``; None
    for a rank that wrote none (ended by MPI_Abort or a signal)."""
    files = [Path(statuses) / f"rank-{rank}" for rank in range(n_ranks)]
    return [int(f.read_text()) if f.exists() else None for f in files]


def study_point(ranks, time_s, repeat=0, strategy="allreduce", **extra) -> dict:
    """A completed points.csv row of a scaling study (1,000 rows in all, logreg/numba),
    its epoch split 80/10/10 into compute, communication and the rest; ``extra`` adds
    fields (the machine's ``cores``, marks)."""
    return {
        **extra,
        "strategy": strategy,
        "model": "logreg",
        "backend": "numba",
        "ranks": ranks,
        "repeat": repeat,
        "status": "completed",
        "rows_per_rank": 1000 / ranks,
        "time_s": time_s,
        "compute_s": 0.8 * time_s,
        "comm_s": 0.1 * time_s,
        "io_s": 0.0,
        "eval_s": 0.0,
        "other_s": 0.1 * time_s,
        "samples_per_s": 1000 / time_s,
    }
