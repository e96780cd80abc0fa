"""Under mpirun every rank runs pytest: give each rank its own temporary base directory
inside one directory unique to this test session (made by rank 0, shared by broadcast),
so that ranks never clean up each other's pytest temporaries and two sessions on one
machine never meet."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    if config.getoption("with_mpi", default=False) and config.option.basetemp is None:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        session = world.bcast(tempfile.mkdtemp(prefix="mpigd-pytest-") if world.rank == 0 else None)
        config.option.basetemp = os.path.join(session, f"rank{world.rank}")
