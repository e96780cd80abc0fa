"""Split finding (mpigd/trees/split.py) against brute force, and the reference tree builder
(tests/tree_reference.py) on hand-checked trees and against a histogram builder."""

from __future__ import annotations

import numpy as np
import pytest

from mpigd.trees import split
from mpigd.trees.split import CRITERIA, Limits, best_splits, leaf_values, n_values
from tests.tree_reference import grow_reference

CRITERION_NAMES = ("gbt", "gini", "entropy", "variance")
N_CLASSES = 3


def random_stats(criterion, n, rng):
    """(n, S) exact stats (small multiples of powers of two), some rows of weight 0."""
    w = rng.integers(0, 4, n).astype(float)
    rows = (w > 0).astype(float)
    if criterion == "gbt":
        g = np.rint(rng.normal(size=n) * 64) / 64 * rows
        h = rng.integers(1, 9, n) / 8 * rows
        return np.column_stack([rows, g, h])
    if criterion == "variance":
        y = rng.integers(-8, 9, n) / 4
        return np.column_stack([rows, w, w * y, w * y * y])
    y = rng.integers(0, N_CLASSES, n)
    return np.column_stack([rows, w[:, None] * (y[:, None] == np.arange(N_CLASSES))])


def exact(stats):
    """Each column rounded to a multiple of 2^-q, q = 52 - ceil(log2(sum |column| + 1))."""
    q = 52 - np.ceil(np.log2(np.abs(stats).sum(axis=0) + 1)).astype(int)
    return np.ldexp(np.rint(np.ldexp(stats, q)), -q)


def histograms(codes, stats, node_of, n_nodes, n_bins):
    """(d, K, B, S) histograms by np.add.at, and the (K, S) node totals."""
    n, d = codes.shape
    hist = np.zeros((d, n_nodes, n_bins, stats.shape[1]))
    keep = node_of >= 0
    for f in range(d):
        np.add.at(hist[f], (node_of[keep], codes[keep, f]), stats[keep])
    totals = np.zeros((n_nodes, stats.shape[1]))
    np.add.at(totals, node_of[keep], stats[keep])
    return hist, totals


def impurity(stats, criterion, l2):
    """A node's loss from its stats vector, from the textbook formulas: W x Gini impurity,
    W x entropy, the weighted SSE, gbt's -G^2 / (H + l2)."""
    if criterion == "gbt":
        return -(stats[1] ** 2) / (stats[2] + l2)
    if criterion == "variance":
        w, wy, wy2 = stats[1:]
        return wy2 - wy**2 / w if w > 0 else 0.0
    weight = stats[1:].sum()
    if weight == 0:
        return 0.0
    p = stats[1:] / weight
    if criterion == "gini":
        return weight * (1.0 - np.sum(p**2))
    p = p[p > 0]
    return -weight * np.sum(p * np.log(p))


def brute_force_best(hist, totals, mask, criterion, limits):
    """(gain, feature, bin, left) per node by loops, ranked with Criterion.gain."""
    d, n_nodes, n_bins, _ = hist.shape
    out = []
    for k in range(n_nodes):
        best = (-np.inf, -1, -1, np.zeros(hist.shape[3]))
        for f in range(d):
            if not mask[k, f]:
                continue
            for b in range(n_bins - 1):
                left = hist[f, k, : b + 1].sum(axis=0)
                right = totals[k] - left
                if min(left[0], right[0]) < limits.min_rows_leaf:
                    continue
                if criterion == "gbt" and min(left[2], right[2]) < limits.min_hessian_leaf:
                    continue
                gain = CRITERIA[criterion].gain(left, right, totals[k], limits.l2)
                if np.isfinite(gain) and gain > 0 and gain > best[0]:
                    best = (float(gain), f, b, left)
        out.append(best)
    return out


