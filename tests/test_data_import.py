"""Import of libsvm, CSV and npz files: parsing, task inference and label mapping."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import REPO

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
    assert info.files == (str(tmp_path / "a.h5"),) and info.n_classes == 2 and info.sparse
    expected = [[0.5, 0, 2], [0, 1.5, 0], [-1, 0.25, 4], [0, 0, 0.1]]
    np.testing.assert_array_equal(rows.X.toarray(), expected)
    np.testing.assert_array_equal(rows.y, [1, 0, 0, 1])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f.attrs["label_values"], [-1, 1])
        assert f.attrs["source_format"] == "libsvm"


def test_libsvm_multiclass_one_based_labels_into_shards(tmp_path):
    source = tmp_path / "m.svm"
    source.write_text("".join(f"{k % 3 + 1} 1:{k} 2:{-k}\n" for k in range(9)))
    with pytest.raises(DataError, match="do not include class 0.*--label-values"):
        import_file(source, "libsvm", tmp_path / "m", task="multiclass")
    summary = import_file(
        source, "libsvm", tmp_path / "m", shards=2, dtype="float32", label_values="1,2,3"
    )
    assert (summary["task"], summary["n_classes"], summary["label_values"]) == (
        "multiclass",
        3,
        [1, 2, 3],
    )
    info, rows = read_all(tmp_path / "m")
    assert info.rows_per_file == (4, 5) and info.dtype == np.float32
    np.testing.assert_array_equal(rows.y, [k % 3 for k in range(9)])
    np.testing.assert_array_equal(rows.X[:, 0].toarray().ravel(), np.arange(9))


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


def test_npz_multiclass_with_pinned_label_values(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([10, 30, 20, 10, 20, 30])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    summary = import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", label_values=[30, 10, 20])
    assert summary["task"] == "multiclass" and summary["label_values"] == [30, 10, 20]
    _, rows = read_all(tmp_path / "d.h5")
    np.testing.assert_array_equal(rows.X, X)
    np.testing.assert_array_equal(rows.y, [1, 0, 2, 1, 2, 0])
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(f.attrs["label_values"], [30, 10, 20])


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


# Label mapping that does not depend on which values a file happens to contain.


def save_npz(path, y, d=1):
    y = np.asarray(y)
    np.savez(path, X=np.arange(len(y) * d, dtype=np.float64).reshape(len(y), d), y=y)
    return path


def test_binary_train_and_one_class_test_map_alike_with_like(tmp_path):
    train = import_file(save_npz(tmp_path / "tr.npz", [1, 2, 2, 1]), "npz", tmp_path / "tr.h5")
    assert (train["task"], train["label_values"]) == ("binary", [1, 2])
    test = import_file(
        save_npz(tmp_path / "te.npz", [1, 1]), "npz", tmp_path / "te", like=tmp_path / "tr.h5"
    )
    assert (test["task"], test["n_classes"], test["label_values"]) == ("binary", 2, [1, 2])
    np.testing.assert_array_equal(read_all(tmp_path / "te")[1].y, [0, 0])  # 1 is class 0
    with h5py.File(tmp_path / "te" / "part-00000.h5", "r") as f:
        np.testing.assert_array_equal(f.attrs["label_values"], [1, 2])


def test_class_ids_are_kept_whatever_classes_a_file_lacks(tmp_path):
    np.savez(tmp_path / "pm.npz", X=np.ones((2, 1)), y=np.array([-1, -1]))
    assert import_file(tmp_path / "pm.npz", "npz", tmp_path / "pm.h5", task="binary")[
        "label_values"
    ] == [-1, 1]
    np.testing.assert_array_equal(read_all(tmp_path / "pm.h5")[1].y, [0, 0])
    save_npz(tmp_path / "tr.npz", [0, 1, 2, 3, 3])
    train = import_file(tmp_path / "tr.npz", "npz", tmp_path / "tr.h5", task="multiclass")
    assert (train["n_classes"], train["label_values"]) == (4, [0, 1, 2, 3])
    save_npz(tmp_path / "te.npz", [3, 1, 2])  # no class 0: 1-based labels or a lacking test split?
    with pytest.raises(DataError, match=r"\(1, 2, 3\) do not include class 0.*--like"):
        import_file(tmp_path / "te.npz", "npz", tmp_path / "te.h5", task="multiclass")
    for out, options in (("like.h5", {"like": tmp_path / "tr.h5"}), ("c.h5", {"n_classes": 4})):
        summary = import_file(tmp_path / "te.npz", "npz", tmp_path / out, **options)
        assert (summary["n_classes"], summary["label_values"]) == (4, [0, 1, 2, 3])
        np.testing.assert_array_equal(read_all(tmp_path / out)[1].y, [3, 1, 2])
    with pytest.raises(DataError, match=r"\(1, 2, 3\) are not class ids 0\.\.2"):
        import_file(tmp_path / "te.npz", "npz", tmp_path / "x.h5", n_classes=3)


def test_pinned_label_values_reject_other_labels(tmp_path):
    save_npz(tmp_path / "d.npz", [4, 2, 7])
    with pytest.raises(DataError, match=r"label 7 at data row 2, which is not one of .* 2, 4$"):
        import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", label_values="2,4")
    with pytest.raises(DataError, match="with 4 classes does not fit the 3 label values"):
        import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", label_values="2,4,7", n_classes=4)
    for bad in ("1,1", "1", "1.5,2"):
        with pytest.raises(DataError, match="label values must"):
            import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", label_values=bad)
    with pytest.raises(DataError, match=r"are numbers \(e.g. 4\) but the label values are names"):
        import_file(tmp_path / "d.npz", "npz", tmp_path / "d.h5", label_values="1,x")
    with pytest.raises(DataError, match="apply to classification, not regression"):
        import_file(
            tmp_path / "d.npz", "npz", tmp_path / "d.h5", task="regression", label_values="2,4,7"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_like_reuses_task_classes_and_features_and_rejects_contradictions(tmp_path):
    from mpigd.data import write_synthetic

    write_synthetic(tmp_path / "s", "multiclass", 40, 3, classes=4, shards=2, seed=1)
    np.savez(tmp_path / "t.npz", X=np.ones((2, 3)), y=np.array([3, 1]))
    summary = import_file(tmp_path / "t.npz", "npz", tmp_path / "t.h5", like=tmp_path / "s/test")
    assert (summary["task"], summary["n_classes"], summary["label_values"]) == (
        "multiclass",
        4,
        [0, 1, 2, 3],
    )
    np.testing.assert_array_equal(read_all(tmp_path / "t.h5")[1].y, [3, 1])
    like = tmp_path / "s" / "train"
    for options, message in (
        ({"task": "binary"}, "task=binary contradicts .*task=multiclass"),
        ({"n_classes": 5}, "n_classes=5 contradicts .*n_classes=4"),
        ({"label_values": "1,2,3,4"}, "label values 1, 2, 3, 4 contradict .* 0, 1, 2, 3"),
        ({"n_features": 2}, "n_features=2 contradicts .*n_features=3"),
    ):
        with pytest.raises(DataError, match=message):
            import_file(tmp_path / "t.npz", "npz", tmp_path / "x.h5", like=like, **options)
    np.savez(tmp_path / "wide.npz", X=np.ones((2, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="has 4 feature columns but 3 are expected"):
        import_file(tmp_path / "wide.npz", "npz", tmp_path / "x.h5", like=like)


def test_libsvm_feature_count_from_option_or_training_set(tmp_path):
    (tmp_path / "tr.svm").write_text("1 1:1 5:2\n-1 2:1\n")
    (tmp_path / "te.svm").write_text("1 4:3\n")  # largest index 4: would be d = 4 on its own
    import_file(tmp_path / "tr.svm", "libsvm", tmp_path / "tr.h5")
    summary = import_file(
        tmp_path / "te.svm", "libsvm", tmp_path / "te.h5", like=tmp_path / "tr.h5"
    )
    assert (summary["features"], summary["label_values"]) == (5, [-1, 1])
    np.testing.assert_array_equal(read_all(tmp_path / "te.h5")[1].X.toarray(), [[0, 0, 0, 3, 0]])
    summary = import_file(
        tmp_path / "te.svm", "libsvm", tmp_path / "d7.h5", n_features=7, task="binary"
    )
    assert summary["features"] == 7
    with pytest.raises(DataError, match="has feature index 5 but only 4 features are expected"):
        import_file(tmp_path / "tr.svm", "libsvm", tmp_path / "x.h5", n_features=4)


def test_libsvm_indices_are_zero_based_when_an_id_is_0_unless_told(tmp_path):
    (tmp_path / "z.svm").write_text("1 0:1 2:2\n0 1:1\n")
    with pytest.raises(DataError, match="line 1: feature id 0, but ids start at 1"):
        import_file(tmp_path / "z.svm", "libsvm", tmp_path / "z.h5", zero_based=False)
    import_file(tmp_path / "z.svm", "libsvm", tmp_path / "z.h5")
    np.testing.assert_array_equal(
        read_all(tmp_path / "z.h5")[1].X.toarray(), [[1, 0, 2], [0, 1, 0]]
    )


# CSV: the first line is a header only when it is text; missing values are errors.


def test_csv_missing_value_in_first_row_is_an_error_not_a_header(tmp_path):
    source = tmp_path / "m.csv"
    source.write_text("1,0.5,\n0,1,2\n")
    with pytest.raises(DataError, match=f"cannot parse {source} as CSV: line 1: missing value"):
        import_file(source, "csv", tmp_path / "m.h5")
    source.write_text("y,a,b\n\n1,0.5,2\n0,,2\n")
    with pytest.raises(DataError, match=r"line 4: missing value in column 1 \(from 0\)"):
        import_file(source, "csv", tmp_path / "m.h5")
    source.write_text("1,0.5,2\n0,1\n")
    with pytest.raises(DataError, match="line 2 has 2 columns but line 1 3"):
        import_file(source, "csv", tmp_path / "m.h5")


def test_csv_with_byte_order_mark_keeps_every_row(tmp_path):
    source = tmp_path / "bom.csv"
    source.write_text("1,0.5,2\n0,3,4\n", encoding="utf-8-sig")
    assert import_file(source, "csv", tmp_path / "a.h5")["rows"] == 2
    np.testing.assert_array_equal(read_all(tmp_path / "a.h5")[1].X, [[0.5, 2], [3, 4]])
    source.write_text("label,a,b\n1,0.5,2\n0,3,4\n", encoding="utf-8-sig")
    assert import_file(source, "csv", tmp_path / "b.h5")["rows"] == 2


def test_csv_header_detection_and_override(tmp_path):
    source = tmp_path / "h.csv"
    source.write_text(",a,b\n1,0.5,2\n0,3,4\n")  # an unnamed (index) column is still a header
    assert import_file(source, "csv", tmp_path / "a.h5")["rows"] == 2
    source.write_text("1,NA,2\n0,3,4\n")
    with pytest.raises(DataError, match="line 1 of .* mixes numbers and text .*--no-header"):
        import_file(source, "csv", tmp_path / "b.h5")
    with pytest.raises(DataError, match=r"line 1: column 1 \(from 0\) is 'NA', not a number"):
        import_file(source, "csv", tmp_path / "b.h5", header=False)
    source.write_text("label,0,1\n1,0.5,2\n0,3,4\n")
    assert import_file(source, "csv", tmp_path / "c.h5", header=True)["rows"] == 2
    source.write_text("# comment\n7,8,9\n1,0.5,2\n0,3,4\n")
    assert import_file(source, "csv", tmp_path / "d.h5", header=True)["rows"] == 2
    assert import_file(source, "csv", tmp_path / "e.h5", task="regression")["rows"] == 3


# CSV: which column is the label (columns from 0 in options and messages), text labels.


def test_csv_header_column_named_label_is_the_label_and_integer_labels_stay_classes(tmp_path):
    """The issue's file: label last, fractional features; column 0 made it regression."""
    source = tmp_path / "c.csv"
    source.write_text("f1,f2,Label\n0.5,1.5,0\n2.5,0.25,2\n1.0,3.5,1\n0.75,2.0,2\n")
    summary = import_file(source, "csv", tmp_path / "c.h5")
    assert (summary["task"], summary["n_classes"]) == ("multiclass", 3)
    assert summary["task_reason"] == "the labels are the integers 0..2, each present"
    assert (summary["label_column"], summary["label_column_name"]) == (2, "Label")
    assert "named 'label'" in summary["label_column_reason"]
    _, rows = read_all(tmp_path / "c.h5")
    np.testing.assert_array_equal(rows.X, [[0.5, 1.5], [2.5, 0.25], [1.0, 3.5], [0.75, 2.0]])
    np.testing.assert_array_equal(rows.y, [0, 2, 1, 2])
    fractional = import_file(source, "csv", tmp_path / "r.h5", label_column=0)
    assert fractional["task"] == "regression"
    assert fractional["task_reason"] == "the labels have fractional values (data row 0)"
    assert fractional["label_column_reason"] == "given by index"


