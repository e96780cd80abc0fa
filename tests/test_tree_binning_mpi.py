"""Under ``mpirun -n P``: fit_bins on P ranks gives exactly the one-rank bins, for any split
of the rows, with and without sampling, in one block of columns or many; a bad value on one
rank fails every rank together.

Run with ``mpirun -n P python -m pytest --with-mpi tests/test_tree_binning_mpi.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpigd.data import row_range
from mpigd.errors import CollectiveError
from mpigd.trees import binning
from mpigd.trees.binning import fit_bins

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(60)]

WORLD = MPI.COMM_WORLD
N_ROWS = 6007


def _data(dtype=np.float64) -> np.ndarray:
    """(N_ROWS, 6), the same on every rank: continuous, few values, constant, ties."""
    rng = np.random.default_rng(8)
    columns = [
        rng.standard_normal(N_ROWS),
        rng.integers(0, 6, N_ROWS),
        np.full(N_ROWS, -1.0),
        np.where(rng.random(N_ROWS) < 0.85, 2.0, rng.standard_normal(N_ROWS)),
        rng.lognormal(0, 3, N_ROWS),
        np.round(rng.standard_normal(N_ROWS), 1),
    ]
    return np.column_stack(columns).astype(dtype)


def _split(kind: str) -> tuple[int, int]:
    """This rank's rows [start, stop) under a split of ``kind``."""
    rank, size = WORLD.rank, WORLD.size
    if kind == "even":
        return row_range(N_ROWS, rank, size)
    if kind == "reversed":  # rank r holds the block of rank P-1-r
        return row_range(N_ROWS, size - 1 - rank, size)
    if kind == "rank 0 empty" and size > 1:
        return (0, 0) if rank == 0 else row_range(N_ROWS, rank - 1, size - 1)
    cuts = np.sort(np.random.default_rng(size).choice(np.arange(1, N_ROWS), size - 1, False))
    bounds = np.concatenate(([0], cuts, [N_ROWS]))
    return int(bounds[rank]), int(bounds[rank + 1])


def _assert_same(bins, expected):
    arrays, serial = bins.to_arrays(), expected.to_arrays()
    assert arrays["edges"].tobytes() == serial["edges"].tobytes()  # bit for bit
    np.testing.assert_array_equal(arrays["edge_offsets"], serial["edge_offsets"])
    np.testing.assert_array_equal(bins.n_bins, expected.n_bins)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sample_rows", [200_000, 1500])
@pytest.mark.parametrize("max_bins", [255, 7])
@pytest.mark.parametrize("split", ["even", "reversed", "rank 0 empty", "random"])
def test_bins_equal_the_one_rank_bins(split, max_bins, sample_rows, dtype):
    X = _data(dtype)
    start, stop = _split(split)
    bins = fit_bins(WORLD, X[start:stop], start, N_ROWS, max_bins, 4, sample_rows)
    serial = fit_bins(MPI.COMM_SELF, X, 0, N_ROWS, max_bins, 4, sample_rows)
    _assert_same(bins, serial)
    assert bins.n_bins[0] == bins.max_bins_used == max_bins and bins.n_bins[2] == 1
    codes = sorted(WORLD.allgather((start, bins.codes(X[start:stop]))), key=lambda p: p[0])
    np.testing.assert_array_equal(np.concatenate([c for _, c in codes]), serial.codes(X))


def test_bins_gathered_a_column_at_a_time_are_the_same(monkeypatch):
    X = _data()
    start, stop = _split("random")
    whole = fit_bins(WORLD, X[start:stop], start, N_ROWS, 64, 2, 3000)
    monkeypatch.setattr(binning, "BLOCK_BYTES", 1)  # every rank: one column a block
    blocked = fit_bins(WORLD, X[start:stop], start, N_ROWS, 64, 2, 3000)
    _assert_same(blocked, whole)
    _assert_same(blocked, fit_bins(MPI.COMM_SELF, X, 0, N_ROWS, 64, 2, 3000))


def test_a_non_finite_value_on_one_rank_fails_every_rank():
    X = _data()
    start, stop = _split("even")
    X[stop - 1, 4] = np.inf if WORLD.rank == WORLD.size - 1 else X[stop - 1, 4]
    with pytest.raises(CollectiveError, match="cannot bin feature 4"):
        fit_bins(WORLD, X[start:stop], start, N_ROWS, 16, 0)


def test_ranks_with_different_features_are_refused_everywhere():
    if WORLD.size == 1:
        pytest.skip("needs two ranks")
    X = _data()
    start, stop = _split("even")
    local = X[start:stop, : 6 - (WORLD.rank == WORLD.size - 1)]
    with pytest.raises(ValueError, match="different numbers of features"):
        fit_bins(WORLD, local, start, N_ROWS, 16, 0)
