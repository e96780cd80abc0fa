"""Synthetic data: deterministic, independent of sharding and chunking, true model stored."""

import h5py
import numpy as np
import pytest

from mpigd.data import open_dataset, read_rows, write_synthetic
from mpigd.data import synth as synth_module
from mpigd.errors import DataError


def read_all(path):
    info = open_dataset(path)
    return info, read_rows(info, 0, info.n_rows)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 rows and chunks of 10 rows, so small tests cross both boundaries."""
    monkeypatch.setattr(synth_module, "BLOCK_ROWS", 64)
    monkeypatch.setattr(synth_module, "_CHUNK_ELEMENTS", 50)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_same_seed_same_data_any_shard_count(tmp_path, small_blocks, task):
    one = write_synthetic(tmp_path / "one", task, rows=301, features=5, shards=1, seed=7)
    four = write_synthetic(tmp_path / "four", task, rows=301, features=5, shards=4, seed=7)
    other = write_synthetic(tmp_path / "other", task, rows=301, features=5, shards=1, seed=8)
    assert four["train"]["shards"] == 4 and four["test"]["shards"] == 4
    for split in ("train", "test"):
        _, a = read_all(one[split]["path"])
        _, b = read_all(four[split]["path"])
        _, c = read_all(other[split]["path"])
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.array_equal(a.X, c.X)


def test_chunk_size_does_not_change_data(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_module, "BLOCK_ROWS", 64)
    first = write_synthetic(tmp_path / "a", "multiclass", rows=200, features=3, seed=1)
    monkeypatch.setattr(synth_module, "_CHUNK_ELEMENTS", 21)
    second = write_synthetic(tmp_path / "b", "multiclass", rows=200, features=3, seed=1)
    _, a = read_all(first["train"]["path"])
    _, b = read_all(second["train"]["path"])
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)


def test_layout_shapes_and_dtypes(tmp_path):
    args = {"classes": 5, "shards": 3, "test_fraction": 0.1, "dtype": "float32"}
    summary = write_synthetic(tmp_path / "d", "multiclass", rows=50, features=4, **args)
    assert summary["train"]["rows"] == 45 and summary["test"]["rows"] == 5
    train, rows = read_all(tmp_path / "d" / "train")
    assert train.rows_per_file == (15, 15, 15)
    assert (train.n_features, train.dtype, train.n_classes) == (4, np.float32, 5)
    assert rows.y.dtype == np.int64 and rows.y.min() >= 0 and rows.y.max() < 5
    test, _ = read_all(tmp_path / "d" / "test")
    assert test.rows_per_file == (1, 2, 2)  # shard k holds [k*N//K, (k+1)*N//K)
    with h5py.File(tmp_path / "d" / "ground_truth.h5", "r") as f:
        assert f["weights"].shape == (5, 4) and f["bias"].shape == (5,)
        assert f.attrs["task"] == "multiclass" and f.attrs["seed"] == 0


def test_float32_is_float64_data_rounded(tmp_path):
    write_synthetic(tmp_path / "a", "regression", rows=30, features=2, dtype="float32")
    write_synthetic(tmp_path / "b", "regression", rows=30, features=2, dtype="float64")
    _, a = read_all(tmp_path / "a" / "train")
    _, b = read_all(tmp_path / "b" / "train")
    np.testing.assert_array_equal(a.X, b.X.astype(np.float32))


def test_test_shards_capped_by_test_rows(tmp_path):
    summary = write_synthetic(tmp_path / "d", "binary", rows=30, features=2, shards=5)
    assert summary["test"] == {"path": str(tmp_path / "d" / "test"), "rows": 6, "shards": 5}
    summary = write_synthetic(tmp_path / "e", "binary", rows=15, features=2, shards=5)
    assert summary["test"]["rows"] == 3 and summary["test"]["shards"] == 3


def test_no_test_split(tmp_path):
    summary = write_synthetic(tmp_path / "d", "regression", rows=10, features=2, test_fraction=0)
    assert summary["test"] is None and summary["train"]["rows"] == 10
    assert not (tmp_path / "d" / "test").exists()


def test_regression_truth_explains_targets(tmp_path):
    write_synthetic(tmp_path / "d", "regression", rows=4000, features=6, seed=3)
    _, rows = read_all(tmp_path / "d" / "train")
    with h5py.File(tmp_path / "d" / "ground_truth.h5", "r") as f:
        w, b = f["weights"][()], f["bias"][()]
        assert w.shape == (6,) and b.shape == ()
        noise = f.attrs["noise_std"]
    residual = rows.y - rows.X @ w - b
    assert abs(residual.std() - noise) < 0.01 * noise + 0.005


def test_binary_is_balanced_and_learnable(tmp_path):
    write_synthetic(tmp_path / "d", "binary", rows=5000, features=8, seed=2)
    info, rows = read_all(tmp_path / "d" / "train")
    assert info.n_classes == 2
    assert 0.35 < rows.y.mean() < 0.65
    with h5py.File(tmp_path / "d" / "ground_truth.h5", "r") as f:
        w, b = f["weights"][()], f["bias"][()]
    accuracy = ((rows.X @ w + b > 0) == rows.y).mean()
    assert 0.8 < accuracy < 0.97


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "ranking"}, "unknown task 'ranking'"),
        ({"rows": 0}, "rows must be >= 1"),
        ({"features": 0}, "features must be >= 1"),
        ({"test_fraction": 1.0}, "test_fraction must be in"),
        ({"dtype": "float16"}, "dtype must be float32 or float64"),
        ({"task": "binary", "classes": 3}, "binary task has 2 classes"),
        ({"task": "multiclass", "classes": 1}, "classes >= 2"),
        ({"rows": 2, "test_fraction": 0.1}, "gives no test rows"),
        ({"rows": 1, "test_fraction": 0.6}, "leaves no training rows"),
        ({"rows": 10, "shards": 9}, "cannot split 8 rows into 9 shards"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"task": "regression", "rows": 10, "features": 2, **kwargs}
    with pytest.raises(DataError, match=message):
        write_synthetic(tmp_path / "d", **args)
    assert not (tmp_path / "d").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    write_synthetic(tmp_path / "d", "binary", rows=20, features=2, seed=0)
    with pytest.raises(DataError, match="already exists"):
        write_synthetic(tmp_path / "d", "binary", rows=20, features=2, seed=1)
    write_synthetic(tmp_path / "d", "binary", rows=30, features=2, seed=1, overwrite=True)
    assert open_dataset(tmp_path / "d" / "train").n_rows == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