def test_csv_label_column_by_name_or_index_and_its_errors(tmp_path):
    source = tmp_path / "c.csv"
    source.write_text("a,b,y\n1,2,0\n3,4,1\n")
    named = import_file(source, "csv", tmp_path / "n.h5", label_column="Y")
    last = import_file(source, "csv", tmp_path / "l.h5", label_column=-1)
    assert named["label_column"] == last["label_column"] == 2
    assert named["task"] == "binary" and named["label_column_reason"] == "given by name"
    first = import_file(source, "csv", tmp_path / "f.h5")
    assert first["label_column"] == 0
    assert first["label_column_reason"] == "default: column 0 (no header column is named 'label')"
    with pytest.raises(DataError, match=r"no header column named 'z'; .* 0 'a', 1 'b', 2 'y'"):
        import_file(source, "csv", tmp_path / "e.h5", label_column="z")
    with pytest.raises(DataError, match=r"label column 3 is out of range: .* 0 to 2 \(from 0;"):
        import_file(source, "csv", tmp_path / "e.h5", label_column=3)
    with pytest.raises(DataError, match="names a header column but .* without a header"):
        import_file(source, "csv", tmp_path / "e.h5", label_column="y", header=False)
    source.write_text("x,label,label\n1,0,1\n")
    with pytest.raises(DataError, match=r"2 header columns named 'label' \(columns 1, 2, from 0\)"):
        import_file(source, "csv", tmp_path / "e.h5")
    with pytest.raises(DataError, match="a label column and a header apply to format 'csv' only"):
        import_file(save_npz(tmp_path / "d.npz", [0, 1]), "npz", tmp_path / "e.h5", label_column=1)


