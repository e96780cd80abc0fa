"""Sparse (CSR) datasets: reading rows across shards, validation, and reading only a slice."""

import json
import re

import h5py
import helpers
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import write_h5

from mpigd import cli
from mpigd.data import inspect as inspect_module
from mpigd.data import (
    inspect_dataset,
    load_rank_rows,
    open_dataset,
    read_labels,
    read_rows,
    row_range,
    write_synthetic,
)
from mpigd.data import synth as synth_module
from mpigd.data.fingerprint import content_hash
from mpigd.data.writer import (
    SparseShardWriter,
    shard_paths,
    shard_sizes,
    staged_output,
    write_dataset,
)
from mpigd.errors import DataError

SHARD_ROWS = (7, 0, 30, 13)  # uneven, with an empty shard


def random_csr(n, d, density=0.2, seed=0, dtype=np.float64):
    """A canonical random CSR matrix with some empty rows."""
    X = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=dtype)
    X.data += 0.5  # no explicit zeros
    return X


@pytest.fixture
def table():
    X = random_csr(sum(SHARD_ROWS), 40)
    y = np.random.default_rng(1).integers(0, 3, X.shape[0])
    return X, y


@pytest.fixture
def sharded(tmp_path, table):
    X, y = table
    start = 0
    for k, n in enumerate(SHARD_ROWS):
        write_csr_h5(
            tmp_path / f"part-{k}.h5", X[start : start + n], y[start : start + n], "multiclass", 3
        )
        start += n
    return tmp_path


def write_csr_h5(path, X, y, task, n_classes=None, wide_ids=False):
    """helpers.write_csr_h5, with the column ids stored as int64 if ``wide_ids``."""
    path = helpers.write_csr_h5(path, X, y, task, n_classes)
    if wide_ids:
        with h5py.File(path, "r+") as f:
            indices = f["X/indices"][:]
            del f["X/indices"]
            f["X/indices"] = indices.astype(np.int64)
    return path


def assert_rows_equal(got, want):
    assert isinstance(got, sp.csr_matrix) and got.shape == want.shape
    assert got.has_canonical_format and got.indptr.dtype == np.int64
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


def test_open_dataset_describes_sparse_shards(sharded, table):
    info = open_dataset(sharded)
    assert info.sparse and info.nnz == table[0].nnz
    assert (info.n_rows, info.n_features, info.rows_per_file) == (50, 40, SHARD_ROWS)
    assert info.index_dtype == np.int32 and info.dtype == np.float64


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_each_rank_reads_its_rows_across_shards(sharded, table, size):
    X, y = table
    info = open_dataset(sharded)
    for rank in range(size):
        local = load_rank_rows(info, rank, size)
        start, stop = row_range(info.n_rows, rank, size)
        assert_rows_equal(local.X, X[start:stop])
        np.testing.assert_array_equal(local.y, y[start:stop])
        np.testing.assert_array_equal(read_labels(info, start, stop), y[start:stop])


@pytest.mark.parametrize("start, stop", [(0, 50), (6, 8), (7, 37), (36, 38), (20, 20), (49, 50)])
def test_read_rows_across_shard_boundaries(sharded, table, start, stop):
    assert_rows_equal(read_rows(open_dataset(sharded), start, stop).X, table[0][start:stop])


def test_float32_values_and_int64_column_ids_are_kept(tmp_path):
    X = random_csr(9, 5, density=0.5, dtype=np.float32)
    write_csr_h5(tmp_path / "a.h5", X[:4], np.zeros(4), "regression", wide_ids=True)
    write_csr_h5(tmp_path / "b.h5", X[4:], np.zeros(5), "regression")
    info = open_dataset(tmp_path)
    assert info.index_dtype == np.int64  # one shard needs it, so every rank uses it
    local = read_rows(info, 2, 9)
    assert local.X.data.dtype == np.float32 and local.X.indices.dtype == np.int64
    np.testing.assert_array_equal(local.X.toarray(), X[2:9].toarray())


def test_too_few_rows_for_the_ranks(tmp_path):
    write_csr_h5(tmp_path / "a.h5", random_csr(3, 4), np.zeros(3), "regression")
    with pytest.raises(DataError, match="has 3 rows but the job has 4 ranks"):
        load_rank_rows(open_dataset(tmp_path / "a.h5"), 0, 4)


