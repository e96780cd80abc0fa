"""Under ``mpirun -n P``: each rank reads exactly its slice, and the slices tile the dataset.

Run with ``mpirun -n P python -m pytest --with-mpi -m mpi tests/test_data_mpi.py``.
"""

import shutil
import tempfile

import numpy as np
import pytest

from mpigd.data import load_rank_rows, open_dataset, row_range, write_dataset

pytestmark = pytest.mark.timeout(60)

N_ROWS = 1001


@pytest.fixture
def comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def shared_dir(comm):
    """A temporary directory made by rank 0, known to all ranks, removed after the test."""
    path = comm.bcast(tempfile.mkdtemp(prefix="mpigd-test-") if comm.rank == 0 else None)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path)


@pytest.fixture
def dataset(comm, shared_dir):
    """``(info, X, y)``: 1001 binary rows in 3 shards written by rank 0, and the serial
    arrays, regenerated on every rank."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((N_ROWS, 4)), rng.integers(0, 2, N_ROWS)
    if comm.rank == 0:
        write_dataset(f"{shared_dir}/d", X, y, task="binary", n_classes=2, shards=3)
    comm.Barrier()
    return open_dataset(f"{shared_dir}/d"), X, y


@pytest.mark.mpi
def test_rank_rows_equal_serial_slice(comm, dataset):
    info, X, y = dataset
    assert info.rows_per_file == (333, 334, 334)
    local = load_rank_rows(info, comm.rank, comm.size)
    start, stop = row_range(N_ROWS, comm.rank, comm.size)
    assert (local.start, local.stop) == (start, stop)
    np.testing.assert_array_equal(local.X, X[start:stop])
    np.testing.assert_array_equal(local.y, y[start:stop])


@pytest.mark.mpi
def test_rank_rows_cover_dataset_once(comm, dataset):
    local = load_rank_rows(dataset[0], comm.rank, comm.size)
    ranges = comm.allgather((local.start, local.stop))
    counts = np.zeros(N_ROWS, dtype=int)
    for start, stop in ranges:
        counts[start:stop] += 1
    assert (counts == 1).all()
    assert [stop - start for start, stop in ranges] == [len(r) for r in comm.allgather(local.y)]
