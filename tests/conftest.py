"""Under mpirun every rank runs pytest: give each rank its own temporary base directory,
so that ranks never clean up each other's pytest temporaries."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    if config.getoption("with_mpi", default=False) and config.option.basetemp is None:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        config.option.basetemp = os.path.join(tempfile.gettempdir(), f"mpigd-pytest-rank{rank}")