def test_mixed_sparse_and_dense_shards_are_refused(tmp_path):
    write_csr_h5(tmp_path / "a.h5", random_csr(3, 4), np.zeros(3), "regression")
    write_h5(tmp_path / "b.h5", np.ones((3, 4)), np.zeros(3), "regression")
    with raises(
        f"shards mix sparse and dense data: {tmp_path / 'a.h5'} has sparse (CSR) X "
        f"but {tmp_path / 'b.h5'} has dense X"
    ):
        open_dataset(tmp_path)


def test_sparse_shards_must_agree_on_features(tmp_path):
    write_csr_h5(tmp_path / "a.h5", random_csr(3, 4), np.zeros(3), "regression")
    write_csr_h5(tmp_path / "b.h5", random_csr(3, 5), np.zeros(3), "regression")
    with raises("shards disagree on features"):
        open_dataset(tmp_path)


def test_fingerprint_of_sparse_data(tmp_path, table):
    X, y = table
    write_csr_h5(tmp_path / "a.h5", X, y, "multiclass", 3)
    write_csr_h5(tmp_path / "b.h5", X, y, "multiclass", 3, wide_ids=True)
    changed = X.copy()
    changed.data[-1] += 1.0
    write_csr_h5(tmp_path / "c.h5", changed, y, "multiclass", 3)
    a, b, c = (content_hash(open_dataset(tmp_path / f"{k}.h5")) for k in "abc")
    assert a == b != c


# --- validation ---------------------------------------------------------------------


def raises(message):
    return pytest.raises(DataError, match=re.escape(message))


