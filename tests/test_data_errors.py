"""Every bad input gives a DataError whose one sentence names the file and what is wrong."""

import os
import re

import h5py
import numpy as np
import pytest

from mpigd.data import import_file, load_rank_rows, open_dataset, read_rows, write_dataset
from mpigd.data.writer import ShardWriter, shard_paths, staged_output
from mpigd.errors import DataError


def write_h5(path, X=None, y=None, **attrs):
    """A file with ``X`` (default 4x2 ones), ``y`` (default zeros) and root ``attrs``."""
    X = np.ones((4, 2)) if X is None else X
    y = np.zeros(len(X)) if y is None else y
    attrs = {"task": "regression", **attrs}
    with h5py.File(path, "w") as f:
        if X is not False:
            f["X"] = X
        if y is not False:
            f["y"] = y
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
    return str(path)


def raises(message):
    return pytest.raises(DataError, match=re.escape(message))


def test_missing_path(tmp_path):
    with raises(f"dataset path {tmp_path / 'nope'} does not exist"):
        open_dataset(tmp_path / "nope")


def test_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    with raises(f"dataset file {tmp_path / 'x.h5'} is not an HDF5 file"):
        open_dataset(tmp_path / "x.h5")


def test_missing_X(tmp_path):
    f = write_h5(tmp_path / "d.h5", X=False, y=np.zeros(3))
    with raises(f"file {f} has no dataset 'X'"):
        open_dataset(f)


def test_missing_y(tmp_path):
    f = write_h5(tmp_path / "d.h5", y=False)
    with raises(f"file {f} has no dataset 'y'"):
        open_dataset(f)


def test_X_not_2d(tmp_path):
    f = write_h5(tmp_path / "d.h5", X=np.ones(4))
    with raises(f"dataset 'X' in {f} must be 2-D"):
        open_dataset(f)


def test_X_integer_dtype(tmp_path):
    f = write_h5(tmp_path / "d.h5", X=np.ones((4, 2), dtype=np.int32))
    with raises(f"dataset 'X' in {f} has dtype int32; expected float32 or float64"):
        open_dataset(f)


def test_length_mismatch(tmp_path):
    f = write_h5(tmp_path / "d.h5", y=np.zeros(3))
    with raises(f"file {f} has 4 rows in X but 3 in y"):
        open_dataset(f)


def test_shards_with_different_features(tmp_path):
    a = write_h5(tmp_path / "a.h5")
    b = write_h5(tmp_path / "b.h5", X=np.ones((4, 3)))
    with raises(f"shards disagree on features: {a} has 2 but {b} has 3"):
        open_dataset(tmp_path)


def test_shards_with_different_dtype(tmp_path):
    a = write_h5(tmp_path / "a.h5")
    b = write_h5(tmp_path / "b.h5", X=np.ones((4, 2), dtype=np.float32))
    with raises(f"shards disagree on X dtype: {a} has float64 but {b} has float32"):
        open_dataset(tmp_path)


def test_shards_with_different_task(tmp_path):
    a = write_h5(tmp_path / "a.h5")
    b = write_h5(tmp_path / "b.h5", task="binary", n_classes=2)
    with raises(f"shards disagree on task: {a} has regression but {b} has binary"):
        open_dataset(tmp_path)


def test_nan_in_X(tmp_path):
    write_h5(tmp_path / "a.h5")
    X = np.ones((4, 2))
    X[2, 1] = np.nan
    b = write_h5(tmp_path / "b.h5", X=X)
    with raises(f"file {b} has a non-finite value (nan) in X at row 2, column 1 (global row 6)"):
        read_rows(open_dataset(tmp_path), 3, 8)


def test_inf_in_y(tmp_path):
    f = write_h5(tmp_path / "d.h5", y=np.array([0, 1, -np.inf, 0]))
    with raises(f"file {f} has a non-finite label -inf at global row 2"):
        read_rows(open_dataset(f), 0, 4)


def test_label_out_of_range(tmp_path):
    f = write_h5(tmp_path / "d.h5", y=np.array([0, 2, 3, 1]), task="multiclass", n_classes=3)
    with raises(f"file {f} has class label 3 at global row 2, outside 0..2"):
        read_rows(open_dataset(f), 0, 4)


def test_non_integer_label(tmp_path):
    f = write_h5(tmp_path / "d.h5", y=np.array([0, 0.5, 1, 1]), task="binary", n_classes=2)
    with raises(f"file {f} has non-integer class label 0.5 at global row 1"):
        read_rows(open_dataset(f), 0, 4)


