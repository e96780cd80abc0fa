"""The provenance half of run.json: who ran what, where, with which software."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

import mpigd
from mpigd import comm as mpi


def git_commit() -> str | None:
    """The commit of the mpigd source tree, when it is a git checkout."""
    source = Path(mpigd.__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def software_versions(backend_name: str) -> dict:
    """Versions of Python and the numerical stack, for provenance."""
    versions = {
        "mpigd": mpigd.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }
    for module in ("mpi4py", "numba", "scipy", "cupy"):
        imported = sys.modules.get(module)
        versions[module] = getattr(imported, "__version__", None) if imported else None
    versions["backend"] = backend_name
    return versions


def describe_run(
    config, ranks: mpi.RankInfo, places: list[dict], info, model_info: dict, gpu: dict | None = None
) -> dict:
    """run.json's fields at the start of a run (rank 0 calls this).

    ``places``: every rank's host and pid (:func:`mpigd.comm.rank_places`); ``gpu``: the
    device record of :func:`mpigd.device.place` (``--backend cupy``), else None.
    """
    return {
        "config": config.to_dict(),
        "command": sys.argv,
        "git_commit": git_commit(),
        "mpi_library": mpi.mpi_library_version(),
        "world_size": ranks.size,
        "hosts": [place["host"] for place in places],
        "pids": [place["pid"] for place in places],
        "cpus": [place["cpus"] for place in places],
        "versions": software_versions(config.backend),
        "dataset": {
            "path": info.path,
            "rows": info.n_rows,
            "features": info.n_features,
            "dtype": str(info.dtype),
            "task": info.task,
            "n_classes": info.n_classes,
            "shards": len(info.files),
        },
        "model_info": model_info,
        "gpu": gpu,
    }