@pytest.mark.parametrize("criterion", CRITERION_NAMES)
def test_gain_is_the_impurity_decrease(criterion):
    rng = np.random.default_rng(1)
    crit = CRITERIA[criterion]
    for _ in range(50):
        stats = random_stats(criterion, 40, rng)
        cut = rng.integers(1, 40)
        left, right = stats[:cut].sum(axis=0), stats[cut:].sum(axis=0)
        parent = left + right
        l2 = 0.5 if criterion == "gbt" else 0.0
        if min(left[0], right[0]) == 0:  # a child without weight: never a split
            assert not crit.gain(left, right, parent, l2) > 0
            continue
        expected = (
            impurity(parent, criterion, l2)
            - impurity(left, criterion, l2)
            - impurity(right, criterion, l2)
        )
        by_scores = crit.score(left, l2) + crit.score(right, l2) - crit.score(parent, l2)
        scale = abs(impurity(parent, criterion, l2)) + 1.0
        np.testing.assert_allclose(crit.gain(left, right, parent, l2), expected, atol=1e-12 * scale)
        np.testing.assert_allclose(by_scores, expected, atol=1e-12 * scale)


@pytest.mark.parametrize("criterion", ("gini", "entropy", "variance"))
def test_children_with_the_parents_shares_gain_exactly_zero(criterion):
    """Rounding never makes a useless split (or a split of a pure node) look positive."""
    rng = np.random.default_rng(2)
    crit = CRITERIA[criterion]
    for _ in range(50):
        unit = random_stats(criterion, 7, rng).sum(axis=0) + 1.0  # some weight
        a, b = rng.integers(1, 1000, 2)
        assert crit.gain(a * unit, b * unit, (a + b) * unit) == 0.0
    if criterion != "variance":
        pure = np.array([5.0, 0.0, 3.75, 0.0])  # one class only
        assert crit.gain(pure, 3 * pure, 4 * pure) == 0.0


@pytest.mark.parametrize("criterion", CRITERION_NAMES)
@pytest.mark.parametrize("seed", range(4))
def test_best_splits_is_the_brute_force_best(criterion, seed):
    rng = np.random.default_rng(seed)
    n, d, n_nodes, n_bins = 400, 4, 5, 7
    codes = rng.integers(0, n_bins - 1 - seed % 2, (n, d))  # seed 1, 3: the top bin empty
    stats = random_stats(criterion, n, rng)
    node_of = rng.integers(-1, n_nodes, n)
    hist, totals = histograms(codes, stats, node_of, n_nodes, n_bins)
    mask = rng.random((n_nodes, d)) < 0.7
    mask[0] = False  # no feature allowed
    limits = Limits(min_rows_leaf=1 + seed, min_hessian_leaf=0.5 * seed, l2=0.25 * seed)
    crit = split.criterion(criterion) if seed % 2 else criterion  # an object or its name
    gain, feature, bins, left = best_splits(hist, totals, mask, crit, limits, 10)
    assert gain.dtype == np.float64 and feature.dtype == bins.dtype == np.int64
    expected = brute_force_best(hist, totals, mask, criterion, limits)
    assert (feature[0], bins[0], gain[0]) == (-1, -1, -np.inf)
    assert any(f >= 0 for _, f, _, _ in expected)
    for k, (g, f, b, lft) in enumerate(expected):
        assert (feature[k], bins[k]) == ((f + 10, b) if f >= 0 else (-1, -1))
        assert gain[k] == g
        np.testing.assert_array_equal(left[k], lft)
        if f >= 0:
            right = totals[k] - lft
            textbook = [impurity(s, criterion, limits.l2) for s in (totals[k], lft, right)]
            np.testing.assert_allclose(gain[k], textbook[0] - textbook[1] - textbook[2])


