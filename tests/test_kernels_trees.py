"""Tests of the tree kernels (:mod:`kernels.trees`): each compiled kernel against its numpy
reference on random inputs (node layouts with empty nodes and row subsets, every working
histogram width, feature groups, forests with single-leaf trees, float32 and float64
rows), partition's stability and mids, a hand-made tree's exact semantics, the binning
convention that makes training splits and raw-row prediction agree, and the argument
checks.

The inputs are small: the kernels compile once per dtype combination (a few seconds
each), and then every case here takes milliseconds.
"""

import numpy as np
import pytest

from kernels import trees

# -- inputs ----------------------------------------------------------------------------------


def node_layout(n, n_nodes, rng, subset=False):
    """``order`` and ``starts`` of ``n_nodes`` nodes over rows ``0 .. n-1``, rows increasing
    within a node as after stable partitions; nodes 1 and 3 (when there) are empty. With
    ``subset``, a third of the rows belong to no node and ``starts[0] > 0``."""
    node = rng.integers(0, n_nodes, n)
    node[np.isin(node, (1, 3))] = 0
    if subset:
        node[rng.random(n) < 1 / 3] = -1
    order = np.argsort(node, kind="stable").astype(np.int64)
    starts = np.searchsorted(node[order], np.arange(n_nodes + 1)).astype(np.int64)
    return order, starts


def random_forest(n_trees, max_depth, d, n_values, rng):
    """Node arrays of ``n_trees`` random trees grown level-wise (children numbered in
    creation order, ids relative to the tree's root); tree 0 is a single leaf and every
    other node splits with probability 0.8."""
    feature, threshold, left, right, tree_start = [], [], [], [], [0]
    for t in range(n_trees):
        depth, node = [0], 0
        while node < len(depth):  # nodes in creation order
            if t > 0 and depth[node] < max_depth and (node == 0 or rng.random() < 0.8):
                feature.append(int(rng.integers(d)))
                threshold.append(float(np.round(rng.standard_normal(), 1)))
                left.append(len(depth))
                right.append(len(depth) + 1)
                depth += [depth[node] + 1] * 2
            else:
                feature.append(-1)
                threshold.append(0.0)
                left.append(-1)
                right.append(-1)
            node += 1
        tree_start.append(len(feature))
    value = rng.standard_normal((len(feature), n_values))
    return {
        "feature": np.array(feature, np.int64),
        "threshold": np.array(threshold),
        "left": np.array(left, np.int64),
        "right": np.array(right, np.int64),
        "value": value,
        "tree_start": np.array(tree_start, np.int64),
    }


def call_predict(function, X, forest, tree_column, out):
    """``function(X, feature, ..., out)`` (the kernel or its reference) on ``forest``."""
    f = forest
    function(X, f["feature"], f["threshold"], f["left"], f["right"], f["value"],
             f["tree_start"], tree_column, out)  # fmt: skip


# -- histograms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, d, n_bins, n_nodes, subset",
    [(1, 1, 1, 1, False), (300, 7, 256, 1, False), (500, 5, 9, 6, True), (200, 3, 40, 4, False)],
)
@pytest.mark.parametrize("n_stats", [1, 2, 3, 4, 5, 11])
def test_histograms_match_reference(n, d, n_bins, n_nodes, subset, n_stats):
    rng = np.random.default_rng(n + 10 * n_stats)
    codes = rng.integers(0, n_bins, (n, d), dtype=np.uint8)
    stats = rng.standard_normal((n, n_stats))
    order, starts = node_layout(n, n_nodes, rng, subset)
    out = np.full((d, n_nodes, n_bins, n_stats), np.nan)
    expected = np.empty_like(out)
    trees.histograms(codes, stats, order, starts, out)
    trees.histograms_reference(codes, stats, order, starts, expected)
    np.testing.assert_array_equal(out, expected)  # both add each bin's rows in order