def write_raw(path, data, indices, indptr, shape, y=None, **attrs):
    """A CSR file written part by part, valid or not; ``attrs`` override X's attributes
    (None removes one)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("X")
        for name, value in (("data", data), ("indices", indices), ("indptr", indptr)):
            if value is not None:
                group[name] = value
        merged = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": shape}
        group.attrs.update({k: v for k, v in {**merged, **attrs}.items() if v is not None})
        f["y"] = np.zeros(shape[0]) if y is None else y
        f.attrs["task"] = "regression"
    return str(path)


GOOD = dict(data=[1.0, 2.0, 3.0], indices=[0, 2, 1], indptr=[0, 2, 2, 3], shape=(3, 4))


def bad(tmp_path, **changes):
    return write_raw(tmp_path / "d.h5", **{**GOOD, **changes})


def test_the_good_file_reads(tmp_path):
    X = read_rows(open_dataset(bad(tmp_path)), 0, 3).X
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 0]])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"encoding-type": "csc_matrix"}, "has encoding-type 'csc_matrix'; expected 'csr_matrix'"),
        ({"encoding-type": None}, "has encoding-type None; expected 'csr_matrix'"),
        ({"encoding-version": "0.2.0"}, "has encoding-version '0.2.0'; expected '0.1.0'"),
        ({"shape": (3, 4, 1)}, "has shape attribute [3, 4, 1]; expected (rows, features)"),
        ({"shape": (3, 0), "indices": []}, "has no feature columns"),
        ({"data": None}, "has no dataset 'data'"),
        ({"indices": np.zeros((3, 1), int)}, "has 'indices' of shape (3, 1); expected 1-D"),
        ({"data": [1, 2, 3]}, "has 'data' of dtype int64; expected float32 or float64"),
        ({"indices": [0.0, 2.0, 1.0]}, "has 'indices' of dtype float64; expected an integer"),
        ({"indptr": [0, 2, 3]}, "has 3 indptr entries for 3 rows; expected 4"),
        ({"indices": [0, 2]}, "has 2 indices but 3 data values"),
        ({"indptr": [1, 2, 2, 3]}, "has indptr[0] = 1 and indptr[3] = 3; expected 0 and 3"),
        ({"indptr": [0, 2, 2, 2]}, "has indptr[0] = 0 and indptr[3] = 2; expected 0 and 3"),
    ],
)
def test_bad_metadata(tmp_path, changes, message):
    path = bad(tmp_path, **changes)
    with raises(f"sparse X in {path} {message}"):
        open_dataset(path)


def test_labels_must_match_rows(tmp_path):
    path = bad(tmp_path, y=np.zeros(2))
    with raises(f"file {path} has 3 rows in X but 2 in y"):
        open_dataset(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"indptr": [0, 3, 2, 3]},
            "has indptr decreasing at row 1 (global row 1): indptr[1] = 3 > indptr[2] = 2",
        ),
        ({"indptr": [0, 2, 4, 3]}, "has indptr decreasing at row 2 (global row 2)"),
        ({"indices": [0, 4, 1]}, "has column index 4 at row 0 (global row 0), outside 0..3"),
        ({"indices": [0, 2, -1]}, "has column index -1 at row 2 (global row 2), outside 0..3"),
        (
            {"indices": [2, 0, 1]},
            "has unsorted column indices (2 before 0) in row 0 (global row 0)",
        ),
        ({"indices": [2, 2, 1]}, "has repeated column index 2 in row 0 (global row 0)"),
        (
            {"data": [1.0, np.inf, 3.0]},
            "has a non-finite value (inf) in X at row 0, column 2 (global row 0)",
        ),
        (
            {"data": [1.0, 2.0, np.nan]},
            "has a non-finite value (nan) in X at row 2, column 1 (global row 2)",
        ),
        ({"y": [0.0, np.nan, 0.0]}, "has a non-finite label nan at global row 1"),
    ],
)
def test_bad_rows(tmp_path, changes, message):
    path = bad(tmp_path, **changes)
    with raises(f"file {path} {message}"):
        read_rows(open_dataset(path), 0, 3)


def test_errors_name_the_global_row_and_only_rows_read_are_checked(tmp_path):
    write_csr_h5(tmp_path / "a.h5", random_csr(5, 4), np.zeros(5), "regression")
    path = write_raw(
        tmp_path / "b.h5",
        data=[1.0, 2.0, 3.0],
        indices=[0, 1, 1],
        indptr=[0, 1, 3, 3],
        shape=(3, 4),
    )
    info = open_dataset(tmp_path)
    read_rows(info, 0, 6)  # rows 0..5: b.h5's row 1 (global 6) not read
    with raises(f"file {path} has repeated column index 1 in row 1 (global row 6)"):
        read_rows(info, 4, 7)


def test_indptr_beyond_the_nonzeros_is_caught_before_reading(tmp_path):
    path = bad(tmp_path, indptr=[0, 9, 2, 3])  # decreasing too, but only rows 0..0 are read
    with raises(f"file {path} has indptr[1] = 9 outside 0..3 at row 0 (global row 0)"):
        read_rows(open_dataset(path), 0, 1)


def test_a_class_label_out_of_range(tmp_path):
    path = write_csr_h5(tmp_path / "d.h5", random_csr(4, 3), np.array([0, 1, 5, 1]), "binary", 2)
    with raises(f"file {path} has class label 5 at global row 2, outside 0..1"):
        read_rows(open_dataset(path), 0, 4)


# --- a rank reads only its slice ----------------------------------------------------


def test_a_rank_reads_only_its_slice(tmp_path, monkeypatch):
    """Count the elements h5py reads from each CSR part: for rows [start, stop) of one
    shard they are the indptr slice (plus its two end values, at open) and exactly the
    rows' nonzeros of indices and data."""
    X = random_csr(2000, 300, density=0.05, seed=3)
    path = write_csr_h5(tmp_path / "big.h5", X, np.zeros(2000), "regression")
    info = open_dataset(path)
    read = {}
    getitem, read_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct

    def counting_getitem(self, selection, *args, **kwargs):
        out = getitem(self, selection, *args, **kwargs)
        read[self.name] = read.get(self.name, 0) + np.size(out)
        return out

    def counting_read_direct(self, dest, source_sel=None, dest_sel=None):
        read_direct(self, dest, source_sel, dest_sel)
        n = np.size(dest[dest_sel]) if dest_sel is not None else np.size(dest)
        read[self.name] = read.get(self.name, 0) + n

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", counting_read_direct)
    monkeypatch.setattr(h5py.Dataset, "__array__", None)  # no whole-dataset reads behind our back
    start, stop = row_range(2000, 2, 5)
    local = load_rank_rows(info, 2, 5)
    share = int(X.indptr[stop] - X.indptr[start])
    assert read == {
        "/X/indptr": stop - start + 1,
        "/X/indices": share,
        "/X/data": share,
        "/y": stop - start,
    }
    assert_rows_equal(local.X, X[start:stop])


# --- writing ------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3])
def test_write_dataset_round_trips_a_sparse_matrix(tmp_path, table, shards):
    X, y = table
    X = sp.csr_matrix(X, dtype=np.float32)
    out = tmp_path / ("one.h5" if shards == 1 else "dir")
    files = write_dataset(out, X, y, task="multiclass", n_classes=3, shards=shards)
    info = open_dataset(out)
    assert len(files) == shards and info.sparse and info.nnz == X.nnz
    assert info.dtype == np.float32 and info.rows_per_file == tuple(shard_sizes(50, shards))
    local = read_rows(info, 0, 50)
    assert_rows_equal(local.X, X)
    np.testing.assert_array_equal(local.y, y)
    with h5py.File(files[0], "r") as f:  # anndata's attributes, int32 column ids
        attrs = f["X"].attrs
        assert (attrs["encoding-type"], attrs["encoding-version"]) == ("csr_matrix", "0.1.0")
        assert list(attrs["shape"]) == [info.rows_per_file[0], 40]
        assert f["X/indices"].dtype == np.int32 and f["X/indptr"].dtype == np.int64


