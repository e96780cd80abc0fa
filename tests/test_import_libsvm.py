"""libsvm import: sparse shards equal to scikit-learn's reading, chunked and parallel
imports equal to the serial one byte for byte, and one clear error per bad line."""

import gzip
import os
import threading
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from helpers import run_mpigd
from sklearn.datasets import load_svmlight_file

from mpigd.data import import_file, libsvm
from mpigd.errors import DataError

TINY = 1e-6  # MiB: a chunk of 1 byte, so every line is a chunk of its own


def varied_lines(n=40, seed=0, one_based=True):
    """libsvm text with what real files hold: comments, blank lines, qid, explicit zeros,
    CRLF, long and empty rows, no newline at the end."""
    rng = np.random.default_rng(seed)
    lines = ["# a header comment that is longer than most of the data lines here"]
    for i in range(n):
        ids = np.sort(rng.choice(np.arange(30), size=rng.integers(0, 8), replace=False))
        ids = ids + one_based
        pairs = " ".join(f"{j}:{rng.standard_normal():.6g}" for j in ids)
        label = rng.choice(["+1", "-1"])
        line = f"{label} {pairs}"
        if i % 7 == 3:
            line = f"{label} qid:{i} {pairs}  # trailing comment"
        if i % 11 == 5:
            line += " 40:0"  # an explicit zero, at the largest id
        lines.append(line + ("\r" if i % 13 == 4 else ""))
        if i % 9 == 8:
            lines.append("")
    return "\n".join(lines)  # no newline after the last line


def datasets(path):
    """Every dataset of a dataset file or shard directory, with its dtype and bytes, and
    the attributes: what a byte-for-byte comparison compares."""
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, name) for name in os.listdir(path)
    )  # fmt: skip
    found = []
    for name in files:
        with h5py.File(name, "r") as f:
            parts = {
                key: (f[key].dtype.str, f[key][()].tobytes())
                for key in ("X/data", "X/indices", "X/indptr", "y")
            }
            attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
            group = {k: np.asarray(v).tolist() for k, v in f["X"].attrs.items()}
            found.append((os.path.basename(name), parts, attrs, group))
    return found


def read_csr(path):
    import scipy.sparse as sp

    with h5py.File(path, "r") as f:
        X = f["X"]
        matrix = sp.csr_matrix(
            (X["data"][()], X["indices"][()], X["indptr"][()]), shape=tuple(X.attrs["shape"])
        )
        return matrix, f["y"][()], dict(f.attrs)