def test_histograms_repeated_rows_and_feature_groups():
    """Rows listed twice count twice; a histogram past :data:`trees.HIST_GROUP_BYTES`
    (30 features x 256 bins x 12 doubles) goes in feature groups over row blocks."""
    n, d, n_stats = trees.BLOCK_ROWS + 700, 30, 11
    assert d * 256 * 12 * 8 > trees.HIST_GROUP_BYTES
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, d), dtype=np.uint8)
    stats = rng.standard_normal((n, n_stats))
    order = np.concatenate((np.arange(n), rng.integers(0, n, 500))).astype(np.int64)
    starts = np.array([0, 100, n + 500])
    out, expected = np.empty((2, d, 2, 256, n_stats))
    trees.histograms(codes, stats, order, starts, out)
    trees.histograms_reference(codes, stats, order, starts, expected)
    np.testing.assert_array_equal(out, expected)


def test_histograms_sums_by_bin():
    """The layout, by hand: feature-major, stats summed per (feature, node, bin)."""
    codes = np.array([[0, 2], [1, 2], [0, 0]], np.uint8)
    stats = np.array([[1.0, 10.0], [1.0, 20.0], [1.0, 40.0]])
    out = np.empty((2, 2, 3, 2))
    trees.histograms(codes, stats, np.array([2, 0, 1]), np.array([0, 2, 3]), out)
    expected = np.zeros((2, 2, 3, 2))
    expected[0, 0, 0] = [2.0, 50.0]  # rows 2 and 0
    expected[1, 0, 0], expected[1, 0, 2] = [1.0, 40.0], [1.0, 10.0]
    expected[0, 1, 1] = expected[1, 1, 2] = [1.0, 20.0]  # row 1
    np.testing.assert_array_equal(out, expected)


def test_histograms_of_scattered_nodes_fill_their_slots_only():
    rng = np.random.default_rng(4)
    n, d, n_bins, n_stats = 300, 5, 17, 3
    codes = rng.integers(0, n_bins, (n, d), dtype=np.uint8)
    stats = rng.standard_normal((n, n_stats))
    order = rng.permutation(n).astype(np.int64)
    starts, ends = np.array([200, 0, 120]), np.array([300, 50, 120])  # one empty
    out = np.full((d, 6, n_bins, n_stats), 5.0)
    trees.histograms(codes, stats, order, starts, out, ends=ends, first_node=2)
    rows = np.concatenate([order[a:b] for a, b in zip(starts, ends, strict=True)])
    expected = np.empty((d, 3, n_bins, n_stats))
    trees.histograms_reference(codes, stats, rows, np.array([0, 100, 150, 150]), expected)
    np.testing.assert_array_equal(out[:, 2:5], expected)
    assert np.all(out[:, [0, 1, 5]] == 5.0)
    with pytest.raises(ValueError, match="out must have shape"):
        trees.histograms(codes, stats, order, starts, out, ends=ends, first_node=4)
    with pytest.raises(ValueError, match="starts and ends"):
        trees.histograms(codes, stats, order, starts, out, ends=starts - 1)


