"""Split finding and leaf values from node histograms (no MPI; every rank runs the same).

A node's statistics are float64 vectors of S columns, column 0 always "rows" (the count of
rows that carry weight), laid out per criterion:

==========  ==========================================  ======  =================
criterion   stats columns                               S       leaf value (V)
==========  ==========================================  ======  =================
gbt         rows, g, h                                  3       -G / (H + l2) (1)
gini        rows, w 1{y=0}, ..., w 1{y=C-1}             1 + C   class shares (C)
entropy     rows, w 1{y=0}, ..., w 1{y=C-1}             1 + C   class shares (C)
variance    rows, w, w y, w y^2                         4       w y / w (1)
==========  ==========================================  ======  =================

Each :class:`Criterion` has a ``score`` such that the gain of a split is
score(left) + score(right) - score(parent): for gbt G^2 / (H + l2) (the loss decrease
times 2), for gini sum_c n_c^2 / W (the decrease of W x Gini impurity), for entropy
sum_c n_c log(n_c / W) (the decrease of W x entropy, in nats), for variance (w y)^2 / w
(the decrease of the weighted sum of squared errors). Gini, entropy and variance compute
that gain in an equal form that is exactly 0 when the children's class shares (means)
equal the parent's, so rounding never makes a useless split look like a gain.

The stats are exact (multiples of one power of two per column, see mpigd/trees/exact.py),
so the prefix sums over bins and ``right = totals - left`` are exact, and a split's gain
depends only on its three exact stats vectors: the same bits on every rank count (on
one numpy build and CPU type, which fix np.log's last bit for entropy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import trees as tree_kernels

#: How many (node, feature, bin) cells best_splits handles at once: its temporaries stay
#: about 0.5 MiB each, whatever the number of nodes (K = 512 would need hundreds of MiB).
_BLOCK_CELLS = 1 << 16


@dataclass(frozen=True)
class Limits:
    """What a split must respect.

    min_rows_leaf : each child has at least this many rows (stats column 0), >= 1.
    min_hessian_leaf : gbt only: each child's hessian sum (column 2) is at least this.
    l2 : gbt only: the L2 penalty on leaf values (in gains and leaf values).
    """

    min_rows_leaf: int = 1
    min_hessian_leaf: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        if int(self.min_rows_leaf) != self.min_rows_leaf or self.min_rows_leaf < 1:
            raise ValueError(f"min_rows_leaf must be an integer >= 1, not {self.min_rows_leaf}")
        if not self.min_hessian_leaf >= 0:
            raise ValueError(f"min_hessian_leaf must be >= 0, not {self.min_hessian_leaf}")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, not {self.l2}")


def _ratio(a, b):
    """a / b elementwise (broadcast), 0 where b <= 0."""
    a, b = np.broadcast_arrays(a, b)
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)


def _class_weight(cols):
    """W = the sum of the class columns 1..C, added in class order."""
    total = cols[1]
    for c in range(2, len(cols)):
        total = total + cols[c]
    return total


class Criterion:
    """One split criterion: gains, child validity and leaf values over stats columns.

    The ``*_columns`` methods get a sequence of stats columns (column s is ``cols[s]``,
    all broadcastable to one shape), e.g. an (S, ...) array; the public ``score`` and
    ``gain`` take (..., S) stats arrays. A gain may be non-finite where a child or the
    parent has no weight: such a split is never valid.
    """

    name: str

    def check_columns(self, n_stats: int):
        """ValueError unless stats of ``n_stats`` columns fit this criterion."""
        raise NotImplementedError

    def n_split_columns(self, n_stats: int) -> int:
        """How many leading stats columns the gain and the child limits read."""
        return n_stats

    def score_columns(self, cols, l2: float) -> np.ndarray:
        raise NotImplementedError

    def gain_columns(self, left, right, parent, l2: float) -> np.ndarray:
        """score(left) + score(right) - score(parent); subclasses may use an equal form."""
        return (self.score_columns(left, l2) + self.score_columns(right, l2)) - (
            self.score_columns(parent, l2)
        )

    def children_ok(self, left, right, limits: Limits) -> np.ndarray:
        """Whether both children respect ``limits`` (bool, the broadcast shape)."""
        m = limits.min_rows_leaf
        return (left[0] >= m) & (right[0] >= m)

    def leaf_columns(self, cols, l2: float) -> np.ndarray:
        """(K, V) leaf values from (K,) columns, before the learning rate."""
        raise NotImplementedError

    def n_values(self, n_classes: int) -> int:
        raise NotImplementedError

    def score(self, stats, l2: float = 0.0) -> np.ndarray:
        """The score of (..., S) stats: (...,) float64."""
        with np.errstate(all="ignore"):
            return self.score_columns(_columns(stats), l2)

    def gain(self, left, right, parent, l2: float = 0.0) -> np.ndarray:
        """The gain of splitting ``parent`` into ``left`` and ``right``, (..., S) each."""
        with np.errstate(all="ignore"):
            return self.gain_columns(_columns(left), _columns(right), _columns(parent), l2)


def _columns(stats):
    """(..., S) stats as an (S, ...) float64 sequence of columns."""
    return np.moveaxis(np.asarray(stats, dtype=np.float64), -1, 0)


class GBT(Criterion):
    """Newton boosting: stats [rows, g, h]; gain G_L^2/(H_L+l2) + G_R^2/(H_R+l2) - G^2/(H+l2).

    A node with H + l2 = 0 scores 0.
    """

    name = "gbt"

    def check_columns(self, n_stats):
        if n_stats != 3:
            raise ValueError(f"gbt stats have 3 columns [rows, g, h], not {n_stats}")

    def score_columns(self, cols, l2):
        return _ratio(cols[1] * cols[1], cols[2] + l2)

    def gain_columns(self, left, right, parent, l2):
        """The score difference in a form that is exactly 0 when the children's G/H
        ratios equal (rows alike), instead of rounding noise that would split them:
        ((G_L b - G_R a)^2 - l2 (G_L^2 b + G_R^2 a)) / (a b c), a = H_L + l2,
        b = H_R + l2, c = H + l2."""
        a, b, c = left[2] + l2, right[2] + l2, parent[2] + l2
        gl, gr = left[1], right[1]
        return ((gl * b - gr * a) ** 2 - l2 * (gl * gl * b + gr * gr * a)) / (a * b * c)

    def children_ok(self, left, right, limits):
        mh = limits.min_hessian_leaf
        return super().children_ok(left, right, limits) & (left[2] >= mh) & (right[2] >= mh)

    def leaf_columns(self, cols, l2):
        return -_ratio(cols[1], cols[2] + l2)[:, None]

    def n_values(self, n_classes):
        return 1


class _Classification(Criterion):
    """Stats [rows, w 1{y=0}, ..., w 1{y=C-1}]; leaf values the class shares."""

    def check_columns(self, n_stats):
        if n_stats < 2:
            raise ValueError(f"{self.name} stats have 1 + C >= 2 columns, not {n_stats}")

    def leaf_columns(self, cols, l2):
        w = _class_weight(cols)
        return np.stack([_ratio(cols[c], w) for c in range(1, len(cols))], axis=1)

    def n_values(self, n_classes):
        return n_classes


class Gini(_Classification):
    """Gini: score sum_c n_c^2 / W; gain computed as W_L W_R / W sum_c (p_L,c - p_R,c)^2."""

    name = "gini"

    def score_columns(self, cols, l2):
        w = _class_weight(cols)
        total = 0.0
        for c in range(1, len(cols)):
            total = total + cols[c] * _ratio(cols[c], w)
        return total

    def gain_columns(self, left, right, parent, l2):
        w_left, w_right = _class_weight(left), _class_weight(right)
        gaps = 0.0
        for c in range(1, len(left)):
            gap = left[c] / w_left - right[c] / w_right
            gaps = gaps + gap * gap
        return (w_left * w_right / _class_weight(parent)) * gaps


class Entropy(_Classification):
    """Entropy: score sum_c n_c log(n_c / W); gain computed as W_L KL(p_L || p) +
    W_R KL(p_R || p), p the parent's class shares."""

    name = "entropy"

    def score_columns(self, cols, l2):
        w = _class_weight(cols)
        total = 0.0
        for c in range(1, len(cols)):
            total = total + _n_log_share(cols[c], w, 0.0)
        return total

    def gain_columns(self, left, right, parent, l2):
        w_left, w_right, w_parent = (_class_weight(s) for s in (left, right, parent))
        total = 0.0
        for c in range(1, len(left)):
            log_parent = np.log(parent[c] / w_parent)  # -inf only where both children are 0
            total = total + (
                _n_log_share(left[c], w_left, log_parent)
                + _n_log_share(right[c], w_right, log_parent)
            )
        return total


