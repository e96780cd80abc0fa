"""The counter-based draws (mpigd/trees/sampling.py) and the bins (mpigd/trees/binning.py),
serially: the draws' distributions and their independence from how rows are split; the
edges against scikit-learn's HistGradientBoosting binning; codes, the model-file arrays and
fit_bins on one rank (tests/test_tree_binning_mpi.py: on several)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mpi4py import MPI
from scipy import stats

from mpigd.errors import CollectiveError
from mpigd.trees import binning
from mpigd.trees.binning import Bins, bin_edges, fit_bins
from mpigd.trees.sampling import (
    BIN_STREAM,
    bagging_stream,
    feature_stream,
    node_features,
    poisson1,
    subsample_stream,
    uniform,
)

N = 10**6
ROWS = np.arange(N, dtype=np.int64)
STREAMS = [BIN_STREAM, bagging_stream(0), bagging_stream(1), subsample_stream(0)]


# --- sampling -------------------------------------------------------------------------


def test_poisson1_has_mean_and_variance_one():
    counts = poisson1(uniform(7, bagging_stream(3), ROWS))
    assert counts.dtype == np.int32
    assert abs(counts.mean() - 1) < 0.01 and abs(counts.var() - 1) < 0.01
    frequencies = np.bincount(counts, minlength=8)[:8] / N
    np.testing.assert_allclose(frequencies, stats.poisson.pmf(np.arange(8), 1), atol=0.002)


def test_poisson1_inverts_the_cdf_at_its_steps():
    cdf = stats.poisson.cdf(np.arange(3), 1)
    u = np.array([0.0, cdf[0] - 1e-9, cdf[0] + 1e-9, cdf[1] + 1e-9, cdf[2] + 1e-9])
    assert poisson1(u).tolist() == [0, 0, 1, 2, 3]
    assert 10 <= poisson1(np.array([1 - 2.0**-53]))[0] <= 20


def test_uniform_is_uniform_on_53_bits():
    u = uniform(1, BIN_STREAM, ROWS)
    assert u.dtype == np.float64 and u.shape == (N,)
    assert 0 <= u.min() and u.max() < 1
    assert (np.ldexp(u, 53) == np.rint(np.ldexp(u, 53))).all()
    assert stats.kstest(u, "uniform").statistic < 1.5 / np.sqrt(N)


def test_uniform_depends_on_the_row_id_only():
    whole = uniform(11, subsample_stream(4), ROWS)
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, N), 20, replace=False))
    chunks = [uniform(11, subsample_stream(4), part) for part in np.split(ROWS, cuts)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    shuffled = np.random.default_rng(1).permutation(N)
    np.testing.assert_array_equal(uniform(11, subsample_stream(4), shuffled), whole[shuffled])
    assert uniform(11, subsample_stream(4), np.array(5)) == whole[5]


def test_streams_and_seeds_are_decorrelated():
    draws = [uniform(3, stream, ROWS) for stream in STREAMS]
    draws += [uniform(seed, BIN_STREAM, ROWS) for seed in (4, -3, 2**64 + 3 - 1)]
    draws.append(uniform(3, BIN_STREAM, ROWS + 1))  # lag 1 within a stream
    correlations = np.corrcoef(draws)
    assert np.abs(correlations[np.triu_indices(len(draws), 1)]).max() < 5 / np.sqrt(N)


def test_stream_ids_are_distinct():
    ids = [BIN_STREAM] + [bagging_stream(t) for t in range(1000)]
    ids += [subsample_stream(r) for r in range(1000)]
    ids += [feature_stream(t) for t in range(1000)]
    assert len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="tree"):
        bagging_stream(-1)
    with pytest.raises(ValueError, match="round"):
        subsample_stream(1.5)


def test_uniform_warns_of_no_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uniform(2**63 + 5, 2**40, np.array([0, 2**62]))
        uniform(-1, 0, np.array(3))


# --- bin edges against scikit-learn ---------------------------------------------------


def _columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "normal, n a multiple of 3 and 255": rng.standard_normal(5100),
        "lognormal": rng.lognormal(0, 3, 5003),
        "few distinct": rng.integers(0, 8, 4000).astype(float),
        "400 distinct integers": rng.integers(0, 400, 4000).astype(float),
        "constant": np.full(3000, -2.5),
        "heavy ties": np.where(rng.random(4000) < 0.9, 1.0, rng.standard_normal(4000)),
        "rounded": np.round(rng.standard_normal(4096), 2),
        "float32": rng.standard_normal(3000).astype(np.float32).astype(float),
        "one row": np.array([4.0]),
    }


@pytest.mark.parametrize("max_bins", [2, 3, 16, 255])
@pytest.mark.parametrize("name", list(_columns()))
def test_edges_are_scikit_learns_thresholds(name, max_bins):
    sk_binning = pytest.importorskip("sklearn.ensemble._hist_gradient_boosting.binning")
    column = _columns()[name]
    mapper = sk_binning._BinMapper(n_bins=max_bins + 1, subsample=None).fit(column[:, None])
    edges = bin_edges(column, max_bins)
    np.testing.assert_array_equal(edges, mapper.bin_thresholds_[0])
    codes = Bins([edges]).codes(column[:, None])
    np.testing.assert_array_equal(codes, mapper.transform(column[:, None]))


@pytest.mark.parametrize("max_bins", [2, 5, 256])
def test_edges_are_few_and_increasing_under_ties(max_bins):
    rng = np.random.default_rng(2)
    column = np.concatenate([np.zeros(5000), rng.integers(0, 3, 3000), rng.random(300)])
    edges = bin_edges(rng.permutation(column), max_bins)
    assert edges.dtype == np.float64 and 0 < len(edges) <= max_bins - 1
    assert (np.diff(edges) > 0).all()
    np.testing.assert_array_equal(edges, bin_edges(column, max_bins))


def test_neighbouring_floats_keep_their_own_bins():
    a = np.nextafter(1.0, 2.0)
    b = np.nextafter(a, 2.0)
    assert (a + b) / 2 == b  # the plain midpoint would merge them
    values = np.array([a, b, b, 3.0])
    edges = bin_edges(values, 4)
    assert Bins([edges]).codes(values[:, None]).ravel().tolist() == [0, 1, 1, 2]


def test_extreme_values_give_finite_edges():
    values = np.array([-1e308, 1e308, -1e308, 1e308, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(bin_edges(values, 2)).all()
        assert np.isfinite(bin_edges(values, 3)).all()


@pytest.mark.parametrize("max_bins", [1, 257, 2.5, -3])
def test_max_bins_outside_2_to_256_is_refused(max_bins):
    with pytest.raises(ValueError, match="max_bins must be an integer from 2 to 256"):
        bin_edges(np.arange(10.0), max_bins)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        bin_edges(np.array([1.0, bad, 2.0]), 8)


# --- Bins -----------------------------------------------------------------------------


def _bins() -> Bins:
    return Bins([np.array([-1.0, 0.0, 2.5]), np.array([]), np.array([0.5])])


def test_codes_split_exactly_where_the_raw_values_do():
    bins = _bins()
    rng = np.random.default_rng(3)
    X = np.round(rng.uniform(-2, 3, (500, 3)) * 2) / 2  # many values on the edges
    codes = bins.codes(X)
    assert codes.dtype == np.uint8 and codes.flags.c_contiguous and codes.shape == X.shape
    for j, edges in enumerate(bins.edges):
        for b, edge in enumerate(edges):
            np.testing.assert_array_equal(codes[:, j] <= b, X[:, j] <= edge)
    assert bins.codes(np.array([[-1.0, 7.0, 0.5]])).tolist() == [[0, 0, 0]]
    assert bins.codes(np.array([[np.nan, np.nan, np.nan]])).tolist() == [[3, 0, 1]]


def test_codes_of_float32_compare_as_float64():
    rng = np.random.default_rng(4)
    X32 = rng.standard_normal((1000, 4)).astype(np.float32)
    bins = Bins([bin_edges(X32[:, j], 255) for j in range(4)])
    for j, edges in enumerate(bins.edges):
        expected = np.searchsorted(edges, X32[:, j].astype(np.float64), side="left")
        np.testing.assert_array_equal(bins.codes(X32)[:, j], expected)
    np.testing.assert_array_equal(bins.codes(X32), bins.codes(X32.astype(np.float64)))
    assert bins.codes(X32).max() == 254 and bins.codes(X32[:0]).shape == (0, 4)


def test_bins_sizes_and_checks():
    bins = _bins()
    assert bins.n_bins.tolist() == [4, 1, 2] and bins.n_bins.dtype == np.int64
    assert bins.max_bins_used == 4 and bins.n_features == 3
    assert Bins([]).max_bins_used == 1
    with pytest.raises(ValueError, match="strictly increasing"):
        Bins([np.array([0.0, 0.0])])
    with pytest.raises(ValueError, match="fewer than 256"):
        Bins([np.arange(256.0)])
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        bins.codes(np.zeros((2, 2)))


def test_arrays_round_trip():
    arrays = _bins().to_arrays()
    assert arrays["edges"].dtype == np.float64 and arrays["edge_offsets"].dtype == np.int64
    assert arrays["edge_offsets"].tolist() == [0, 3, 3, 4]
    again = Bins.from_arrays(arrays)
    assert len(again.edges) == 3
    for edges, expected in zip(again.edges, _bins().edges, strict=True):
        np.testing.assert_array_equal(edges, expected)
    assert Bins.from_arrays(Bins([]).to_arrays()).n_features == 0


# --- fit_bins on one rank -------------------------------------------------------------


def _data(n: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(6)
    columns = [
        rng.standard_normal(n),
        rng.integers(0, 5, n),
        np.full(n, 3.0),
        np.where(rng.random(n) < 0.8, 0.0, rng.lognormal(0, 2, n)),
    ]
    return np.column_stack(columns).astype(dtype)


def test_fit_bins_without_sampling_bins_every_row():
    X = _data(3000)
    bins = fit_bins(MPI.COMM_SELF, X, 0, len(X), 32, seed=1)
    for j in range(X.shape[1]):
        np.testing.assert_array_equal(bins.edges[j], bin_edges(X[:, j], 32))
    assert bins.n_bins.tolist() == [32, 5, 1, len(bins.edges[3]) + 1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_bins_samples_by_global_row_id(monkeypatch, dtype):
    X = _data(20_000, dtype)
    first_row, n_rows, sample_rows = 3 * 10**9, 4 * 10**9, 10**9  # a slice of a big set
    ids = np.arange(first_row, first_row + len(X))
    sampled = X[uniform(9, BIN_STREAM, ids) < 0.25]
    assert 4500 < len(sampled) < 5500
    bins = fit_bins(MPI.COMM_SELF, X, first_row, n_rows, 255, seed=9, sample_rows=sample_rows)
    for j in range(X.shape[1]):
        np.testing.assert_array_equal(bins.edges[j], bin_edges(sampled[:, j], 255))
    monkeypatch.setattr(binning, "BLOCK_BYTES", 1)  # one column a block
    blocked = fit_bins(MPI.COMM_SELF, X, first_row, n_rows, 255, seed=9, sample_rows=sample_rows)
    np.testing.assert_array_equal(blocked.to_arrays()["edges"], bins.to_arrays()["edges"])


def test_fit_bins_refuses_bad_max_bins_and_non_finite_values():
    X = _data(100)
    with pytest.raises(ValueError, match="max_bins"):
        fit_bins(MPI.COMM_SELF, X, 0, 100, 300, seed=0)
    X[50, 2] = np.nan
    with pytest.raises(CollectiveError, match="cannot bin feature 2: .*finite"):
        fit_bins(MPI.COMM_SELF, X, 0, 100, 16, seed=0)


def test_mid_gap_lies_between_the_bins_values_and_falls_back_to_the_edge():
    edges = np.array([1.5, 2.5, 3.5, 4.5])
    low = np.array([1.0, 2.0, np.inf, np.inf, 5.0])
    high = np.array([1.0, 2.2, -np.inf, -np.inf, 5.0])
    assert binning.mid_gap(edges, low, high, 1, 3) == pytest.approx(3.6)  # (2.2 + 5) / 2
    assert binning.mid_gap(edges, low, high, 0, 0) == 1.5  # (1 + 2) / 2 = 1.5 too
    assert binning.mid_gap(edges, low, high, 1, 1) == 2.5  # bin 2 holds no row: the edge
    a = 1.0
    b = np.nextafter(a, 2.0)  # neighbouring floats: the midpoint is a, never b
    assert binning.mid_gap(np.array([a]), np.array([a, b]), np.array([a, b]), 0, 0) == a


def test_node_features_draw_k_features_uniformly_per_node_whatever_the_batch():
    d, k, nodes = 20, 4, np.arange(20_000)
    masks = node_features(5, 3, nodes, d, k)
    assert masks.shape == (len(nodes), d) and np.all(masks.sum(axis=1) == k)
    shares = masks.mean(axis=0)  # each feature k/d of the time, within 5 sigma
    assert np.abs(shares - k / d).max() < 5 * np.sqrt(k / d * (1 - k / d) / len(nodes))
    picked = nodes[[7, 3, 19_000]]  # asked alone, in another order: the same draws
    np.testing.assert_array_equal(node_features(5, 3, picked, d, k), masks[picked])
    assert not np.array_equal(node_features(5, 4, nodes[:50], d, k), masks[:50])  # per tree
    assert node_features(5, 3, nodes[:3], d, d).all()