def histogram_arguments():
    """Valid ``(codes, stats, order, starts, out)`` for 2 nodes over 10 rows."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (10, 3), dtype=np.uint8)
    return codes, rng.random((10, 3)), np.arange(10), np.array([0, 4, 10]), np.empty((3, 2, 4, 3))


@pytest.mark.parametrize(
    "position, bad, match",
    [
        (0, lambda a: a.astype(np.int64), "codes must be uint8"),
        (0, lambda a: np.asfortranarray(a), "codes must be C-contiguous"),
        (1, lambda a: a.astype(np.float32), "stats must be float64"),
        (1, lambda a: a[:9], "stats must have 10 rows"),
        (1, lambda a: a[:, :0], "S >= 1 columns"),
        (2, lambda a: a.astype(np.int32), "order must be int64"),
        (3, lambda a: np.array([0, 5, 4]), "starts must be non-decreasing"),
        (3, lambda a: np.array([0, 4, 11]), "starts must be non-decreasing"),
        (3, lambda a: a.astype(float), "starts must hold integers"),
        (4, lambda a: a.astype(np.float32), "out must be float64"),
        (4, lambda a: np.empty((3, 1, 4, 3)), "out must have shape"),
        (4, lambda a: np.empty((3, 2, 4, 2)), "out must have shape"),
        (4, lambda a: np.empty((2, 2, 4, 3)), "out must have shape"),
        (4, lambda a: np.empty((3, 2, 257, 3)), "1 .. 256 bins"),
        (2, lambda a: np.array([0, 1, 2, 3, 10, 5, 6, 7, 8, 9]), "row id outside"),
        (4, lambda a: np.empty((3, 2, 3, 3)), "bin >= B"),  # codes go up to 3
    ],
)
def test_histograms_rejects_bad_arguments(position, bad, match):
    arguments = list(histogram_arguments())
    arguments[position] = bad(arguments[position])
    with pytest.raises(ValueError, match=match):
        trees.histograms(*arguments)


# -- partition -------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d, n_nodes, subset", [(1, 1, 1, False), (400, 6, 7, True)])
def test_partition_matches_reference_and_is_stable(n, d, n_nodes, subset):
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 12, (n, d), dtype=np.uint8)
    order, starts = node_layout(n, n_nodes, rng, subset)
    rng.shuffle(order[starts[0] : starts[1]])  # node 0 in no particular row order
    features = rng.integers(0, d, n_nodes)
    bins = rng.integers(0, 12, n_nodes)
    if n_nodes > 6:
        features[2] = -1  # not split
        bins[4], bins[5] = 11, -1  # all rows left; all right
    original = order.copy()
    mids, expected_mids = np.empty((2, n_nodes), np.int64)
    expected = order.copy()
    trees.partition(codes, order, starts, features, bins, mids)
    trees.partition_reference(codes, expected, starts, features, bins, expected_mids)
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(mids, expected_mids)
    np.testing.assert_array_equal(order[: starts[0]], original[: starts[0]])
    for k in range(n_nodes):
        start, stop = starts[k], starts[k + 1]
        rows = original[start:stop]
        if features[k] < 0:
            assert mids[k] == stop
            np.testing.assert_array_equal(order[start:stop], rows)
            continue
        goes_left = codes[rows, features[k]] <= bins[k]
        assert mids[k] == start + goes_left.sum()
        np.testing.assert_array_equal(order[start : mids[k]], rows[goes_left])
        np.testing.assert_array_equal(order[mids[k] : stop], rows[~goes_left])


def partition_arguments():
    """Valid ``(codes, order, starts, features, bins, mids)`` for 2 nodes over 10 rows."""
    codes = np.random.default_rng(2).integers(0, 4, (10, 3), dtype=np.uint8)
    return codes, np.arange(10), np.array([0, 4, 10]), np.array([0, 2]), np.array([1, 2]), \
        np.empty(2, np.int64)  # fmt: skip


@pytest.mark.parametrize(
    "position, bad, match",
    [
        (0, lambda a: a.astype(np.int16), "codes must be uint8"),
        (1, lambda a: a.astype(np.int32), "order must be int64"),
        (1, lambda a: np.arange(20)[::2], "order must be C-contiguous"),
        (2, lambda a: np.array([4, 0, 10]), "starts must be non-decreasing"),
        (3, lambda a: np.array([0, 3]), "features must be < d"),
        (3, lambda a: np.array([0.0, 1.0]), "features must hold integers"),
        (4, lambda a: np.array([1, 2, 3]), "bins must have shape"),
        (5, lambda a: a.astype(np.int32), "mids must be int64"),
        (5, lambda a: np.empty(3, np.int64), "mids must have shape"),
        (1, lambda a: np.array([0, 1, 2, 3, -1, 5, 6, 7, 8, 9]), "row id outside"),
    ],
)
def test_partition_rejects_bad_arguments(position, bad, match):
    arguments = list(partition_arguments())
    arguments[position] = bad(arguments[position])
    with pytest.raises(ValueError, match=match):
        trees.partition(*arguments)


# -- predict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_values, columns", [(1, (0, 0, 0, 0, 0, 0)), (3, (2, 0, 5, 2, 0, 1))])
def test_predict_matches_reference(dtype, n_values, columns):
    n, d = trees.PREDICT_BLOCK_ROWS * 2 + 13, 5
    rng = np.random.default_rng(n_values)
    forest = random_forest(len(columns), 5, d, n_values, rng)
    X = np.round(rng.standard_normal((n, d)), 1).astype(dtype)  # ties with the thresholds
    X[::7, 2] = np.nan  # goes right everywhere
    tree_column = np.array(columns)
    start = rng.standard_normal((n, max(columns) + n_values + 1))
    out, expected = start.copy(), start.copy()
    call_predict(trees.predict, X, forest, tree_column, out)
    call_predict(trees.predict_reference, X, forest, tree_column, expected)
    np.testing.assert_array_equal(out, expected)  # each row adds the trees in order


def test_predict_follows_the_tree_by_hand():
    """Root: x1 <= 0.5 (ties left) to leaf 1, else node 2: x0 <= -1 to leaf 3, else
    leaf 4; NaN goes right. The second tree, a single leaf, adds 100 to column 1."""
    forest = {
        "feature": np.array([1, -1, 0, -1, -1, -1]),
        "threshold": np.array([0.5, 0.0, -1.0, 0.0, 0.0, 0.0]),
        "left": np.array([1, -1, 3, -1, -1, -1]),  # relative to the tree's first node, 0
        "right": np.array([2, -1, 4, -1, -1, -1]),
        "value": np.array([[0.0], [10.0], [0.0], [30.0], [40.0], [100.0]]),
        "tree_start": np.array([0, 5, 6]),
    }
    X = np.array([[0.0, 0.5], [-1.0, 0.6], [-0.9, 0.6], [np.nan, np.nan], [-2.0, -np.inf]])
    out = np.zeros((5, 2))
    call_predict(trees.predict, X, forest, np.array([0, 1]), out)
    np.testing.assert_array_equal(out[:, 0], [10.0, 30.0, 40.0, 40.0, 10.0])
    np.testing.assert_array_equal(out[:, 1], 100.0)


def test_partition_and_predict_agree_through_the_bins():
    """Codes from ``searchsorted(edges, x, side="left")``: the split ``code <= b`` sends
    each row where the raw split ``x <= edges[b]`` does, ties included."""
    rng = np.random.default_rng(3)
    edges = np.array([-1.0, 0.0, 0.5, 2.0])
    X = rng.choice(np.concatenate((edges, rng.standard_normal(20))), (200, 1))
    codes = np.searchsorted(edges, X, side="left").astype(np.uint8)
    order, mids = np.arange(200), np.empty(1, np.int64)
    for b in range(len(edges)):
        order[:] = np.arange(200)
        trees.partition(codes, order, np.array([0, 200]), np.array([0]), np.array([b]), mids)
        stump = {
            "feature": np.array([0, -1, -1]),
            "threshold": np.array([edges[b], 0.0, 0.0]),
            "left": np.array([1, -1, -1]),
            "right": np.array([2, -1, -1]),
            "value": np.array([[0.0], [1.0], [0.0]]),
            "tree_start": np.array([0, 3]),
        }
        goes_left = np.zeros((200, 1))
        call_predict(trees.predict, X, stump, np.array([0]), goes_left)
        np.testing.assert_array_equal(np.sort(order[: mids[0]]), np.flatnonzero(goes_left[:, 0]))


def predict_arguments():
    """Valid arguments of :func:`trees.predict` as a dict: a stump on 4 rows."""
    return {
        "X": np.zeros((4, 2)),
        "feature": np.array([1, -1, -1]),
        "threshold": np.zeros(3),
        "left": np.array([1, -1, -1]),
        "right": np.array([2, -1, -1]),
        "value": np.zeros((3, 2)),
        "tree_start": np.array([0, 3]),
        "tree_column": np.array([1]),
        "out": np.zeros((4, 3)),
    }


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("X", np.zeros((4, 2), np.int64), "X must be float32 or float64"),
        ("X", np.zeros((2, 4)).T, "X must be C-contiguous"),
        ("value", np.zeros((3, 2), np.float32), "value must be float64"),
        ("threshold", np.zeros(3, np.float32), "threshold must be float64"),
        ("threshold", np.zeros(2), "threshold must have shape"),
        ("feature", np.array([2, -1, -1]), "feature must be < d"),
        ("left", np.array([0, -1, -1]), "left must hold ids"),  # a loop
        ("right", np.array([3, -1, -1]), "right must hold ids"),  # outside the tree
        ("tree_start", np.array([1, 3]), "tree_start must increase"),
        ("tree_start", np.array([0, 0, 3]), "tree_start must increase"),  # an empty tree
        ("tree_column", np.array([2]), "must fit in out"),
        ("tree_column", np.array([1, 0]), "tree_column must have shape"),
        ("out", np.zeros((5, 3)), "out must have 4 rows"),
        ("out", np.zeros((4, 3), np.float32), "out must be float64"),
    ],
)
def test_predict_rejects_bad_arguments(name, bad, match):
    arguments = predict_arguments()
    arguments[name] = bad
    with pytest.raises(ValueError, match=match):
        trees.predict(**arguments)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bin_value_ranges_equal_the_reference(dtype):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 6)).astype(dtype)
    codes = rng.integers(0, 20, size=X.shape).astype(np.uint8)  # bins 20..23 stay empty
    low, high = trees.bin_value_ranges(X, codes, 24)
    expected = trees.bin_value_ranges_reference(X, codes, 24)
    np.testing.assert_array_equal(low, expected[0])
    np.testing.assert_array_equal(high, expected[1])
    assert np.all(low[:, 20:] == np.inf) and np.all(high[:, 20:] == -np.inf)
    with pytest.raises(ValueError, match="bin"):
        trees.bin_value_ranges(X, codes, 10)


@pytest.mark.parametrize("n_stats", [1, 2, 3, 5])
def test_pair_histograms_match_reference_and_leave_other_rows(n_stats):
    rng = np.random.default_rng(30 + n_stats)
    n, d, n_bins, n_nodes = 600, 9, 33, 5
    codes = rng.integers(0, n_bins, (n, d), dtype=np.uint8)
    stats = rng.standard_normal((n, n_stats))
    order, starts = node_layout(n, n_nodes, rng, subset=True)
    counts = rng.integers(0, 4, n_nodes)  # some nodes try no feature
    features = np.concatenate([np.sort(rng.choice(d, c, replace=False)) for c in counts])
    feature_starts = np.concatenate([[0], np.cumsum(counts)])
    m = len(features)
    slots = rng.permutation(m + 2)[:m]  # two rows of out belong to no pair
    out = np.full((m + 2, n_bins, n_stats), 7.0)
    expected = out.copy()
    trees.pair_histograms(codes, stats, order, starts, feature_starts, features, slots, out)
    expected[slots] = 0.0
    trees.pair_histograms_reference(codes, stats, order, starts, feature_starts, features, slots,
                                    expected)  # fmt: skip
    untouched = np.setdiff1d(np.arange(m + 2), slots)
    expected[untouched] = 7.0
    np.testing.assert_array_equal(out, expected)
    full = np.empty((d, n_nodes, n_bins, n_stats))
    trees.histograms_reference(codes, stats, order, starts, full)
    node_of_pair = np.repeat(np.arange(n_nodes), counts)
    np.testing.assert_array_equal(out[slots], full[features, node_of_pair])


def test_pair_histograms_reject_bad_arguments():
    codes = np.zeros((4, 3), np.uint8)
    stats, order = np.ones((4, 2)), np.arange(4, dtype=np.int64)
    out = np.zeros((2, 4, 2))
    good = (codes, stats, order, [0, 4], [0, 2], [0, 2], [0, 1], out)
    trees.pair_histograms(*good)
    for position, bad, match in [(5, [0, 3], "features"), (6, [1, 1], "slots"),
                                 (6, [0, 2], "slots"), (4, [0, 1], "feature_starts"),
                                 (7, np.zeros((2, 4, 3)), "stats")]:  # fmt: skip
        arguments = list(good)
        arguments[position] = bad
        with pytest.raises(ValueError, match=match):
            trees.pair_histograms(*arguments)