def test_fewer_rows_than_ranks(tmp_path):
    f = write_h5(tmp_path / "d.h5")
    with raises(f"dataset {f} has 4 rows but the job has 5 ranks; each rank needs at least one"):
        load_rank_rows(open_dataset(f), 0, 5)


def test_zero_row_file(tmp_path):
    f = write_h5(tmp_path / "d.h5", X=np.ones((0, 2)))
    with raises(f"dataset {f} has no rows"):
        open_dataset(f)


def test_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("no shards here")
    with raises(f"dataset directory {tmp_path} contains no *.h5 shard files"):
        open_dataset(tmp_path)


def test_missing_task(tmp_path):
    f = write_h5(tmp_path / "d.h5", task=None)
    with raises(f"file {f} has no root attribute 'task'"):
        open_dataset(f)


def test_invalid_task(tmp_path):
    f = write_h5(tmp_path / "d.h5", task="ranking")
    with raises(f"file {f} has task attribute 'ranking'; expected one of regression, binary"):
        open_dataset(f)


def test_missing_n_classes(tmp_path):
    f = write_h5(tmp_path / "d.h5", task="multiclass")
    with raises(f"file {f} has task 'multiclass' but no root attribute 'n_classes'"):
        open_dataset(f)


def test_binary_with_three_classes(tmp_path):
    f = write_h5(tmp_path / "d.h5", task="binary", n_classes=3)
    with raises(f"file {f} has task 'binary' but n_classes 3; expected 2"):
        open_dataset(f)


def test_import_missing_file(tmp_path):
    with raises(f"input file {tmp_path / 'a.svm'} does not exist"):
        import_file(tmp_path / "a.svm", "libsvm", tmp_path / "out.h5")


def test_import_unparsable_libsvm(tmp_path):
    (tmp_path / "a.svm").write_text("1 1:0.5\nfoo bar\n")
    with raises(f"cannot parse {tmp_path / 'a.svm'} as libsvm/svmlight"):
        import_file(tmp_path / "a.svm", "libsvm", tmp_path / "out.h5")


def test_import_unparsable_csv(tmp_path):
    (tmp_path / "a.csv").write_text("y,x\n1,2\n3,oops\n")
    with raises(f"cannot parse {tmp_path / 'a.csv'} as CSV"):
        import_file(tmp_path / "a.csv", "csv", tmp_path / "out.h5")


def test_import_npz_without_y(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.ones((2, 2)))
    with raises(f"npz file {tmp_path / 'a.npz'} has no array 'y'"):
        import_file(tmp_path / "a.npz", "npz", tmp_path / "out.h5")


@pytest.mark.parametrize("out", ["out.h5", "out"])
def test_import_nan_leaves_nothing(tmp_path, out):
    (tmp_path / "a.csv").write_text("1,2,3\n0,nan,4\n")
    with raises(
        f"{tmp_path / 'a.csv'} has a NaN or infinite value in the features of data row 1 (from 0)"
    ):
        import_file(tmp_path / "a.csv", "csv", tmp_path / out, shards=1 if out == "out.h5" else 2)
    assert os.listdir(tmp_path) == ["a.csv"]


def test_writer_failure_midway_leaves_nothing(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_output(out, directory=True) as staged:
            with ShardWriter(shard_paths(staged, 2), [3, 3], 2, "float64", "regression") as w:
                w.write(np.ones((4, 2)), np.zeros(4))  # first shard complete
                raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_writer_short_of_rows_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="wrote 4 of 6 rows"):
        with staged_output(tmp_path / "d.h5", directory=False) as staged:
            with ShardWriter([staged], [6], 2, "float64", "regression") as w:
                w.write(np.ones((4, 2)), np.zeros(4))
    assert os.listdir(tmp_path) == []


def test_writer_refuses_existing_output(tmp_path):
    write_h5(tmp_path / "d.h5")
    with raises(f"output {tmp_path / 'd.h5'} already exists"):
        write_dataset(tmp_path / "d.h5", np.ones((2, 2)), np.zeros(2), task="regression")
    assert open_dataset(tmp_path / "d.h5").n_rows == 4


def test_writer_more_shards_than_rows(tmp_path):
    with raises("cannot split 2 rows into 3 shards; use at most 2"):
        write_dataset(tmp_path / "d", np.ones((2, 2)), np.zeros(2), task="regression", shards=3)
    assert os.listdir(tmp_path) == []
