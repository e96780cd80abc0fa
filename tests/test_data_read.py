"""Reading row ranges: every rank gets exactly its serial slice, across shard boundaries."""

import h5py
import numpy as np
import pytest

from mpigd.data import (
    load_rank_rows,
    open_dataset,
    read_labels,
    read_rows,
    row_range,
)

SHARD_ROWS = (100, 650, 251)  # uneven; 1001 rows in all


def write_h5(path, X, y, task="multiclass", n_classes=4):
    with h5py.File(path, "w") as f:
        f["X"] = X
        f["y"] = y
        f.attrs["task"] = task
        if n_classes is not None:
            f.attrs["n_classes"] = n_classes


@pytest.fixture
def table():
    """The serial 1001-row table: X (1001, 3) float64 and multiclass labels y (1001,)."""
    rng = np.random.default_rng(1)
    n = sum(SHARD_ROWS)
    return rng.standard_normal((n, 3)), rng.integers(0, 4, n)


@pytest.fixture
def sharded(tmp_path, table):
    """``table`` split into three shards, written in reverse name order, plus a stray file."""
    X, y = table
    bounds = np.cumsum((0, *SHARD_ROWS))
    for k in reversed(range(len(SHARD_ROWS))):
        rows = slice(bounds[k], bounds[k + 1])
        write_h5(tmp_path / f"shard-{k}.h5", X[rows], y[rows])
    (tmp_path / "README.txt").write_text("not a shard")
    return tmp_path


def test_row_range_partitions_rows_evenly():
    for n in (0, 1, 7, 1001):
        for size in range(1, 8):
            ranges = [row_range(n, r, size) for r in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            lengths = [stop - start for start, stop in ranges]
            assert max(lengths) - min(lengths) <= 1


def test_row_range_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 3"):
        row_range(10, 3, 3)


def test_open_dataset_reads_metadata_in_name_order(sharded):
    info = open_dataset(sharded)
    assert [p.rsplit("/", 1)[1] for p in info.files] == ["shard-0.h5", "shard-1.h5", "shard-2.h5"]
    assert info.rows_per_file == SHARD_ROWS
    assert (info.n_rows, info.n_features) == (1001, 3)
    assert info.dtype == np.float64
    assert (info.task, info.n_classes) == ("multiclass", 4)
    assert info.path == str(sharded)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_each_rank_gets_its_serial_slice(sharded, table, size):
    X, y = table
    info = open_dataset(sharded)
    covered = 0
    for rank in range(size):
        local = load_rank_rows(info, rank, size)
        start, stop = row_range(1001, rank, size)
        assert (local.start, local.stop) == (start, stop)
        np.testing.assert_array_equal(local.X, X[start:stop])
        np.testing.assert_array_equal(local.y, y[start:stop])
        assert local.X.flags.c_contiguous and local.y.dtype == np.int64
        covered += stop - start
    assert covered == 1001


@pytest.mark.parametrize(
    "start, stop",
    [(0, 1001), (99, 101), (100, 750), (749, 751), (5, 995), (500, 500), (1000, 1001)],
)
def test_read_rows_across_shard_boundaries(sharded, table, start, stop):
    X, y = table
    info = open_dataset(sharded)
    local = read_rows(info, start, stop)
    np.testing.assert_array_equal(local.X, X[start:stop])
    np.testing.assert_array_equal(local.y, y[start:stop])
    np.testing.assert_array_equal(read_labels(info, start, stop), y[start:stop])


def test_read_rows_rejects_range_outside_dataset(sharded):
    with pytest.raises(ValueError, match="not within"):
        read_rows(open_dataset(sharded), 1000, 1002)


def test_single_file_float32_regression(tmp_path):
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.linspace(-1, 1, 10)
    write_h5(tmp_path / "one.h5", X, y, task="regression", n_classes=None)
    info = open_dataset(tmp_path / "one.h5")
    assert info.files == (str(tmp_path / "one.h5"),) and info.n_classes is None
    local = load_rank_rows(info, 1, 3)
    assert local.X.dtype == np.float32 and local.y.dtype == np.float64
    np.testing.assert_array_equal(local.X, X[3:6])
    np.testing.assert_array_equal(local.y, y[3:6])


def test_integral_float_labels_become_int64(tmp_path):
    write_h5(tmp_path / "d.h5", np.ones((4, 1)), np.array([0.0, 1.0, 1.0, 0.0]), "binary", 2)
    local = read_rows(open_dataset(tmp_path / "d.h5"), 0, 4)
    assert local.y.dtype == np.int64
    np.testing.assert_array_equal(local.y, [0, 1, 1, 0])


def test_huge_finite_values_are_not_mistaken_for_inf(tmp_path):
    """Slab sums overflow to Inf here; the elementwise check must clear the values."""
    X = np.full((6, 2), 3e38, dtype=np.float32)
    write_h5(tmp_path / "big.h5", X, np.zeros(6), task="regression", n_classes=None)
    np.testing.assert_array_equal(read_rows(open_dataset(tmp_path / "big.h5"), 0, 6).X, X)
