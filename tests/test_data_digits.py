"""scikit-learn's 8x8 digits as a stratified, seeded train/test split."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import REPO

from mpigd.data import open_dataset, read_rows, write_digits
from mpigd.errors import DataError


def read_all(path):
    info = open_dataset(path)
    return info, read_rows(info, 0, info.n_rows)


def test_digits_split_scaled_and_stratified(tmp_path):
    summary = write_digits(tmp_path / "digits", shards=3, dtype="float32", seed=1)
    assert (summary["train"]["rows"], summary["test"]["rows"]) == (1437, 360)
    assert (summary["features"], summary["n_classes"]) == (64, 10)
    counts = {}
    for split in ("train", "test"):
        info, rows = read_all(tmp_path / "digits" / split)
        assert (info.task, info.n_classes, info.dtype, len(info.files)) == (
            "multiclass",
            10,
            np.float32,
            3,
        )
        assert rows.X.min() == 0 and rows.X.max() == 1
        np.testing.assert_array_equal(np.unique(rows.X * 16), np.arange(17))
        counts[split] = np.bincount(rows.y, minlength=10)
        assert (counts[split] > 0).all()
    shares = counts["test"] / (counts["train"] + counts["test"])
    assert np.abs(shares - 0.2).max() < 0.02  # stratified: every class split about 80/20
    with h5py.File(tmp_path / "digits" / "train" / "part-00000.h5", "r") as f:
        assert f.attrs["source"] == "sklearn.datasets.load_digits" and f.attrs["seed"] == 1


def test_digits_are_deterministic_by_seed(tmp_path):
    write_digits(tmp_path / "a", seed=3)
    write_digits(tmp_path / "b", seed=3, shards=2)
    write_digits(tmp_path / "c", seed=4)
    for split in ("train", "test"):
        _, a = read_all(tmp_path / "a" / split)
        _, b = read_all(tmp_path / "b" / split)
        _, c = read_all(tmp_path / "c" / split)
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.array_equal(a.y, c.y)
    _, train = read_all(tmp_path / "a" / "train")
    assert not (np.diff(train.y) >= 0).all()  # shuffled, not sorted by class


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test_fraction": 0}, r"test_fraction must be in \(0, 1\)"),
        ({"test_fraction": 0.001}, "cannot split the digits with test_fraction 0.001"),
        ({"dtype": "int8"}, "dtype must be float32 or float64"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        ({"shards": 2000}, "cannot split 1437 rows into 2000 shards"),
    ],
)
def test_digits_bad_options_write_nothing(tmp_path, options, message):
    with pytest.raises(DataError, match=message):
        write_digits(tmp_path / "d", **options)
    assert not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_digits(tmp_path):
    command = [sys.executable, "-m", "mpigd", "data", "digits", "--out", str(tmp_path / "d")]
    command += ["--test-fraction", "0.25", "--shards", "2", "--seed", "5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["train"] == {"path": str(tmp_path / "d" / "train"), "rows": 1347, "shards": 2}
    assert summary["test"]["rows"] == 450
    assert read_all(tmp_path / "d" / "test")[0].n_rows == 450
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 2 and "already exists" in again.stderr