def test_sparse_writer_streams_blocks_across_files_and_canonicalises(tmp_path, table):
    """Blocks of odd sizes straddle file boundaries; a block with unsorted, duplicated
    column ids (and a COO block) is stored canonical; a trailing 0-row file is created."""
    X, y = table
    with staged_output(tmp_path / "out", directory=True) as staged:
        paths = shard_paths(staged, 3)
        with SparseShardWriter(paths, [20, 30, 0], 40, "float64", "multiclass", 3) as writer:
            writer.write(X[:13], y[:13])
            messy = X[13:14].tocoo()
            doubled = sp.coo_matrix(
                (np.r_[messy.data[::-1], 0.0], (np.r_[messy.row, 0], np.r_[messy.col[::-1], 1])),
                shape=(1, 40),
            )
            writer.write(doubled, y[13:14])
            writer.write(X[14:50].tocoo(), y[14:50])
    info = open_dataset(tmp_path / "out")
    assert info.rows_per_file == (20, 30, 0)
    want = sp.vstack([X[:13], X[13:14] + sp.csr_matrix(([0.0], ([0], [1])), shape=(1, 40)), X[14:]])
    np.testing.assert_array_equal(read_rows(info, 0, 50).X.toarray(), want.toarray())


def test_sparse_writer_refuses_dense_blocks_and_missing_rows(tmp_path):
    with pytest.raises(ValueError, match="expected a scipy.sparse matrix"):
        with SparseShardWriter([str(tmp_path / "a.h5")], [2], 3, "float64", "regression") as w:
            w.write(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="wrote 1 of 2 rows"):
        with SparseShardWriter([str(tmp_path / "b.h5")], [2], 3, "float64", "regression") as w:
            w.write(sp.csr_matrix(np.ones((1, 3))), np.zeros(1))


# --- data synth --sparse ------------------------------------------------------------


@pytest.fixture
def small_sparse_blocks(monkeypatch):
    """Blocks of 100 feature draws (20 rows at k = 5), so small tests cross blocks."""
    monkeypatch.setattr(synth_module, "SPARSE_BLOCK_ENTRIES", 100)


def synth_sparse(out, task="binary", rows=203, features=60, **kwargs):
    kwargs = {"nnz_per_row": 5, "seed": 4, **kwargs}
    return write_synthetic(out, task, rows=rows, features=features, sparse=True, **kwargs)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_sparse_synth_is_deterministic_whatever_the_shards(tmp_path, small_sparse_blocks, task):
    one = synth_sparse(tmp_path / "one", task)
    three = synth_sparse(tmp_path / "three", task, shards=3)
    other = synth_sparse(tmp_path / "other", task, seed=5)
    assert three["train"]["shards"] == 3 and one["train"]["nnz"] == three["train"]["nnz"]
    for split in ("train", "test"):
        info, a = read_all(one[split]["path"])
        _, b = read_all(three[split]["path"])
        _, c = read_all(other[split]["path"])
        assert info.sparse and info.nnz == one[split]["nnz"] and a.X.shape[1] == 60
        assert_rows_equal(b.X, a.X)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.X.shape != c.X.shape or (a.X != c.X).nnz
    with h5py.File(tmp_path / "one" / "ground_truth.h5", "r") as f:
        assert f["weights"].shape == ((3, 60) if task == "multiclass" else (60,))
        assert (f.attrs["nnz_per_row"], f.attrs["zipf_exponent"]) == (5, 1.0)


def read_all(path):
    info = open_dataset(path)
    return info, read_rows(info, 0, info.n_rows)


def test_sparse_synth_rows_follow_the_law(tmp_path):
    """Rows hold k distinct features on average, popular ones in most rows; the truth
    explains the targets (regression) with the stated noise."""
    summary = synth_sparse(
        tmp_path / "d", "regression", rows=3000, features=500, nnz_per_row=12, test_fraction=0
    )
    assert summary["sparse"] and summary["nnz_per_row"] == 12
    _, rows = read_all(tmp_path / "d" / "train")
    per_row = np.diff(rows.X.indptr)
    assert abs(per_row.mean() - 12) < 0.3 and per_row.min() >= 1
    counts = np.sort(np.bincount(rows.X.indices, minlength=500))[::-1]
    assert counts[0] > 0.5 * 3000 and counts[0] > 5 * counts[50] and counts[-1] < 10
    with h5py.File(tmp_path / "d" / "ground_truth.h5", "r") as f:
        w, b, noise = f["weights"][()], f["bias"][()], f.attrs["noise_std"]
    signal = rows.X @ w
    assert 0.7 < signal.std() < 1.3  # x.w of about unit variance
    assert abs((rows.y - signal - b).std() - noise) < 0.01


