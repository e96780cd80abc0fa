"""Growing trees level by level from histograms that the ranks combine. Every rank.

Each rank holds its rows' bin ids (``codes``, uint8 (n, d)) and, per tree, their
statistics (``stats``, float64 (n, S), column 0 the rows a leaf counts; already on the
exact grid of :mod:`mpigd.trees.exact`). Several trees may grow at once (one per class
of a boosted softmax round): their nodes of one level share one collective.

One level, for the nodes that may split (depth below ``max_depth``, at least
``2 * min_rows_leaf`` rows):

1. histograms (``kernels.trees.histograms``) of the nodes whose rows are read: the
   roots, and the child with fewer rows of each split of the level above; the sibling's
   is its parent's minus the child's (exact, so no rounding creeps in);
2. the exchange (:mod:`mpigd.strategies.histograms`) sums them over the ranks (one
   Allreduce, or one Reduce-Scatter by feature) and agrees on each node's best split
   (:func:`mpigd.trees.split.best_splits`; on the owned features, then one small
   Allgather);
3. every rank takes the same decisions: a split needs a positive gain; with
   ``max_leaves``, a tree's candidates split in decreasing gain (ties: the smaller
   node id) while it has fewer leaves than that;
4. each rank partitions its rows of the split nodes (``kernels.trees.partition``).

Node ids are the creation order within a tree: the root 0; at each level the splits
in increasing node id, the left child the next id, the right the one after. The
decisions depend only on exact sums, so every rank, every rank count and both
exchanges grow the same trees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kernels import trees as tree_kernels
from mpigd.trees import split as splits
from mpigd.trees.binning import mid_gap


@dataclass
class TreeJob:
    """One tree to grow: this rank's ``stats`` (n, S) of all its rows, the local ids of
    the rows taking part (``rows``, int64, increasing: those of positive weight),
    ``allowed(node_ids)``: the features each of the nodes (an int64 array of node ids)
    may split on (bool (len(node_ids), d); None: all), and
    ``totals`` (S,), the sums of ``stats`` over this rank's rows when the caller has
    them (None: summed here). Rows not taking part have all-zero stats, so the sums
    over all rows and over ``rows`` are the same (and exact, on the grid)."""

    stats: np.ndarray
    rows: np.ndarray
    allowed: Callable[[np.ndarray], np.ndarray | None] = lambda node_ids: None
    totals: np.ndarray | None = None
    #: Whether ``allowed`` differs from node to node (a forest's few features per node):
    #: each node's histograms are then built for its own features only.
    node_features: bool = False


@dataclass
class GrownTree:
    """A grown tree: ``arrays`` (:data:`mpigd.trees.ensemble.NODE_ARRAYS`), and where this
    rank's rows ended up: node ``k``'s rows are ``order[segments[k, 0]:segments[k, 1]]``
    (for a leaf, the rows whose prediction it gives)."""

    arrays: dict
    order: np.ndarray
    segments: np.ndarray


@dataclass
class GrowthLimits:
    """How far trees grow: ``max_depth`` (root depth 0), ``max_leaves`` (None: no
    limit), the split criterion and its :class:`~mpigd.trees.split.Limits`, and
    ``lr``, the factor of every leaf value (boosting's shrinkage; 1 for a forest)."""

    max_depth: int
    max_leaves: int | None
    criterion: object
    limits: object
    lr: float = 1.0


@dataclass(eq=False)
class _Node:
    """A node being grown: its tree, id, depth, global totals (S,), and the segment
    ``start:end`` of its tree's row order holding this rank's rows of it (once split:
    its left rows are ``start:mid``)."""

    tree: int
    id: int
    depth: int
    totals: np.ndarray
    start: int
    end: int
    mid: int = -1


@dataclass
class _Tree:
    """A tree's nodes so far (lists indexed by node id) and its row order."""

    order: np.ndarray
    feature: list = field(default_factory=list)
    bin: list = field(default_factory=list)
    upper: list = field(default_factory=list)
    left: list = field(default_factory=list)
    right: list = field(default_factory=list)
    gain: list = field(default_factory=list)
    totals: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    leaves: int = 1

    def add(self, totals: np.ndarray, start: int, end: int) -> int:
        """A new leaf with these totals and rows ``order[start:end]``; its id."""
        for name in ("feature", "bin", "upper", "left", "right"):
            getattr(self, name).append(-1)
        self.gain.append(0.0)
        self.totals.append(totals)
        self.segments.append((start, end))
        return len(self.feature) - 1


class Grower:
    """Grows trees on this rank's ``codes`` with ``exchange`` combining the ranks'
    histograms; ``timer`` books the histogram kernel as ``compute``. A split's threshold
    is its bin's upper edge (``bins``, :class:`~mpigd.trees.binning.Bins`), as
    HistGradientBoosting's; with ``ranges`` (:func:`~mpigd.trees.binning.value_ranges`,
    a forest's) it lies mid-gap between the node's rows either side
    (:func:`~mpigd.trees.binning.mid_gap`), as RandomForest's."""

    def __init__(self, codes: np.ndarray, bins, exchange, limits: GrowthLimits, timer,
                 ranges=None) -> None:  # fmt: skip
        self.codes, self.bins, self.exchange, self.ranges = codes, bins, exchange, ranges
        self.growth, self.timer = limits, timer
        self.n_bins = int(bins.max_bins_used)
        #: Seconds this rank spent building histograms and choosing splits, and the
        #: passes over rows (rows read by the histogram kernel / rows of the trees).
        self.histogram_s = self.split_s = 0.0
        self.rows_read = 0
        self._buffers: dict = {}  # see _scratch

    def grow(self, jobs: list[TreeJob]) -> list[GrownTree]:
        """Collective: grow one tree per job (all at once)."""
        trees = [_Tree(order=np.array(job.rows, np.int64)) for job in jobs]
        local = np.array([job.stats.sum(axis=0) if job.totals is None else job.totals
                          for job in jobs])  # fmt: skip
        totals = self.exchange.sum(local)  # exact: the stats are on the grid
        level = [_Node(t, trees[t].add(totals[t], 0, len(trees[t].order)), 0, totals[t], 0,
                       len(trees[t].order)) for t in range(len(jobs))]  # fmt: skip
        built, parent_hist, sibling_of = level, None, {}
        per_node = any(job.node_features for job in jobs)
        while level:
            candidates = [node for node in level if self._may_split(node)]
            if not candidates:
                break
            if per_node:
                found = self._pair_search(jobs, trees, candidates)
            else:
                hist = self._level_histograms(jobs, trees, candidates, built, parent_hist,
                                              sibling_of)  # fmt: skip
                found = self._search(jobs, candidates, hist)
            chosen = self._choose(trees, candidates, found)
            level, built, sibling_of, keep = self._split(trees, candidates, chosen)
            if not per_node:
                parent_hist = (hist, keep)  # the split nodes' histograms, uncopied
        return [self._finish(tree) for tree in trees]

    def _scratch(self, key, shape) -> np.ndarray:
        """An uninitialised float64 array of ``shape`` over a buffer kept per ``key`` (and
        grown when too small): a level's histograms are up to hundreds of MiB, and fresh
        pages cost a fault each (~0.1 s a softmax round). The keys alternate with the
        depth's parity, so a level's buffers never overwrite its parents' histograms."""
        size = int(np.prod(shape))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[key] = np.empty(size)
        return buffer[:size].reshape(shape)

    def _may_split(self, node: _Node) -> bool:
        limits = self.growth
        return (node.depth < limits.max_depth
                and node.totals[0] >= 2 * limits.limits.min_rows_leaf)  # fmt: skip

    def _level_histograms(self, jobs, trees, candidates, built, parent_hist, sibling_of):
        """(d_own, K, B, S) reduced histograms of the candidates, in candidate order:
        read from rows for the built nodes, parent minus sibling for the others."""
        is_candidate = {id(node) for node in candidates}
        from_rows = {id(node) for node in built}

        def derived(node) -> bool:  # its sibling's histogram is read, and it is not
            relation = sibling_of.get(id(node))
            return relation is not None and id(relation[1]) in is_candidate

        to_build = [node for node in candidates if id(node) in from_rows or not derived(node)]
        d, S = self.codes.shape[1], jobs[0].stats.shape[1]
        depth = candidates[0].depth
        local = self._scratch(("local", depth % 2), (d, len(to_build), self.n_bins, S))
        with self.timer.phase("compute"):
            start = time.perf_counter()
            for t, ks in _by_tree(to_build).items():  # a tree's nodes are neighbours
                starts = np.array([to_build[k].start for k in ks], np.int64)
                ends = np.array([to_build[k].end for k in ks], np.int64)
                tree_kernels.histograms(self.codes, jobs[t].stats, trees[t].order, starts,
                                        local, ends=ends, first_node=ks[0])  # fmt: skip
                self.rows_read += int(np.sum(ends - starts))
            self.histogram_s += time.perf_counter() - start
        reduced = self.exchange.reduce(local)
        if len(to_build) == len(candidates):  # to_build is candidates, in order
            return reduced
        position = {id(node): k for k, node in enumerate(to_build)}
        parents, kept = parent_hist
        hist = self._scratch(("hist", depth % 2),
                             (reduced.shape[0], len(candidates), self.n_bins, S))  # fmt: skip
        for k, node in enumerate(candidates):
            if id(node) in position:
                hist[:, k] = reduced[:, position[id(node)]]
            else:
                parent_k, sibling = sibling_of[id(node)]
                np.subtract(parents[:, kept[parent_k]], reduced[:, position[id(sibling)]],
                            out=hist[:, k])  # fmt: skip
        return hist

    def _search(self, jobs, candidates, hist):
        """Collective (reduce-scatter): each candidate's best split over its allowed
        features, ``(gain, feature, bin, left, upper)`` as every rank agrees."""
        start = time.perf_counter()
        masks = self._masks(jobs, candidates)
        totals = np.array([node.totals for node in candidates])
        with self.timer.phase("compute"):
            found = self.exchange.best_splits(hist, totals, masks, self.growth.criterion,
                                              self.growth.limits)  # fmt: skip
        self.split_s += time.perf_counter() - start
        return found

    def _pair_search(self, jobs, trees, candidates):
        """Collective: :meth:`_search` for nodes that each try their own few features
        (``TreeJob.node_features``): every candidate's histograms of its allowed features
        alone, read from its rows (no sibling to subtract from: the parent's features
        differ), packed as (node, feature) pairs ordered by feature, then node (so that a
        feature range is a contiguous block, for reduce-scatter), combined in one
        collective and searched (:func:`mpigd.trees.split.best_pair_splits`)."""
        S = jobs[0].stats.shape[1]
        masks = self._masks(jobs, candidates)
        counts = masks.sum(axis=1)
        pair_node, pair_feature = np.nonzero(masks)  # node-major, features increasing
        by_feature = np.lexsort((pair_node, pair_feature))
        slots = np.empty(len(by_feature), np.int64)
        slots[by_feature] = np.arange(len(by_feature))
        local = self._scratch(("pairs", 0), (len(by_feature), self.n_bins, S))
        first_pair = np.concatenate([[0], np.cumsum(counts)])
        with self.timer.phase("compute"):
            start = time.perf_counter()
            for t, ks in _by_tree(candidates).items():  # neighbours: their pairs are too
                order = trees[t].order
                rows = np.concatenate([order[candidates[k].start : candidates[k].end] for k in ks])
                starts = np.concatenate([[0], np.cumsum([candidates[k].end - candidates[k].start
                                                         for k in ks])])  # fmt: skip
                pairs = slice(first_pair[ks[0]], first_pair[ks[-1] + 1])
                tree_kernels.pair_histograms(self.codes, jobs[t].stats, rows, starts,
                                             np.concatenate([[0], np.cumsum(counts[ks])]),
                                             pair_feature[pairs], slots[pairs], local)  # fmt: skip
                self.rows_read += len(rows)
            self.histogram_s += time.perf_counter() - start
        cells, own = self.exchange.reduce_pairs(local, pair_feature[by_feature])
        start = time.perf_counter()
        totals = np.array([node.totals for node in candidates])
        with self.timer.phase("compute"):
            found = self.exchange.best_pair_splits(
                cells, pair_node[by_feature][own], pair_feature[by_feature][own], totals,
                self.growth.criterion, self.growth.limits)  # fmt: skip
        self.split_s += time.perf_counter() - start
        return found

    def _masks(self, jobs, candidates) -> np.ndarray:
        """bool (K, d): the features each candidate may split on, asked of each tree's
        job for all its candidates at once."""
        masks = np.ones((len(candidates), self.codes.shape[1]), bool)
        for t, ks in _by_tree(candidates).items():
            allowed = jobs[t].allowed(np.array([candidates[k].id for k in ks], np.int64))
            if allowed is not None:
                masks[ks] = allowed
        return masks

    def _choose(self, trees, candidates, found) -> list:
        """The split of each candidate (None: it stays a leaf) from the agreed best
        ``found``: a positive gain, and with ``max_leaves`` the best while room is left."""
        start = time.perf_counter()
        gain, feature, bin_, left, upper = found
        chosen = [None] * len(candidates)
        splitting = [np.isfinite(g) and g > 0 for g in gain]
        for t, ks in _by_tree(candidates, splitting).items():
            if self.growth.max_leaves is not None:
                room = self.growth.max_leaves - trees[t].leaves
                ks = sorted(ks, key=lambda k: (-gain[k], candidates[k].id))[: max(room, 0)]
            for k in ks:
                chosen[k] = (float(gain[k]), int(feature[k]), int(bin_[k]), left[k],
                             int(upper[k]))  # fmt: skip
                trees[t].leaves += 1
        self.split_s += time.perf_counter() - start
        return chosen

    def _split(self, trees, candidates, chosen):
        """Apply the chosen splits (in node id order within each tree): children, row
        partition. Returns the next level, the nodes whose histograms are read from
        rows, ``{id(child): (parent position, sibling)}`` for the others, and the
        positions (in ``candidates``) of the split nodes, whose histograms are kept."""
        level, built, sibling_of, keep = [], [], {}, []
        with self.timer.phase("compute"):
            for t, ks in _by_tree(candidates, [c is not None for c in chosen]).items():
                ks.sort(key=lambda k: candidates[k].id)
                self._partition(trees[t], [candidates[k] for k in ks], [chosen[k] for k in ks])
        for k, node in enumerate(candidates):
            if chosen[k] is None:
                continue
            gain, feature, bin_, left_totals, upper = chosen[k]
            tree, mid = trees[node.tree], node.mid
            left_totals = np.array(left_totals, np.float64)
            right_totals = node.totals - left_totals
            left = _Node(node.tree, tree.add(left_totals, node.start, mid), node.depth + 1,
                         left_totals, node.start, mid)  # fmt: skip
            right = _Node(node.tree, tree.add(right_totals, mid, node.end), node.depth + 1,
                          right_totals, mid, node.end)  # fmt: skip
            tree.feature[node.id], tree.bin[node.id], tree.upper[node.id] = feature, bin_, upper
            tree.left[node.id], tree.right[node.id], tree.gain[node.id] = left.id, right.id, gain
            position = len(keep)
            keep.append(k)
            smaller, larger = (left, right) if left.totals[0] <= right.totals[0] else (right, left)
            built.append(smaller)
            sibling_of[id(larger)] = (position, smaller)
            level += [left, right]
        level.sort(key=lambda node: (node.tree, node.id))
        return level, built, sibling_of, keep

    def _partition(self, tree: _Tree, nodes: list, chosen: list) -> None:
        """Stably reorder the tree's rows of each split node, left rows first; sets each
        node's ``mid``. Segments between them (leaves) are passed as untouched."""
        starts, features, bins = [0], [], []
        for node, (_, feature, bin_, _, _) in zip(nodes, chosen, strict=True):
            if node.start > starts[-1]:  # the rows of leaves before it
                starts.append(node.start)
                features.append(-1)
                bins.append(0)
            if node.start == node.end:
                node.mid = node.start
                continue
            starts.append(node.end)
            features.append(feature)
            bins.append(bin_)
        if starts[-1] < len(tree.order):
            starts.append(len(tree.order))
            features.append(-1)
            bins.append(0)
        mids = np.empty(len(features), np.int64)
        tree_kernels.partition(self.codes, tree.order, np.array(starts, np.int64),
                               np.array(features, np.int64), np.array(bins, np.int64),
                               mids)  # fmt: skip
        ends = {end: mid for end, mid in zip(starts[1:], mids.tolist(), strict=True)}
        for node in nodes:
            if node.start != node.end:
                node.mid = ends[node.end]

    def _finish(self, tree: _Tree) -> GrownTree:
        """The tree as arrays (:data:`mpigd.trees.ensemble.NODE_ARRAYS`) and its rows."""
        feature, bin_ = np.array(tree.feature, np.int32), np.array(tree.bin, np.int32)
        totals = np.array(tree.totals)
        inner = feature >= 0
        threshold = np.zeros(len(feature))
        for node in np.flatnonzero(inner):
            f, b = feature[node], bin_[node]
            if self.ranges is None:
                threshold[node] = self.bins.edges[f][b]
            else:
                threshold[node] = mid_gap(self.bins.edges[f], self.ranges[0][f],
                                          self.ranges[1][f], b, tree.upper[node])  # fmt: skip
        value = splits.leaf_values(totals, self.growth.criterion, self.growth.limits,
                                   lr=self.growth.lr)  # fmt: skip
        value[inner] = 0.0
        arrays = {"feature": feature, "threshold": threshold, "bin": bin_,
                  "left": np.array(tree.left, np.int32), "right": np.array(tree.right, np.int32),
                  "value": value, "gain": np.array(tree.gain), "rows": totals[:, 0]}  # fmt: skip
        return GrownTree(arrays, tree.order, np.array(tree.segments, np.int64).reshape(-1, 2))


def _by_tree(nodes: list, include=None) -> dict[int, list[int]]:
    """The positions in ``nodes`` of each tree's nodes (those ``include`` marks, when
    given), in order: ``{tree: [k, ...]}``."""
    by_tree: dict[int, list[int]] = {}
    for k, node in enumerate(nodes):
        if include is None or include[k]:
            by_tree.setdefault(node.tree, []).append(k)
    return by_tree