def test_best_splits_in_small_blocks_agree_with_one_node_at_a_time(monkeypatch):
    rng = np.random.default_rng(5)
    n, d, n_nodes, n_bins = 3000, 3, 60, 40
    codes = rng.integers(0, n_bins, (n, d))
    stats = random_stats("gini", n, rng)
    hist, totals = histograms(codes, stats, rng.integers(0, n_nodes, n), n_nodes, n_bins)
    mask = rng.random((n_nodes, d)) < 0.8
    limits = Limits(min_rows_leaf=2)
    alone = [
        best_splits(hist[:, k : k + 1], totals[k : k + 1], mask[k : k + 1], "gini", limits)
        for k in range(n_nodes)
    ]
    monkeypatch.setattr(split, "_BLOCK_CELLS", 100)  # blocks of 2 (node, feature) pairs
    together = best_splits(hist, totals, mask, "gini", limits)
    for k in range(n_nodes):
        for a, b in zip(together, alone[k], strict=True):
            np.testing.assert_array_equal(a[k], b[0])


def one_node(codes, stats, n_bins):
    """(hist, totals) of a single node holding every row."""
    return histograms(
        np.asarray(codes), np.asarray(stats, float), np.zeros(len(codes), int), 1, n_bins
    )


def class_stats(y, n_classes=2):
    y = np.asarray(y)
    return np.column_stack([np.ones(len(y)), y[:, None] == np.arange(n_classes)]).astype(float)


def test_ties_go_to_the_smallest_feature_then_the_smallest_bin():
    y = [0, 0, 1, 1, 1]
    # Features 1 and 2 are identical and separate the classes; feature 0 is worse. Bins 1-2
    # and 4-6 are empty, so "<= 0", "<= 1", "<= 2" are the same split: bin 0 wins.
    x = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 3], [3, 7, 7], [7, 7, 7]])
    hist, totals = one_node(x, class_stats(y), 8)
    mask = np.ones((1, 3), bool)
    for criterion in ("gini", "entropy"):
        gain, feature, bins, left = best_splits(hist, totals, mask, criterion, Limits())
        assert (feature[0], bins[0]) == (1, 0)
        np.testing.assert_array_equal(left[0], [2, 2, 0])
        for allowed, expected in (([1, 0, 1], (2, 0)), ([1, 0, 0], (0, 3))):
            mask_k = np.array([allowed], bool)
            _, feature, bins, _ = best_splits(hist, totals, mask_k, criterion, Limits())
            assert (feature[0], bins[0]) == expected  # feature 0: "<= 3" to "<= 6" tie


def test_min_rows_leaf_and_min_hessian_leaf_are_respected():
    # gbt on one feature with bins 0..4: the best split isolates row 0 (g = -8).
    g = np.array([-8.0, 1.0, 1.0, 1.0, 1.0])
    h = np.array([0.25, 1.0, 1.0, 1.0, 1.0])
    stats = np.column_stack([np.ones(5), g, h])
    hist, totals = one_node(np.arange(5)[:, None], stats, 5)
    mask = np.ones((1, 1), bool)
    assert best_splits(hist, totals, mask, "gbt", Limits())[2][0] == 0
    assert best_splits(hist, totals, mask, "gbt", Limits(min_rows_leaf=2))[2][0] == 1
    assert best_splits(hist, totals, mask, "gbt", Limits(min_hessian_leaf=0.5))[2][0] == 1
    gain, feature, bins, left = best_splits(
        hist, totals, mask, "gbt", Limits(min_rows_leaf=2), feature_offset=4
    )
    assert (feature[0], bins[0]) == (4, 1)
    np.testing.assert_array_equal(left[0], [2, -7, 1.25])
    none = best_splits(hist, totals, mask, "gbt", Limits(min_rows_leaf=3))
    assert (none[0][0], none[1][0], none[2][0]) == (-np.inf, -1, -1)
    np.testing.assert_array_equal(none[3], np.zeros((1, 3)))


def test_rows_of_weight_zero_do_not_count_as_rows():
    stats = class_stats([0, 1, 1])
    stats[0] = 0.0  # a row of bagging weight 0
    hist, totals = one_node([[0], [1], [2]], stats, 3)
    gain, feature, bins, left = best_splits(hist, totals, np.ones((1, 1), bool), "gini", Limits())
    assert feature[0] == -1  # rows 1 and 2 are one class; row 0 does not count