def _n_log_share(n, w, log_ref):
    """n (log(n / w) - log_ref) elementwise, 0 where n <= 0 (n log n -> 0)."""
    return np.where(n > 0, n * (np.log(n / w) - log_ref), 0.0)


class Variance(Criterion):
    """Regression: stats [rows, w, w y, w y^2]; score (w y)^2 / w, gain computed as
    w_L w_R / w (mean_L - mean_R)^2 (the w y^2 column cancels, so it is never read)."""

    name = "variance"

    def check_columns(self, n_stats):
        if n_stats != 4:
            raise ValueError(f"variance stats have 4 columns [rows, w, wy, wy2], not {n_stats}")

    def n_split_columns(self, n_stats):
        return 3

    def score_columns(self, cols, l2):
        return cols[2] * _ratio(cols[2], cols[1])

    def gain_columns(self, left, right, parent, l2):
        gap = left[2] / left[1] - right[2] / right[1]
        return (left[1] * right[1] / parent[1]) * (gap * gap)

    def leaf_columns(self, cols, l2):
        return _ratio(cols[2], cols[1])[:, None]

    def n_values(self, n_classes):
        return 1


#: The criteria by name.
CRITERIA: dict[str, Criterion] = {c.name: c for c in (GBT(), Gini(), Entropy(), Variance())}


