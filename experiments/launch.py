"""What the benchmarks share to launch runs: mpirun, one thread per rank, flags, data.

Every benchmark launches ``mpigd`` as a user would (``mpirun -n P python -m mpigd ...``)
and reads the run records afterwards; these helpers keep the launching identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Environment variables that set the thread counts of BLAS, OpenMP and Numba.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def mpirun() -> str:
    """The ``mpirun`` next to this Python (the virtual environment's), else on PATH."""
    local = Path(sys.executable).parent / "mpirun"
    return str(local) if local.exists() else shutil.which("mpirun") or "mpirun"


def one_thread_env() -> dict:
    """This environment with BLAS, OpenMP and Numba limited to one thread per rank."""
    return {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}


def flags(**options) -> list[str]:
    """Command-line options ``--name value`` (underscores in names become dashes)."""
    return [
        arg
        for name, value in options.items()
        for arg in (f"--{name.replace('_', '-')}", str(value))
    ]


def total_rows(train_rows: int, test_fraction: float) -> int:
    """Rows to ask ``data synth`` for so that its train split has exactly ``train_rows``."""
    rows = round(train_rows / (1 - test_fraction))
    while rows - round(test_fraction * rows) > train_rows:
        rows -= 1
    while rows - round(test_fraction * rows) < train_rows:
        rows += 1
    return rows


def synthetic_dataset(work: Path, task: str, train_rows: int, features: int,
                      test_fraction: float, **options) -> Path:  # fmt: skip
    """A cached ``data synth`` dataset under ``work`` (``train/`` and ``test/``), made once.

    ``options`` are further ``data synth`` flags (``classes=10``); 4 shards, seed 1.
    """
    out = work / f"synth-{task}-{train_rows}x{features}"
    if not (out / "train").is_dir():
        arguments = flags(task=task, rows=total_rows(train_rows, test_fraction),
                          features=features, shards=4, test_fraction=test_fraction, seed=1,
                          out=out, **options)  # fmt: skip
        command = [sys.executable, "-m", "mpigd", "data", "synth", *arguments]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out