@pytest.mark.parametrize("one_based", [True, False])
def test_equals_scikit_learn(tmp_path, one_based):
    source = tmp_path / "a.svm"
    source.write_text(varied_lines(one_based=one_based))
    summary = import_file(source, "libsvm", tmp_path / "a.h5", chunk_mb=TINY)
    expected, labels = load_svmlight_file(source)
    X, y, attrs = read_csr(tmp_path / "a.h5")
    assert X.shape == expected.shape and summary["features"] == expected.shape[1]
    np.testing.assert_array_equal(X.indptr, expected.indptr)
    np.testing.assert_array_equal(X.indices, expected.indices)
    np.testing.assert_array_equal(X.data, expected.data)  # explicit zeros too
    assert X.has_sorted_indices and X.indices.dtype == np.int32
    np.testing.assert_array_equal(y, (labels + 1) // 2)  # -1/+1 -> class ids 0/1
    assert summary["label_values"] == [-1, 1] and summary["nnz"] == expected.nnz
    assert summary["zero_based"] is not one_based and attrs["feature_index_base"] == one_based


def test_zero_or_one_based_detected_over_the_whole_file_and_overridden(tmp_path):
    source = tmp_path / "a.svm"
    source.write_text("1 1:1 3:2\n0 2:1\n" * 5 + "1 0:7\n")  # the only 0 is in the last line
    summary = import_file(source, "libsvm", tmp_path / "a.h5", chunk_mb=TINY)
    assert summary["zero_based"] and summary["features"] == 4
    assert summary["zero_based_reason"] == "detected: a feature id is 0"
    source.write_text("1 1:1 3:2\n0 2:1\n")
    summary = import_file(source, "libsvm", tmp_path / "b.h5")
    assert (summary["zero_based"], summary["features"]) == (False, 3)
    np.testing.assert_array_equal(read_csr(tmp_path / "b.h5")[0].toarray(), [[1, 0, 2], [0, 1, 0]])
    summary = import_file(source, "libsvm", tmp_path / "c.h5", zero_based=True)
    assert summary["zero_based_reason"] == "given (--zero-based)"
    np.testing.assert_array_equal(
        read_csr(tmp_path / "c.h5")[0].toarray(), [[0, 1, 0, 2], [0, 0, 1, 0]]
    )


def test_like_keeps_the_training_sets_id_base(tmp_path):
    (tmp_path / "tr.svm").write_text("1 0:1 4:2\n-1 2:1\n")
    (tmp_path / "te.svm").write_text("1 4:3\n")  # no id 0: alone it would be 1-based
    import_file(tmp_path / "tr.svm", "libsvm", tmp_path / "tr.h5")
    like = tmp_path / "tr.h5"
    summary = import_file(tmp_path / "te.svm", "libsvm", tmp_path / "te.h5", like=like)
    assert summary["zero_based"] and "--like" in summary["zero_based_reason"]
    np.testing.assert_array_equal(read_csr(tmp_path / "te.h5")[0].toarray(), [[0, 0, 0, 0, 3]])
    with pytest.raises(DataError, match="--no-zero-based contradicts .*start at 0"):
        import_file(tmp_path / "te.svm", "libsvm", tmp_path / "x.h5", like=like, zero_based=False)


def test_features_fixes_the_width_and_a_larger_id_names_its_line(tmp_path):
    source = tmp_path / "a.svm"
    source.write_text("1 1:1\n# comment\n\n0 2:1 4:1\n1 3:1\n")
    summary = import_file(source, "libsvm", tmp_path / "a.h5", n_features=6)
    X = read_csr(tmp_path / "a.h5")[0]
    assert X.shape == (3, 6) and summary["features"] == 6
    for chunk_mb in (None, TINY):
        with pytest.raises(
            DataError,
            match=r"a.svm line 4 has feature index 4 but only 3 features are expected \(ids 1..3\)",
        ):
            import_file(source, "libsvm", tmp_path / "b.h5", n_features=3, chunk_mb=chunk_mb)
    with pytest.raises(DataError, match="line 4 has feature index 4 .* expected \\(ids 0..3\\)"):
        import_file(source, "libsvm", tmp_path / "b.h5", n_features=4, zero_based=True)
    assert sorted(os.listdir(tmp_path)) == ["a.h5", "a.svm"]


def test_chunked_import_equals_one_chunk_byte_for_byte(tmp_path, monkeypatch):
    source = tmp_path / "a.svm"
    source.write_text(varied_lines(45, seed=3))
    whole = import_file(source, "libsvm", tmp_path / "whole", shards=3, dtype="float32")
    assert whole["rows"] == 45
    reference = datasets(tmp_path / "whole")
    for chunk_bytes in (1, 17, 100):
        if chunk_bytes == 100:  # copy into the shards in blocks of about 10 nonzeros, too
            monkeypatch.setattr(libsvm, "COPY_MIN_ENTRIES", 10)
        out = tmp_path / f"c{chunk_bytes}"
        import_file(source, "libsvm", out, shards=3, dtype="float32", chunk_mb=chunk_bytes / 2**20)
        assert datasets(out) == reference
    assert [len(p) for p in (reference[0][1]["y"][1], reference[2][1]["y"][1])] == [15 * 8] * 2


def test_labels_are_decided_over_all_chunks(tmp_path):
    source = tmp_path / "m.svm"
    source.write_text("0 1:1\n" * 3 + "1 1:2\n" + "2 2:1\n")  # class 2 only in the last chunk
    summary = import_file(source, "libsvm", tmp_path / "m.h5", chunk_mb=TINY)
    assert (summary["task"], summary["n_classes"]) == ("multiclass", 3)
    np.testing.assert_array_equal(read_csr(tmp_path / "m.h5")[1], [0, 0, 0, 1, 2])
    source.write_text("1 1:1\n" * 4 + "0.5 1:1\n")  # one fractional label, last
    summary = import_file(source, "libsvm", tmp_path / "r.h5", chunk_mb=TINY)
    assert summary["task"] == "regression" and "data row 4" in summary["task_reason"]
    with pytest.raises(DataError, match="needs integer labels but .* label 0.5 at data row 4"):
        import_file(source, "libsvm", tmp_path / "x.h5", task="binary", chunk_mb=TINY)
    source.write_text("2 1:1\n4 1:1\n# c\n2 1:1\n7 1:1\n")
    with pytest.raises(DataError, match="label 7 at data row 3, which is not one of .* 2, 4$"):
        import_file(source, "libsvm", tmp_path / "x.h5", label_values="2,4", chunk_mb=TINY)


def test_compressed_file_imports_as_plain(tmp_path):
    text = varied_lines(20, seed=5)
    (tmp_path / "a.svm").write_text(text)
    with gzip.open(tmp_path / "a.svm.gz", "wt") as f:
        f.write(text)
    import_file(tmp_path / "a.svm", "libsvm", tmp_path / "plain", shards=2, chunk_mb=TINY)
    import_file(tmp_path / "a.svm.gz", "libsvm", tmp_path / "gz", shards=2, chunk_mb=TINY)
    strip = [(n, p, {k: v for k, v in a.items() if k != "source"}, g)
             for n, p, a, g in datasets(tmp_path / "plain")]  # fmt: skip
    assert [(n, p, {k: v for k, v in a.items() if k != "source"}, g)
            for n, p, a, g in datasets(tmp_path / "gz")] == strip  # fmt: skip


BAD_LINES = [
    ("1 2:1 2:3", "feature id 2 appears twice; each id may appear once per line"),
    ("1 3:1 2:1", "feature ids must increase along a line, but 2 comes after 3"),
    ("1 2:nan", "feature 2 has value 'nan'; values must be finite"),
    ("1 2:inf", "feature 2 has value 'inf'; values must be finite"),
    ("nan 2:1", "label 'nan' is not finite"),
    ("x 2:1", "label 'x' is not a number"),
    ("1 abc", "'abc' is not ID:VALUE"),
    ("1 a:1", "feature id 'a' is not an integer"),
    ("1 2:x", "feature 2 has value 'x', not a number"),
    ("1 -1:2", "feature id -1 is negative"),
    (
        "1 3000000000:1",
        "feature id 3000000000 is larger than 2147483647, the largest the parser reads",
    ),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_line_is_one_error_naming_it_and_leaves_nothing(tmp_path, line, message):
    source = tmp_path / "a.svm"
    source.write_text(f"1 1:1\n# comment\n\n-1 1:2 5:1\n{line}\n1 1:1\n")
    for chunk_mb in (None, TINY):
        with pytest.raises(DataError) as error:
            import_file(source, "libsvm", tmp_path / "out", shards=2, chunk_mb=chunk_mb)
        assert str(error.value) == f"cannot parse {source} as libsvm/svmlight: line 5: {message}"
    assert os.listdir(tmp_path) == ["a.svm"]


def test_float32_overflow_and_empty_inputs(tmp_path):
    source = tmp_path / "a.svm"
    source.write_text("1 1:1\n-1 1:1e39\n")
    with pytest.raises(DataError, match="line 2: feature 1 has value '1e39', beyond the range"):
        import_file(source, "libsvm", tmp_path / "a.h5", dtype="float32")
    assert import_file(source, "libsvm", tmp_path / "a.h5")["rows"] == 2
    source.write_text("# only a comment\n\n")
    with pytest.raises(DataError, match="contains no data rows"):
        import_file(source, "libsvm", tmp_path / "b.h5")
    source.write_text("1\n-1\n")
    with pytest.raises(DataError, match="has no features .*--features D"):
        import_file(source, "libsvm", tmp_path / "b.h5")
    assert import_file(source, "libsvm", tmp_path / "b.h5", n_features=2)["nnz"] == 0
    with pytest.raises(DataError, match="chunk size must be > 0"):
        import_file(source, "libsvm", tmp_path / "c.h5", chunk_mb=0)
    assert sorted(os.listdir(tmp_path)) == ["a.h5", "a.svm", "b.h5"]


class ThreadTeam:
    """``size`` threads of this process standing in for the ranks of mpirun (the
    ``team`` of :mod:`mpigd.data.libsvm`): many rank counts, no launch cost."""

    def __init__(self, size):
        self.size, self.slots, self.barrier = size, [None] * size, threading.Barrier(size)

    def run(self, work):
        """``work(team_of_rank)`` on every rank: each rank's result or exception."""
        results = [None] * self.size

        def rank(r):
            try:
                results[r] = work(SimpleNamespace(rank=r, size=self.size, gather=self._gatherer(r)))
            except Exception as exc:  # noqa: BLE001 - compared by the test
                results[r] = exc

        threads = [threading.Thread(target=rank, args=(r,)) for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return results

    def _gatherer(self, r):
        def gather(value):
            self.slots[r] = value
            self.barrier.wait()
            everyone = list(self.slots)
            self.barrier.wait()
            return everyone

        return gather


@pytest.mark.parametrize("ranks", [2, 3, 5, 8])
def test_ranks_in_threads_equal_serial_and_fail_alike(tmp_path, ranks):
    source = tmp_path / "a.svm"
    source.write_text(varied_lines(12, seed=ranks, one_based=False) + "\n# " + "x" * 300)
    import_file(source, "libsvm", tmp_path / "serial", shards=3, chunk_mb=TINY)
    results = ThreadTeam(ranks).run(
        lambda team: import_file(source, "libsvm", tmp_path / "par", shards=3, team=team)
    )
    assert all(r["rows"] == 12 and r["ranks"] == ranks for r in results), results
    assert datasets(tmp_path / "par") == datasets(tmp_path / "serial")
    source.write_text(source.read_text() + "\n1 1:1 2:x\n")
    results = ThreadTeam(ranks).run(
        lambda team: import_file(source, "libsvm", tmp_path / "bad", team=team, n_features=40)
    )
    assert {type(r) for r in results} == {DataError} and len({str(r) for r in results}) == 1
    assert f"line {source.read_text().count(chr(10))}: feature 2 has value 'x'" in str(results[0])
    assert sorted(os.listdir(tmp_path)) == ["a.svm", "par", "serial"]


def test_parallel_import_equals_serial_byte_for_byte(tmp_path):
    source = tmp_path / "a.svm"
    source.write_text(varied_lines(50, seed=7, one_based=False))
    serial = import_file(source, "libsvm", tmp_path / "serial", shards=4)
    result = run_mpigd(
        3, "data", "import", str(source), "--format", "libsvm", "--out", str(tmp_path / "par"),
        "--shards", "4", "--chunk-mb", "0.0001",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"ranks": 3' in result.stdout and result.stdout.count('"rows": 50') == 1
    assert serial["rows"] == 50 and datasets(tmp_path / "par") == datasets(tmp_path / "serial")


def test_parallel_bad_line_fails_every_rank_with_one_message(tmp_path):
    source = tmp_path / "a.svm"
    good = varied_lines(30, seed=8)
    source.write_text(good + "\n1 4:1 4:2\n" + good)  # the bad line is in rank 1's range
    bad_line = good.count("\n") + 2
    result = run_mpigd(
        3, "data", "import", str(source), "--format", "libsvm", "--out", str(tmp_path / "out")
    )
    assert result.returncode == 2
    assert result.stderr.count("mpigd: error") == 1, result.stderr
    assert f"line {bad_line}: feature id 4 appears twice" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.svm"]