def criterion(name: str) -> Criterion:
    """The criterion ``name``; ValueError naming the choices otherwise."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def _resolve(crit: str | Criterion) -> Criterion:
    """A Criterion from itself or its name."""
    return crit if isinstance(crit, Criterion) else criterion(crit)


def n_values(criterion: str | Criterion, n_classes: int) -> int:
    """V, the width of a leaf value: 1 for gbt and variance, n_classes for gini/entropy."""
    return _resolve(criterion).n_values(n_classes)


def leaf_values(totals, criterion: str | Criterion, limits: Limits, lr: float = 1.0) -> np.ndarray:
    """(K, V) float64 leaf values of K nodes with stats ``totals`` (K, S), times ``lr``.

    gbt: lr * -G / (H + l2); gini/entropy: the class weights over their sum; variance:
    the weighted mean w y / w. A node without weight (a zero denominator) gets 0. ``lr``
    is gbt's learning rate; forests pass 1.0.
    """
    crit = _resolve(criterion)
    totals = np.asarray(totals, dtype=np.float64)
    crit.check_columns(totals.shape[1])
    return lr * crit.leaf_columns(totals.T, limits.l2)


def best_splits(
    hist,
    totals,
    feature_mask,
    criterion: str | Criterion,
    limits: Limits,
    feature_offset=0,
    with_gaps=False,
):
    """The best split "bin <= b goes left" of each node, over this rank's features.

    Parameters
    ----------
    hist : (d_local, K, B, S) float64, the node histograms reduced over all ranks:
        hist[f, k, b] sums the stats of node k's rows with code b in local feature f.
    totals : (K, S) float64, each node's stats (the sum of hist[f, k] over bins, any f).
    feature_mask : (K, d_local) bool, the features allowed at each node.
    criterion : a :class:`Criterion` or its name in :data:`CRITERIA`.  limits : :class:`Limits`.
    feature_offset : the global id of local feature 0.

    Returns
    -------
    gain : (K,) float64, the best gain, -inf where no split is valid.
    feature : (K,) int64, its global feature id, -1 where none.
    bin : (K,) int64, its bin b (0 <= b <= B - 2), -1 where none.
    left : (K, S) float64, the left child's stats (zeros where none); the right child's
        are totals - left.

    upper : (K,) int64, only ``with_gaps``: the last bin of the split's gap, the largest
        ``e >= bin`` such that the node has no rows (column 0) in bins ``bin + 1 .. e``:
        every threshold between bins ``bin`` and ``e + 1`` splits its rows alike (-1
        where none).

    A split is valid if the feature is allowed, both children respect ``limits`` and the
    gain is finite and > 0. Ties go to the smallest feature, then the smallest bin. The
    last bin is never a split (its right child would be empty).
    """
    crit = _resolve(criterion)
    hist = np.asarray(hist, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    feature_mask = np.asarray(feature_mask, dtype=bool)
    d, n_nodes, n_bins, n_stats = hist.shape
    crit.check_columns(n_stats)
    if totals.shape != (n_nodes, n_stats) or feature_mask.shape != (n_nodes, d):
        raise ValueError(
            f"hist {hist.shape} needs totals ({n_nodes}, {n_stats}) and feature_mask "
            f"({n_nodes}, {d}), not {totals.shape} and {feature_mask.shape}"
        )
    pair_node, pair_feature = np.nonzero(feature_mask)  # the allowed pairs, node-major

    def cells_of(p):
        return hist[pair_feature[p], pair_node[p]]

    gain, best, bins = _best_of_pairs(cells_of, pair_node, pair_feature, totals, crit, limits)
    return _split_record(gain, best, bins, pair_feature + feature_offset, n_stats, cells_of,
                         with_gaps)  # fmt: skip


def best_pair_splits(cells, pair_node, pair_feature, totals, criterion, limits,
                     with_gaps=False):  # fmt: skip
    """:func:`best_splits` over histograms of (node, feature) pairs instead of all
    features of all nodes: ``cells`` (m, B, S) the reduced histogram of node
    ``pair_node[i]`` (0 .. K-1) in global feature ``pair_feature[i]``, ``totals`` (K, S).
    A forest's nodes, each with its own features, are histogrammed this way. Returns
    ``(gain, feature, bin, left)`` (and ``upper``) as :func:`best_splits` (ties: the
    smaller feature, whatever the pairs' order, then the smaller bin)."""
    crit = _resolve(criterion)
    cells = np.asarray(cells, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    pair_node, pair_feature = np.asarray(pair_node, np.int64), np.asarray(pair_feature, np.int64)
    crit.check_columns(cells.shape[2])
    if (
        totals.shape[1:] != cells.shape[2:]
        or pair_node.shape != (len(cells),)
        or (pair_feature.shape != (len(cells),))
    ):
        raise ValueError(f"cells {cells.shape} need (m,) pairs and totals (K, "
                         f"{cells.shape[2]}), not {pair_node.shape}, {pair_feature.shape}, "
                         f"{totals.shape}")  # fmt: skip
    cells_of = cells.__getitem__
    gain, best, bins = _best_of_pairs(cells_of, pair_node, pair_feature, totals, crit, limits)
    return _split_record(gain, best, bins, pair_feature, totals.shape[1], cells_of, with_gaps)


def _best_of_pairs(cells_of, pair_node, pair_feature, totals, crit, limits):
    """Per node (K = len(totals)) the best gain (-inf: none), the index of its best pair
    (-1: none; ties: the smaller feature) and bin, over the pairs whose (p, B, S) cells
    ``cells_of(p)`` gives for an index array ``p``, in blocks of :data:`_BLOCK_CELLS`."""
    n_nodes = len(totals)
    gain = np.full(n_nodes, -np.inf)
    best = np.full(n_nodes, -1, dtype=np.int64)
    bins = np.full(n_nodes, -1, dtype=np.int64)
    n_pairs = len(pair_node)
    if n_pairs == 0:
        return gain, best, bins
    n_bins = cells_of(np.arange(1)).shape[1]
    if n_bins < 2:
        return gain, best, bins
    n_cols = crit.n_split_columns(totals.shape[1])
    pair_gain = np.empty(n_pairs)
    pair_bin = np.empty(n_pairs, dtype=np.int64)
    step = max(1, _BLOCK_CELLS // (n_bins - 1))
    for p0 in range(0, n_pairs, step):
        pairs = np.arange(p0, min(p0 + step, n_pairs))
        pair_gain[pairs], pair_bin[pairs] = _best_bins(
            cells_of(pairs)[:, :, :n_cols], totals[pair_node[pairs], :n_cols], crit, limits
        )
    np.maximum.at(gain, pair_node, pair_gain)
    is_best = np.flatnonzero((pair_gain == gain[pair_node]) & (pair_gain > -np.inf))
    is_best = is_best[np.lexsort((pair_feature[is_best], pair_node[is_best]))]
    found, first = np.unique(pair_node[is_best], return_index=True)  # the smallest feature
    best[found] = is_best[first]
    bins[found] = pair_bin[best[found]]
    return gain, best, bins


def _split_record(gain, best, bins, pair_feature, n_stats, cells_of, with_gaps):
    """``(gain, feature, bin, left[, upper])`` of :func:`best_splits` from each node's best
    pair: ``left`` (K, n_stats) the prefix sums of its cells (``cells_of``) through the
    split bin, in the order the gains summed them; ``upper`` the end of its gap."""
    feature = np.full(len(gain), -1, dtype=np.int64)
    left = np.zeros((len(gain), n_stats))
    upper = np.full(len(gain), -1, dtype=np.int64)
    found = np.flatnonzero(best >= 0)
    if found.size:
        feature[found] = pair_feature[best[found]]
        cells = cells_of(best[found])  # (n_found, B, S)
        prefix = np.cumsum(cells, axis=1)
        left[found] = prefix[np.arange(found.size), bins[found]]
        if with_gaps:
            n_bins = cells.shape[1]
            filled = (cells[:, :, 0] != 0) & (np.arange(n_bins) > bins[found][:, None])
            upper[found] = np.where(filled.any(axis=1), filled.argmax(axis=1) - 1, n_bins - 1)
    return (gain, feature, bins, left, upper) if with_gaps else (gain, feature, bins, left)


def _best_bins(cells, totals, crit, limits):
    """(gain, bin) of the best valid split of each (node, feature) pair, from its (m, B, S')
    histogram cells and (m, S') node stats: -inf (and bin 0) where none is valid."""
    if crit.name == "gbt":  # boosting's and Gini forests': one compiled pass, same bits
        return tree_kernels.gbt_best_bins(cells, totals, limits.min_rows_leaf,
                                          limits.min_hessian_leaf, limits.l2)  # fmt: skip
    if crit.name == "gini":
        return tree_kernels.gini_best_bins(cells, totals, limits.min_rows_leaf)
    m, n_bins, n_cols = cells.shape
    lefts = np.empty((n_cols, m, n_bins - 1))  # column-major: lefts[s] is contiguous
    np.cumsum(np.moveaxis(cells[:, :-1, :], 2, 0), axis=2, out=lefts)
    parent = np.ascontiguousarray(totals.T)[:, :, None]  # (S', m, 1)
    rights = parent - lefts
    valid = crit.children_ok(lefts, rights, limits)
    with np.errstate(all="ignore"):
        gains = crit.gain_columns(lefts, rights, parent, limits.l2)
    gains = np.where(valid & (gains > 0) & (gains < np.inf), gains, -np.inf)
    best_bin = gains.argmax(axis=1)  # the first (smallest) best bin
    return gains[np.arange(m), best_bin], best_bin