def test_power_law_ranks_have_the_stated_frequencies():
    u = np.random.default_rng(0).random(400_000)
    for s in (0.0, 1.0, 1.5):
        ranks = synth_module.power_law_ranks(u, 50, s)
        edges = np.arange(1.0, 52.0)
        cdf = np.log(edges) if s == 1 else edges ** (1 - s) - 1
        expected = np.diff(cdf) / (cdf[-1] - cdf[0])
        np.testing.assert_allclose(
            np.bincount(ranks, minlength=50) / u.size, expected, rtol=0.05, atol=2e-4
        )


def test_sparse_synth_at_most_d_features(tmp_path):
    """k = d: no row exceeds d features, and rows asking for all d get them (the law's
    tail is redrawn until found)."""
    synth_sparse(tmp_path / "d", rows=30, features=4, nnz_per_row=4, test_fraction=0)
    _, rows = read_all(tmp_path / "d" / "train")
    assert np.diff(rows.X.indptr).max() == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"nnz_per_row": 61},
            "nnz_per_row (--nnz-per-row) must be in 1..60 (the features), got 61",
        ),
        ({"nnz_per_row": 0}, "nnz_per_row (--nnz-per-row) must be in 1..60"),
        ({"zipf_exponent": -1.0}, "zipf_exponent (--zipf-exponent) must be a finite number >= 0"),
        ({"sparse": False}, "nnz_per_row (--nnz-per-row) applies to sparse data only"),
    ],
)
def test_sparse_synth_bad_options(tmp_path, kwargs, message):
    args = {"task": "binary", "rows": 20, "features": 60, "sparse": True, "nnz_per_row": 5}
    with raises(message):
        write_synthetic(tmp_path / "d", **{**args, **kwargs})
    assert not (tmp_path / "d").exists()


# --- data inspect -------------------------------------------------------------------


def test_inspect_reports_the_nonzeros_streamed_in_chunks(sharded, table, monkeypatch):
    monkeypatch.setattr(inspect_module, "SPARSE_CHUNK_ENTRIES", 40)  # chunks of 5 rows
    X, _ = table
    summary = inspect_dataset(sharded)
    per_row = np.diff(X.indptr)
    counts = np.bincount(X.indices, minlength=40)
    order = sorted(range(40), key=lambda j: (-counts[j], j))[:10]
    assert summary["sparse"] and summary["nnz"] == X.nnz
    assert summary["density"] == X.nnz / (50 * 40)
    assert summary["nnz_per_row"] == {
        "mean": X.nnz / 50,
        "min": int(per_row.min()),
        "max": int(per_row.max()),
    }
    assert summary["features_used"] == np.count_nonzero(counts)
    assert [(t["feature"], t["count"]) for t in summary["top_features"]] == [
        (j, counts[j]) for j in order
    ]
    assert summary["top_features"][0]["row_fraction"] == counts[order[0]] / 50


def test_inspect_validates_sparse_rows(tmp_path):
    path = bad(tmp_path, indices=[0, 2, 4])
    with raises(f"file {path} has column index 4 at row 2"):
        inspect_dataset(path)


def test_cli_synth_sparse_then_inspect(tmp_path, capsys):
    """The flags reach write_synthetic (in-process: the data commands need no MPI)."""
    out = tmp_path / "d"
    argv = ["data", "synth", "--task", "binary", "--rows", "500", "--features", "3000",
            "--sparse", "--nnz-per-row", "8", "--zipf-exponent", "1.2", "--shards", "2",
            "--out", str(out)]  # fmt: skip
    assert cli._run(cli.build_parser().parse_args(argv)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["nnz_per_row"], printed["zipf_exponent"]) == (8, 1.2)
    assert cli._run(cli.build_parser().parse_args(["data", "inspect", str(out / "train")])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["nnz"] == printed["train"]["nnz"] and summary["rows"] == 400
    assert 7.5 < summary["nnz_per_row"]["mean"] < 8.5
    assert summary["top_features"][0]["row_fraction"] > 0.5