@pytest.mark.parametrize("criterion", CRITERION_NAMES)
def test_no_valid_split(criterion):
    rng = np.random.default_rng(3)
    stats = random_stats(criterion, 20, rng)
    stats[:, 0] = 1.0
    codes = np.zeros((20, 2), int)
    codes[:, 1] = 2  # every row in one bin of each feature
    hist, totals = one_node(codes, stats, 4)
    gain, feature, bins, left = best_splits(
        hist, totals, np.ones((1, 2), bool), criterion, Limits()
    )
    assert (gain[0], feature[0], bins[0]) == (-np.inf, -1, -1)
    single_bin = best_splits(hist[:, :, :1], totals, np.ones((1, 2), bool), criterion, Limits())
    assert single_bin[1][0] == -1
    empty = best_splits(hist[:, :0], totals[:0], np.ones((0, 2), bool), criterion, Limits())
    assert [a.shape for a in empty] == [(0,), (0,), (0,), (0, hist.shape[3])]


def test_pure_node_is_not_split():
    for criterion in ("gini", "entropy"):
        hist, totals = one_node([[0], [1], [2], [3]], class_stats([1, 1, 1, 1]), 4)
        assert best_splits(hist, totals, np.ones((1, 1), bool), criterion, Limits())[1][0] == -1
    y = np.full(4, 0.3)  # rounded onto a grid of 2^-q as the grower does: exact sums
    stats = exact(np.column_stack([np.ones(4), np.ones(4), y, y * y]))
    hist, totals = one_node([[0], [1], [2], [3]], stats, 4)
    assert best_splits(hist, totals, np.ones((1, 1), bool), "variance", Limits())[1][0] == -1