def test_csv_text_labels_become_sorted_class_ids_kept_as_label_values(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("w,h,label\n4.0,30,dog\n3.5,25,cat\n20,60, dog\n1,10,bird\n")
    summary = import_file(train, "csv", tmp_path / "train.h5")
    assert (summary["task"], summary["label_values"]) == ("multiclass", ["bird", "cat", "dog"])
    assert summary["task_reason"] == "the labels are text: 3 class names, ids in sorted order"
    _, rows = read_all(tmp_path / "train.h5")
    np.testing.assert_array_equal(rows.y, [2, 1, 2, 0])
    np.testing.assert_array_equal(rows.X[:, 1], [30, 25, 60, 10])
    with h5py.File(tmp_path / "train.h5", "r") as f:
        assert list(f.attrs["label_values"]) == ["bird", "cat", "dog"]
    assert inspect_dataset(tmp_path / "train.h5")["label_values"] == ["bird", "cat", "dog"]
    test = tmp_path / "test.csv"
    test.write_text("w,h,label\n5,31,dog\n")  # one class only: the ids come from --like
    like = import_file(test, "csv", tmp_path / "test.h5", like=tmp_path / "train.h5")
    assert like["n_classes"] == 3
    assert like["task_reason"] == f"from the imported dataset {tmp_path / 'train.h5'} (--like)"
    np.testing.assert_array_equal(read_all(tmp_path / "test.h5")[1].y, [2])
    with pytest.raises(DataError, match="labels are all 'dog'; give --label-values"):
        import_file(test, "csv", tmp_path / "t2.h5")
    pinned = import_file(test, "csv", tmp_path / "t3.h5", label_values="dog,cat")
    assert (pinned["task"], pinned["label_values"]) == ("binary", ["dog", "cat"])
    np.testing.assert_array_equal(read_all(tmp_path / "t3.h5")[1].y, [0])
    with pytest.raises(DataError, match="needs numeric labels but the labels of .* are text"):
        import_file(train, "csv", tmp_path / "e.h5", task="regression")


def test_csv_text_labels_without_header_and_mixed_labels(tmp_path):
    source = tmp_path / "n.csv"
    source.write_text("yes,0.5,1\nno,1.5,2\n")  # text in column 0, the default: data
    assert import_file(source, "csv", tmp_path / "a.h5")["label_values"] == ["no", "yes"]
    source.write_text("0.5,1,yes\n1.5,2,no\n")
    with pytest.raises(DataError, match=r"mixes numbers .* text labels in column 2 \(from 0\), "
                                        "give --label-column 2"):  # fmt: skip
        import_file(source, "csv", tmp_path / "b.h5")
    assert import_file(source, "csv", tmp_path / "b.h5", label_column=-1)["task"] == "binary"
    source.write_text("0.5,1,yes\n1.5,2,0\n")
    with pytest.raises(DataError, match=r"column 2 \(from 0\) .* mix text \('yes' at data row 0\)"
                                        r" and numbers \(0 at data row 1;"):  # fmt: skip
        import_file(source, "csv", tmp_path / "c.h5", label_column=2)
    source.write_text("label,0,1\n1,0.5,2\n0,3,4\n")  # a header that looks like data
    with pytest.raises(
        DataError, match="mix text .*; if the first line is a header, give --header"
    ):
        import_file(source, "csv", tmp_path / "c.h5")
    assert import_file(source, "csv", tmp_path / "c.h5", header=True)["task"] == "binary"
    source.write_text("a,b,label\n0.5,x,yes\n")
    with pytest.raises(DataError, match=r"line 2: column 1 \(from 0\) is 'x', not a number"):
        import_file(source, "csv", tmp_path / "d.h5")


# Task inference: two distinct integers, or class ids 0..C-1 each present, are classes.


def test_integer_regression_targets_need_an_explicit_task(tmp_path):
    ages = np.arange(1, 30)
    save_npz(tmp_path / "ages.npz", ages)
    with pytest.raises(
        DataError, match="29 distinct integer value.*--task multiclass or --task regression"
    ):
        import_file(tmp_path / "ages.npz", "npz", tmp_path / "a.h5")
    summary = import_file(tmp_path / "ages.npz", "npz", tmp_path / "a.h5", task="regression")
    assert summary["task"] == "regression"
    np.testing.assert_array_equal(read_all(tmp_path / "a.h5")[1].y, ages)
    save_npz(tmp_path / "one.npz", [1, 1])
    with pytest.raises(
        DataError, match="1 distinct integer value.*--task binary, --task multiclass"
    ):
        import_file(tmp_path / "one.npz", "npz", tmp_path / "o.h5")
    save_npz(tmp_path / "frac.npz", [1, 2.5, 3])
    assert import_file(tmp_path / "frac.npz", "npz", tmp_path / "f.h5")["task"] == "regression"


def test_cli_import_flags(tmp_path):
    (tmp_path / "tr.csv").write_text("2,0.5,1\n4,1,2\n6,3,3\n")
    (tmp_path / "te.csv").write_text("\ufeff4,1,1\n")

    def mpigd_import(source, *flags):
        command = [sys.executable, "-m", "mpigd", "data", "import", str(source), "--format"]
        command += ["csv", "--out", str(tmp_path / f"{source.stem}.h5"), *flags]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    train = mpigd_import(tmp_path / "tr.csv", "--no-header", "--label-values", "6,4,2")
    assert (train["task"], train["label_values"]) == ("multiclass", [6, 4, 2])
    test = mpigd_import(tmp_path / "te.csv", "--like", str(tmp_path / "tr.h5"), "--features", "2")
    assert (test["rows"], test["n_classes"], test["label_values"]) == (1, 3, [6, 4, 2])
    np.testing.assert_array_equal(read_all(tmp_path / "te.h5")[1].y, [1])
    (tmp_path / "named.csv").write_text("a,kind,b\n1,cat,2\n3,dog,4\n")
    named = mpigd_import(tmp_path / "named.csv", "--label-column", "kind")
    assert (named["label_column"], named["label_values"]) == (1, ["cat", "dog"])
    assert named["task"] == "binary" and "text" in named["task_reason"]
