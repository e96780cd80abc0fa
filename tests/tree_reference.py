"""A slow, plain serial tree builder on binned codes: the specification of tree growth.

It follows the growth rules of the tree ensembles (level by level, node ids in creation
order, max_leaves by decreasing gain) with none of the histogram machinery: for every
node, allowed feature and bin b it selects the node's rows with code <= b and sums their
stats with numpy. The stats are exact (multiples of a power of two per column), so those
sums equal the histograms' prefix sums bit for bit. Only the gain formula comes from
``mpigd.trees.split`` (``Criterion.gain``, checked against brute-force impurities in
tests/test_tree_split.py), so both builders rank equal splits the same way.
"""

from __future__ import annotations

import numpy as np

from mpigd.trees.split import CRITERIA


def grow_reference(
    codes,
    stats,
    criterion,
    limits,
    max_depth,
    max_leaves=None,
    allowed=None,
    lr=1.0,
):
    """Grow one tree on all rows.

    Parameters
    ----------
    codes : (n, d) uint8 binned rows.  stats : (n, S) float64 exact per-row stats,
        column 0 "rows".
    criterion : a ``Criterion`` or its name in ``CRITERIA``.  limits : ``mpigd.trees.split.Limits``.
    max_depth : the deepest level that may hold a split is max_depth - 1; None: no limit.
    max_leaves : at most this many leaves (None: no limit).
    allowed : node_id -> (d,) bool mask of the features it may split on; None: all.
    lr : gbt's learning rate, a factor on every value.

    Returns
    -------
    dict of arrays over the nodes in id order: ``feature`` (int64, -1 at leaves), ``bin``
    (int64, split "code <= bin goes left", -1 at leaves), ``left``, ``right`` (int64 child
    ids, -1 at leaves), ``value`` ((n_nodes, V) float64, the leaf values, 0 at inner
    nodes as the grower stores them) and ``gain`` (float64, each split's gain, 0 at leaves).
    """
    criterion = getattr(criterion, "name", criterion)
    codes = np.asarray(codes)
    stats = np.asarray(stats, dtype=np.float64)
    n, d = codes.shape
    n_cuts = int(codes.max()) if n else 0  # a bin b >= the largest code leaves right empty
    rows_of = [np.arange(n)]  # each node's row ids, by node id
    depth = [0]
    feature, bins, left, right, gains = [-1], [-1], [-1], [-1], [0.0]
    level, n_leaves = [0], 1
    while level:
        found = []  # (node, gain, feature, bin) of each candidate with a valid split
        for node in level:
            rows = rows_of[node]
            too_deep = max_depth is not None and depth[node] >= max_depth
            if too_deep or stats[rows, 0].sum() < 2 * limits.min_rows_leaf:
                continue
            mask = np.ones(d, bool) if allowed is None else np.asarray(allowed(node), bool)
            split = _best_split(codes[rows], stats[rows], mask, criterion, limits, n_cuts)
            if split is not None:
                found.append((node, *split))
        if max_leaves is not None:
            found.sort(key=lambda c: (-c[1], c[0]))
            found = sorted(found[: max(0, max_leaves - n_leaves)])
        level = []
        for node, gain, f, b in found:
            rows = rows_of[node]
            goes_left = codes[rows, f] <= b
            feature[node], bins[node], gains[node] = f, b, gain
            left[node], right[node] = len(rows_of), len(rows_of) + 1
            for child_rows in (rows[goes_left], rows[~goes_left]):
                level.append(len(rows_of))
                rows_of.append(child_rows)
                depth.append(depth[node] + 1)
                feature.append(-1)
                bins.append(-1)
                left.append(-1)
                right.append(-1)
                gains.append(0.0)
            n_leaves += 1
    value = np.array([_value(stats[rows].sum(axis=0), criterion, limits, lr) for rows in rows_of])
    value[np.array(feature) >= 0] = 0.0
    return {
        "feature": np.array(feature, dtype=np.int64),
        "bin": np.array(bins, dtype=np.int64),
        "left": np.array(left, dtype=np.int64),
        "right": np.array(right, dtype=np.int64),
        "value": value,
        "gain": np.array(gains),
    }


def _best_split(codes, stats, mask, criterion, limits, n_cuts):
    """(gain, feature, bin) of a node's best valid split, the first best in (feature, bin)
    order; None when no split is valid."""
    parent = stats.sum(axis=0)
    best = None
    for f in np.flatnonzero(mask):
        for b in range(n_cuts):
            goes_left = codes[:, f] <= b
            left, right = stats[goes_left].sum(axis=0), stats[~goes_left].sum(axis=0)
            if left[0] < limits.min_rows_leaf or right[0] < limits.min_rows_leaf:
                continue
            if criterion == "gbt" and min(left[2], right[2]) < limits.min_hessian_leaf:
                continue
            gain = float(CRITERIA[criterion].gain(left, right, parent, limits.l2))
            if np.isfinite(gain) and gain > 0 and (best is None or gain > best[0]):
                best = (gain, int(f), b)
    return best


def _value(total, criterion, limits, lr):
    """A node's value from its stats: gbt -G / (H + l2); class shares; weighted mean."""
    if criterion == "gbt":
        h = total[2] + limits.l2
        return lr * np.array([-total[1] / h if h > 0 else 0.0])
    if criterion == "variance":
        return lr * np.array([total[2] / total[1] if total[1] > 0 else 0.0])
    classes = total[1:]
    weight = classes.sum()
    return lr * (classes / weight if weight > 0 else np.zeros_like(classes))