def test_leaf_values():
    totals = np.array([[4.0, -2.0, 3.0], [2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        leaf_values(totals, "gbt", Limits(l2=1.0), lr=0.5), [[0.25], [0.0]]
    )
    np.testing.assert_array_equal(leaf_values(totals, "gbt", Limits()), [[2 / 3], [0.0]])
    classes = np.array([[3.0, 1.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0]])
    for criterion in ("gini", "entropy"):
        np.testing.assert_array_equal(
            leaf_values(classes, criterion, Limits()), [[0.25, 0, 0.75], [0, 0, 0]]
        )
    regression = np.array([[2.0, 4.0, 2.0, 5.0]])
    np.testing.assert_array_equal(leaf_values(regression, "variance", Limits()), [[0.5]])
    assert [n_values(c, 5) for c in CRITERION_NAMES] == [1, 5, 5, 1]
    assert n_values(split.criterion("gini"), 2) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_rows_leaf"):
        Limits(min_rows_leaf=0)
    with pytest.raises(ValueError, match="l2"):
        Limits(l2=-1.0)
    with pytest.raises(ValueError, match="criterion"):
        n_values("mse", 2)
    hist = np.zeros((2, 3, 4, 3))
    with pytest.raises(ValueError, match="4 columns"):
        best_splits(hist, np.zeros((3, 3)), np.ones((3, 2), bool), "variance", Limits())
    with pytest.raises(ValueError, match="feature_mask"):
        best_splits(hist, np.zeros((3, 3)), np.ones((2, 3), bool), "gbt", Limits())


def test_reference_perfect_separator_is_one_split_with_pure_leaves():
    codes = np.array([[0, 1], [0, 0], [1, 1], [1, 0]], dtype=np.uint8)
    for criterion in ("gini", "entropy"):
        tree = grow_reference(codes, class_stats([0, 0, 1, 1]), criterion, Limits(), 5)
        np.testing.assert_array_equal(tree["feature"], [0, -1, -1])
        np.testing.assert_array_equal(tree["bin"], [0, -1, -1])
        np.testing.assert_array_equal(tree["left"], [1, -1, -1])
        np.testing.assert_array_equal(tree["right"], [2, -1, -1])
        np.testing.assert_array_equal(tree["value"], [[0, 0], [1, 0], [0, 1]])
        weighted_impurity = {"gini": 4 * 0.5, "entropy": 4 * np.log(2)}[criterion]
        np.testing.assert_allclose(tree["gain"], [weighted_impurity, 0, 0])


def test_reference_regression_by_hand():
    # y = 0, 0, 4, 8 on codes 0..3: the root splits 0-1 | 2-3 (SSE 44 -> 8), then only the
    # right child can split (2 | 3); max_depth 1 stops after the root, max_leaves 2 too.
    y = np.array([0.0, 0.0, 4.0, 8.0])
    stats = np.column_stack([np.ones(4), np.ones(4), y, y * y])
    codes = np.arange(4, dtype=np.uint8)[:, None]
    tree = grow_reference(codes, stats, "variance", Limits(), max_depth=None)
    np.testing.assert_array_equal(tree["feature"], [0, -1, 0, -1, -1])
    np.testing.assert_array_equal(tree["bin"], [1, -1, 2, -1, -1])
    np.testing.assert_array_equal(tree["left"], [1, -1, 3, -1, -1])
    np.testing.assert_array_equal(tree["right"], [2, -1, 4, -1, -1])
    np.testing.assert_array_equal(tree["value"][:, 0], [0, 0, 0, 4, 8])
    np.testing.assert_array_equal(tree["gain"], [36, 0, 8, 0, 0])  # SSE 44 -> 8 -> 0
    for kwargs in ({"max_depth": 1}, {"max_depth": 3, "max_leaves": 2}):
        tree = grow_reference(codes, stats, "variance", Limits(), **kwargs)
        np.testing.assert_array_equal(tree["feature"], [0, -1, -1])
    lonely = grow_reference(codes, stats, "variance", Limits(min_rows_leaf=2), max_depth=None)
    np.testing.assert_array_equal(lonely["feature"], [0, -1, -1])


def test_reference_max_leaves_splits_the_best_gains_first():
    # Level 1: node 1 (y 0-3) gains 4 at "<= 1", node 2 (y 100-210) 10000 at "<= 5".
    y = np.array([0.0, 1, 2, 3, 100, 110, 200, 210])
    stats = np.column_stack([np.ones(8), np.ones(8), y, y * y])
    codes = np.arange(8, dtype=np.uint8)[:, None]
    full = grow_reference(codes, stats, "variance", Limits(min_rows_leaf=2), max_depth=2)
    np.testing.assert_array_equal(full["bin"], [3, 1, 5, -1, -1, -1, -1])
    np.testing.assert_array_equal(full["left"], [1, 3, 5, -1, -1, -1, -1])
    np.testing.assert_array_equal(full["right"], [2, 4, 6, -1, -1, -1, -1])
    three = grow_reference(codes, stats, "variance", Limits(min_rows_leaf=2), 2, max_leaves=3)
    np.testing.assert_array_equal(three["bin"], [3, -1, 5, -1, -1])
    np.testing.assert_array_equal(three["left"], [1, -1, 3, -1, -1])
    np.testing.assert_array_equal(three["right"], [2, -1, 4, -1, -1])
    np.testing.assert_array_equal(three["value"][:, 0], [0, 1.5, 0, 105, 205])


def grow_with_best_splits(codes, stats, criterion, limits, max_depth, max_leaves, allowed, lr):
    """The growth rules again, with best_splits on np.add.at histograms per level."""
    n, d = codes.shape
    n_bins = int(codes.max()) + 1
    node_of = np.zeros(n, int)
    tree = {"feature": [-1], "bin": [-1], "left": [-1], "right": [-1], "gain": [0.0]}
    level, depth, n_leaves = [0], 0, 1
    node_totals = [stats.sum(axis=0)]
    while level and depth < max_depth:
        ids = np.array(level)
        hist, totals = histograms(codes, stats, _local_ids(node_of, ids), len(ids), n_bins)
        mask = np.array([allowed(k) for k in ids])
        gain, feature, bins, left = best_splits(hist, totals, mask, criterion, limits)
        gain[totals[:, 0] < 2 * limits.min_rows_leaf] = -np.inf
        chosen = [i for i in range(len(ids)) if gain[i] > -np.inf]
        if max_leaves is not None:
            chosen.sort(key=lambda i: (-gain[i], ids[i]))
            chosen = sorted(chosen[: max(0, max_leaves - n_leaves)])
        level = []
        old_node_of = node_of.copy()
        for i in chosen:
            k, f, b = ids[i], feature[i], bins[i]
            first = len(tree["feature"])
            tree["feature"][k], tree["bin"][k], tree["gain"][k] = f, b, gain[i]
            tree["left"][k], tree["right"][k] = first, first + 1
            rows = old_node_of == k
            node_of[rows & (codes[:, f] <= b)] = first
            node_of[rows & (codes[:, f] > b)] = first + 1
            np.testing.assert_array_equal(stats[node_of == first].sum(axis=0), left[i])
            for child in (first, first + 1):
                for key in tree:
                    tree[key].append(0.0 if key == "gain" else -1)
                node_totals.append(stats[node_of == child].sum(axis=0))
                level.append(child)
            n_leaves += 1
        depth += 1
    out = {key: np.array(v) for key, v in tree.items()}
    out["value"] = leaf_values(np.array(node_totals), criterion, limits, lr)
    out["value"][out["feature"] >= 0] = 0.0
    return out


def _local_ids(node_of, ids):
    """Each row's index into ``ids`` (the level's nodes), -1 for rows not in the level."""
    local = np.full(len(node_of), -1)
    for i, k in enumerate(ids):
        local[node_of == k] = i
    return local


@pytest.mark.parametrize("criterion", CRITERION_NAMES)
def test_reference_equals_a_histogram_builder(criterion):
    rng = np.random.default_rng(7)
    n, d = 300, 5
    codes = rng.integers(0, 9, (n, d)).astype(np.uint8)
    codes[:, 3] = codes[:, 1]  # a duplicate feature: ties
    stats = random_stats(criterion, n, rng)
    if criterion == "variance":  # a target the features explain a little
        y = codes[:, 0] / 4 + (codes[:, 1] > 4)
        stats = np.column_stack([stats[:, :2], stats[:, 1] * y, stats[:, 1] * y * y])

    def allowed(node):
        mask = np.zeros(d, bool)
        mask[np.random.default_rng([11, 0, node]).choice(d, 3, replace=False)] = True
        return mask

    cases = [
        dict(max_depth=3, max_leaves=None, allowed=lambda node: np.ones(d, bool)),
        dict(max_depth=6, max_leaves=7, allowed=allowed),
    ]
    limits = Limits(min_rows_leaf=4, min_hessian_leaf=1.0, l2=0.5)
    for case in cases:
        expected = grow_reference(codes, stats, criterion, limits, lr=0.5, **case)
        got = grow_with_best_splits(codes, stats, criterion, limits, lr=0.5, **case)
        assert len(expected["feature"]) > 5
        for key in ("feature", "bin", "left", "right", "gain"):
            np.testing.assert_array_equal(got[key], expected[key])
        np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-10)


def test_gaps_end_at_the_last_empty_bin_after_each_split():
    hist = np.zeros((3, 2, 8, 3))
    hist[1, 0, [0, 2, 6], 0] = [4, 1, 2]  # node 0, feature 1: bins 3..5 empty
    hist[2, 1, [1, 2], 0] = [3, 5]  # node 1, feature 2: no gap after bin 1
    hist[..., 1] = hist[..., 0] * np.array([1, -1, 1, 1, 1, 1, -1, 1])  # g by bin: signs flip
    hist[..., 2] = hist[..., 0]
    hist[:, 1, :, 1] = hist[:, 1, :, 0] * np.array([1, -1, 1, 1, 1, 1, 1, 1])
    totals = hist[1].sum(axis=1)
    totals[1] = hist[2, 1].sum(axis=0)
    mask = np.array([[False, True, False], [False, False, True]])
    gain, feature, bins, _, upper = best_splits(hist, totals, mask, "gbt", Limits(),
                                                feature_offset=10, with_gaps=True)  # fmt: skip
    np.testing.assert_array_equal(feature, [11, 12])
    np.testing.assert_array_equal(bins, [2, 1])
    np.testing.assert_array_equal(upper, [5, 1])


@pytest.mark.parametrize("criterion", CRITERION_NAMES)
def test_best_pair_splits_equal_best_splits_whatever_the_pairs_order(criterion):
    rng = np.random.default_rng(8)
    n, d, n_nodes, n_bins = 500, 6, 7, 9
    codes = rng.integers(0, n_bins, (n, d))
    codes[:, 4] = codes[:, 2]  # two features alike: a tie the smaller feature wins
    stats = random_stats(criterion, n, rng)
    hist, totals = histograms(codes, stats, rng.integers(0, n_nodes, n), n_nodes, n_bins)
    mask = rng.random((n_nodes, d)) < 0.6
    mask[:, [2, 4]] = True
    expected = best_splits(hist, totals, mask, criterion, Limits(), with_gaps=True)
    pair_node, pair_feature = np.nonzero(mask)
    shuffled = rng.permutation(len(pair_node))
    pair_node, pair_feature = pair_node[shuffled], pair_feature[shuffled]
    got = split.best_pair_splits(hist[pair_feature, pair_node], pair_node, pair_feature, totals,
                                 criterion, Limits(), with_gaps=True)  # fmt: skip
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("criterion", ["gbt", "gini"])
@pytest.mark.parametrize("l2, min_rows, min_hessian", [(0.0, 1, 0.0), (0.5, 3, 0.2)])
def test_compiled_split_search_gives_the_numpy_gains_bit_for_bit(
    criterion, l2, min_rows, min_hessian, monkeypatch
):
    rng = np.random.default_rng(9)
    n, d, n_nodes, n_bins = 2000, 5, 9, 30
    codes = rng.integers(0, n_bins, (n, d))
    codes[:, 3] = 0  # a feature with one bin: no valid split
    stats = random_stats(criterion, n, rng)
    hist, totals = histograms(codes, stats, rng.integers(0, n_nodes, n), n_nodes, n_bins)
    limits = Limits(min_rows_leaf=min_rows, min_hessian_leaf=min_hessian, l2=l2)
    if criterion == "gini":
        limits = Limits(min_rows_leaf=min_rows)
    mask = np.ones((n_nodes, d), bool)
    compiled = best_splits(hist, totals, mask, criterion, limits, with_gaps=True)
    monkeypatch.setattr(split.tree_kernels, "gbt_best_bins", lambda *a: numpy_best_bins("gbt", *a))
    monkeypatch.setattr(split.tree_kernels, "gini_best_bins",
                        lambda cells, totals, rows: numpy_best_bins("gini", cells, totals, rows,
                                                                    0.0, 0.0))  # fmt: skip
    numpy_path = best_splits(hist, totals, mask, criterion, limits, with_gaps=True)
    for a, b in zip(compiled, numpy_path, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(compiled[0]).any()


def numpy_best_bins(criterion, cells, totals, min_rows, min_hessian, l2):
    """The numpy gains of ``criterion``, which the compiled search must equal."""
    crit = split.criterion(criterion)
    m, n_bins, n_cols = cells.shape
    lefts = np.moveaxis(np.cumsum(cells[:, :-1, :], axis=1), 2, 0)
    parent = totals.T[:, :, None]
    rights = parent - lefts
    valid = crit.children_ok(lefts, rights, Limits(min_rows, min_hessian, l2))
    with np.errstate(all="ignore"):
        gains = crit.gain_columns(lefts, rights, parent, l2)
    gains = np.where(valid & (gains > 0) & (gains < np.inf), gains, -np.inf)
    best = gains.argmax(axis=1)
    return gains[np.arange(m), best], best
