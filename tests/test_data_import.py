"""Import of libsvm, CSV and npz files: parsing, task inference and label mapping."""

import h5py
import numpy as np
import pytest

from mpigd.data import import_file, inspect_dataset, open_dataset, read_rows
from mpigd.data import inspect as inspect_module
from mpigd.errors import DataError


def read_all(path):
    info = open_dataset(path)
    return info, read_rows(info, 0, info.n_rows)


def test_libsvm_binary_with_plus_minus_one_labels(tmp_path):
    source = tmp_path / "a.svm"
    source.write_text("+1 1:0.5 3:2\n-1 2:1.5\n# a comment\n-1 1:-1 2:0.25 3:4\n+1 3:1e-1\n")
    summary = import_file(source, "libsvm", tmp_path / "a.h5")
    assert summary["task"] == "binary" and summary["label_values"] == [-1, 1]
    info, rows = read_all(tmp_path / "a.h5")
    assert info.files == (str(tmp_path / "a.h5"),) and info.n_classes == 2
    expected = [[0.5, 0, 2], [0, 1.5, 0], [-1, 0.25, 4], [0, 0, 0.1]]
    np.testing.assert_array_equal(rows.X, expected)
    np.testing.assert_array_equal(rows.y, [1, 0, 0, 1])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f.attrs["label_values"], [-1, 1])
        assert f.attrs["source_format"] == "libsvm"


def test_libsvm_multiclass_one_based_labels_into_shards(tmp_path):
    source = tmp_path / "m.svm"
    source.write_text("".join(f"{k % 3 + 1} 1:{k} 2:{-k}\n" for k in range(9)))
    summary = import_file(source, "libsvm", tmp_path / "m", shards=2, dtype="float32")
    assert (summary["task"], summary["n_classes"], summary["label_values"]) == (
        "multiclass",
        3,
        [1, 2, 3],
    )
    info, rows = read_all(tmp_path / "m")
    assert info.rows_per_file == (4, 5) and info.dtype == np.float32
    np.testing.assert_array_equal(rows.y, [k % 3 for k in range(9)])
    np.testing.assert_array_equal(rows.X[:, 0], np.arange(9))


def test_csv_with_header_label_first(tmp_path):
    source = tmp_path / "h.csv"
    source.write_text("label,f1,f2\n0.5,1,2\n-1.25,3,4\n2,5,6\n")
    summary = import_file(source, "csv", tmp_path / "h.h5")
    assert summary["task"] == "regression" and summary["label_values"] is None
    info, rows = read_all(tmp_path / "h.h5")
    assert info.n_classes is None
    np.testing.assert_array_equal(rows.X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(rows.y, [0.5, -1.25, 2])


def test_csv_without_header_label_last(tmp_path):
    source = tmp_path / "n.csv"
    source.write_text("1,2,7\n3,4,9\n5,6,7\n")
    summary = import_file(source, "csv", tmp_path / "n.h5", label_column=-1)
    assert summary["task"] == "binary" and summary["label_values"] == [7, 9]
    _, rows = read_all(tmp_path / "n.h5")
    np.testing.assert_array_equal(rows.X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(rows.y, [0, 1, 0])


def test_whitespace_separated_csv(tmp_path):
    source = tmp_path / "w.txt"
    source.write_text("0 1.5 2\n1 3 4\n")
    _, rows = read_all(import_file(source, "csv", tmp_path / "w.h5")["out"])
    np.testing.assert_array_equal(rows.X, [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(rows.y, [0, 1])


def test_npz_multiclass_inferred(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([10, 20, 30, 10, 20, 30])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    summary = import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5")
    assert summary["task"] == "multiclass" and summary["label_values"] == [10, 20, 30]
    _, rows = read_all(tmp_path / "d.h5")
    np.testing.assert_array_equal(rows.X, X)
    np.testing.assert_array_equal(rows.y, [0, 1, 2, 0, 1, 2])


def test_explicit_task_and_classes_keep_absent_classes(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 1)), y=np.array([0, 2, 2]))
    summary = import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", n_classes=4)
    assert (summary["task"], summary["n_classes"]) == ("multiclass", 4)
    _, rows = read_all(tmp_path / "d.h5")
    np.testing.assert_array_equal(rows.y, [0, 2, 2])
    assert inspect_dataset(tmp_path / "d.h5")["class_counts"] == [1, 0, 2, 0]


def test_binary_test_split_with_one_class_keeps_meaning(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((2, 1)), y=np.array([1.0, 1.0]))
    summary = import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", task="binary")
    assert summary["label_values"] == [0, 1]
    np.testing.assert_array_equal(read_all(tmp_path / "d.h5")[1].y, [1, 1])


def test_integer_labels_may_be_regression_when_asked(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 1)), y=np.array([1, 2, 2]))
    summary = import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", task="regression")
    assert summary["task"] == "regression"
    np.testing.assert_array_equal(read_all(tmp_path / "d.h5")[1].y, [1.0, 2.0, 2.0])


def test_labels_contradicting_task(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 1)), y=np.array([0.5, 1.0, 0.0]))
    with pytest.raises(
        DataError, match="task 'binary' needs integer labels .* label 0.5 at data row 0"
    ):
        import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", task="binary")
    np.savez(tmp_path / "e.npz", X=np.ones((3, 1)), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="task 'binary' needs 2 label values .* has 3: 0, 1, 2"):
        import_file(tmp_path / "e.npz", "npz", tmp_path / "e.h5", task="binary")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "e.npz"]


def test_inspect_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(inspect_module, "LABEL_CHUNK_ROWS", 3)  # merge moments of 2 chunks
    np.savez(tmp_path / "d.npz", X=np.ones((4, 2)), y=np.array([1.0, 2.0, 3.0, 6.0]))
    import_file(tmp_path / "d.npz", "npz", tmp_path / "d", shards=2, task="regression")
    summary = inspect_dataset(tmp_path / "d")
    assert (summary["rows"], summary["features"], summary["dtype"]) == (4, 2, "float64")
    assert [s["rows"] for s in summary["shards"]] == [2, 2]
    assert summary["y"] == pytest.approx({"mean": 3.0, "std": 1.8708287, "min": 1.0, "max": 6.0})
