"""The provenance half of run.json: who ran what, where, with which software."""

from __future__ import annotations

import sys

from mpigd import comm as mpi
from mpigd.record import git_commit, software_versions


def describe_run(
    config, ranks: mpi.RankInfo, places: list[dict], info, model_info: dict, gpu: dict | None = None
) -> dict:
    """run.json's fields at the start of a run (rank 0 calls this).

    ``gpu``: the device record of :func:`mpigd.device.place` (``--backend cupy``), else None.
    """
    return {
        "config": config.to_dict(),
        "command": sys.argv,
        "git_commit": git_commit(),
        "mpi_library": mpi.mpi_library_version(),
        "world_size": ranks.size,
        "hosts": [place["host"] for place in places],
        "pids": [place["pid"] for place in places],
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
