"""Numba kernels of the tree ensembles: node histograms, stable partitions, prediction.

Conventions (those of the tree modules): ``codes`` uint8 (n, d) C-contiguous, the binned
rows of one rank; ``stats`` float64 (n, S), per-row statistics (column 0 the row count);
``order`` int64 row ids grouped by node, node ``k``'s rows ``order[starts[k]:starts[k +
1]]``; histograms float64 (d, K, B, S), feature-major. Each public function checks its
arguments in Python (dtypes, shapes, layouts, O(K) or O(nodes) work) and calls one
compiled kernel (``cache``, ``nogil``: threads may run kernels on disjoint outputs);
row ids and codes are checked in the loops by one unsigned comparison each. The
``*_reference`` functions are the numpy specification the tests hold the kernels to;
:func:`histograms` and :func:`predict` add in the same order as their references, so
they agree bit for bit.

:func:`histograms`: per node, one pass over its rows into a working histogram
(d, B, width) that is contiguous whatever ``K`` (then moved to ``out[:, k]``), where
``width`` pads ``S`` to 1, 2 or a multiple of 4 so that a bin's update is one SIMD add
(4 lanes for the S = 3 of gbt and of binary forests). Row by row: the row's 50 codes
read once, its stats once, the row :data:`PREFETCH_ROWS` ahead prefetched (a node's
rows below the root lie scattered over the rank's rows). Measured on the 2-core AMD
EPYC KVM guest this was written on (Zen 3, 32 KiB L1d and 512 KiB L2 per core, 32 MB
L3; the other core busy with other jobs, load average 3-5, so figures are CPU time,
min of 5-7, and vary by +-30% from run to run), 1 thread, 1,000,000 x 50 codes,
B = 256, uniform random codes: S = 3, one node, 1.4-1.6 ns per (row, feature) update
(70-80 ms; some runs up to 2.2 ns), against 0.10-0.12 ns for a streaming read of
``codes`` (a Numba sum, 5-6 ms): 13x the floor. The floor is the wrong model: the
400 KiB working histogram lives in L2, and each update moves one line in and one dirty
line out of L1; with B = 4 (a 6 KiB histogram, in L1) the same loop takes 0.67 ns.
S = 1: 1.0 ns, S = 2: 1.2, S = 4: 1.4, S = 11 (width 12, a 1.2 MiB histogram, past L2,
so features go in groups of at most :data:`HIST_GROUP_BYTES` over blocks of
:data:`BLOCK_ROWS` rows): 5.0-5.4 ns (6.6 all at once). 64 nodes of random rows (a
level's layout after stable partitions): 2.4-3.1 ns (7.6 without the prefetch, which
then waits on memory for each row's lines). Each node also costs a fixed ~90 us
(S = 3) to move and re-zero its working histogram, which dominates below ~1000 rows
(1024 nodes of ~1000 rows: 4.8 ns per update). Tried and slower, S = 3, one node:
adding straight into ``out`` (3.7 ns, 10.3 with 64 nodes), three scalar adds into an
unpadded (d, B, 3) buffer (2.5 ns), a loop over ``S`` (7.6 ns), feature-major passes
over blocks of 32-256 rows with one feature's 8 KiB histogram in L1 (1.7-3.2 ns, also
with 2-4 copies against store-to-load conflicts, and with the block's codes transposed),
groups of 5-25 features at S = 3 (no gain, or slower), and the width dispatch in a
helper function: its array arguments cost three reference-count calls per row (2x
slower), which is why the per-width loops are written out in :func:`_add_node_rows`.
For the same reason :func:`_add_node_rows` and :func:`_pair_histograms` each spell out
the row's prefetch and stats load: a shared helper, even with ``inline="always"``, made
them 1.4x (one node, 500,000 rows) and 2.7x (64 nodes of 7 features) slower.

:func:`partition`: per split node, left rows compacted in place, right rows through a
scratch buffer, branch-free; the code of the row :data:`PREFETCH_ROWS` ahead is
prefetched. 1,000,000 rows: one node 5-7 ms (each row's code is on its own line: the
``codes`` stream, ~5 ms, is the floor), 64 nodes 16-20 ms (51 ms without the prefetch).
A branchy loop took 9.5-11 ms on one node split in half.

:func:`predict`: blocks of :data:`PREDICT_BLOCK_ROWS` rows; per block each tree in turn
walks all the block's rows one level at a time, branch-free (``node = children[2 node +
goes_right]``, leaves looping to themselves, every walk the tree's depth in steps) with
unsigned indices (no wraparound code). The block's rows are in L1/L2 and one tree's
nodes in L1, and the block's walks are independent, so the CPU overlaps their loads.
100 trees of depth 6 (79 nodes each on average), 200,000 x 50 rows, V = 1: 220-280 ms
float64 and 190-240 ms float32, against 1,260-1,340 ms rows outer with trees inner
(a branchy walk per row and tree) and 1,060-2,800 ms trees outer with rows inner.
Blocks of 16 rows were 15% slower, of 32-256 the same; eight rows walked side by side
in registers were as fast as the block's array of nodes, four 20% slower; signed
indices (Numba's wraparound code) took 0.36-0.46 s.

Numba's on-disk cache checks only the timestamp of the file holding a compiled function:
after editing :func:`kernels.sparse._prefetch_read`, touch this file too.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.fused import _COMPILE
from kernels.sparse import _prefetch_read

#: Most bins a feature can have: codes are uint8.
MAX_BINS = 256
#: How many rows ahead :func:`histograms` and :func:`partition` prefetch the cache lines
#: of a row: below the root, a node's rows lie scattered over the rank's rows.
PREFETCH_ROWS = 16
#: Most bytes of working histogram :func:`histograms` updates at a time (features beyond go
#: in later passes over a block of rows): most of a 512 KiB L2.
HIST_GROUP_BYTES = 448 * 1024
#: Rows per block of :func:`histograms` when its features go in several groups.
BLOCK_ROWS = 2048
#: Rows per block of :func:`predict`: each tree walks a block's rows side by side.
PREDICT_BLOCK_ROWS = 64


def _vector_add_codegen(width):
    """LLVM for ``target[i : i + width] += source[j : j + width]``: one unaligned load of
    each as a ``<width x double>``, one SIMD add, one store; no bounds checks."""

    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.DoubleType(), width)
        pointers = []
        for array_type, array, index_type, index in (
            (signature.args[0], args[0], signature.args[1], args[1]),
            (signature.args[2], args[2], signature.args[3], args[3]),
        ):
            array_struct = context.make_array(array_type)(context, builder, array)
            position = context.cast(builder, index, index_type, types.intp)
            pointer = cgutils.get_item_pointer(context, builder, array_type, array_struct,
                                               [position], wraparound=False)  # fmt: skip
            pointers.append(builder.bitcast(pointer, vector.as_pointer()))
        target, source = pointers
        total = builder.fadd(builder.load(target, align=8), builder.load(source, align=8))
        builder.store(total, target, align=8)
        return context.get_dummy_value()

    return codegen


def _vector_add_signature(target, target_index, source, source_index):
    """``void(...)`` for two 1-D float64 arrays and integer positions, else None (no match)."""
    arrays_ok = all(
        isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float64
        for a in (target, source)
    )
    indices_ok = all(isinstance(i, types.Integer) for i in (target_index, source_index))
    if arrays_ok and indices_ok:
        return types.void(target, target_index, source, source_index)
    return None


@intrinsic
def _add2(typingctx, target, target_index, source, source_index):
    """``target[i : i + 2] += source[j : j + 2]`` as one SIMD add (unchecked positions)."""
    del typingctx
    signature = _vector_add_signature(target, target_index, source, source_index)
    return signature, _vector_add_codegen(2)


@intrinsic
def _add4(typingctx, target, target_index, source, source_index):
    """``target[i : i + 4] += source[j : j + 4]`` as one SIMD add (unchecked positions)."""
    del typingctx
    signature = _vector_add_signature(target, target_index, source, source_index)
    return signature, _vector_add_codegen(4)


@njit(**_COMPILE)
def _bin_width(n_stats):
    """Doubles per bin of the working histogram: ``S`` padded to 1, 2 or a multiple of 4,
    so that one bin's update is one scalar add, one 2-wide or ``width / 4`` 4-wide adds."""
    if n_stats <= 2:
        return n_stats
    return (n_stats + 3) // 4 * 4


@njit(**_COMPILE)
def _check_code(code, n_bins):
    """``code`` as uint64, checked to be ``< n_bins``."""
    b = uint64(code)
    if b >= n_bins:
        raise ValueError("codes holds a bin >= B, the bins of out")
    return b


@njit(**_COMPILE)
def _add_node_rows(codes, stats, order, start, stop, hist, row_stats, n_bins, width, group):
    """Add the stats of rows ``order[start:stop]`` to ``hist`` (d, n_bins, width) flat.

    Row by row: the row's ``S`` stats go to ``row_stats`` (padded with zeros to
    ``width``), then each feature's bin gets them in one or a few SIMD adds. Features go
    ``group`` at a time (all of them unless the histogram outgrows
    :data:`HIST_GROUP_BYTES`), over blocks of :data:`BLOCK_ROWS` rows, so that the part
    of ``hist`` being updated stays in L2. The first group's pass prefetches the lines of
    the row :data:`PREFETCH_ROWS` ahead. Row ids and codes are checked (one unsigned
    comparison each), so a bad ``order`` or code raises ``ValueError`` instead of
    writing out of bounds.
    """
    n, d = codes.shape
    n_stats = stats.shape[1]
    flat_codes = codes.reshape(n * d)
    flat_stats = stats.reshape(n * n_stats)
    n_rows, row_bytes, row_doubles = uint64(n), uint64(d), uint64(n_stats)
    bins = uint64(n_bins)
    stride = bins * uint64(width)  # doubles per feature
    for block_start in range(start, stop, BLOCK_ROWS):
        block_stop = min(block_start + BLOCK_ROWS, stop)
        for group_start in range(0, d, group):
            first_feature = uint64(group_start)
            last_feature = uint64(min(group_start + group, d))
            for q in range(block_start, block_stop):
                if group_start == 0 and q + PREFETCH_ROWS < stop:
                    ahead = uint64(order[q + PREFETCH_ROWS])
                    if ahead < n_rows:
                        _prefetch_read(flat_codes, ahead * row_bytes)
                        _prefetch_read(flat_codes, ahead * row_bytes + row_bytes - uint64(1))
                        _prefetch_read(flat_stats, ahead * row_doubles)
                r = uint64(order[q])
                if r >= n_rows:
                    raise ValueError("order holds a row id outside 0 .. n-1")
                for s in range(n_stats):
                    row_stats[s] = flat_stats[r * row_doubles + uint64(s)]
                # One loop per width, so that it is a constant inside; not a helper
                # function, whose array arguments cost three reference-count calls a row.
                first, position = r * row_bytes, first_feature * stride
                if width == 1:
                    value = row_stats[0]
                    for f in range(first_feature, last_feature):
                        hist[position + _check_code(flat_codes[first + f], bins)] += value
                        position += stride
                elif width == 2:
                    for f in range(first_feature, last_feature):
                        b = _check_code(flat_codes[first + f], bins)
                        _add2(hist, position + b * uint64(2), row_stats, 0)
                        position += stride
                elif width == 4:
                    for f in range(first_feature, last_feature):
                        b = _check_code(flat_codes[first + f], bins)
                        _add4(hist, position + b * uint64(4), row_stats, 0)
                        position += stride
                else:
                    for f in range(first_feature, last_feature):
                        b = _check_code(flat_codes[first + f], bins)
                        for c in range(0, width, 4):
                            _add4(hist, position + b * uint64(width) + uint64(c), row_stats, c)
                        position += stride


@njit(**_COMPILE)
def _move_node(hist, out, k, width):
    """``out[:, k] = hist`` (its first ``S`` doubles of each bin), and zero ``hist``."""
    n_features, _, n_bins, n_stats = out.shape
    p = 0
    for f in range(n_features):
        for b in range(n_bins):
            for s in range(n_stats):
                out[f, k, b, s] = hist[p + s]
            for s in range(width):
                hist[p + s] = 0.0
            p += width


@njit(**_COMPILE)
def _histograms(codes, stats, order, starts, ends, out, first_node):
    """:func:`histograms` on checked arguments: one (d, B, width) working histogram,
    contiguous whatever ``K``, filled per node and moved to ``out``."""
    n_features, _, n_bins, n_stats = out.shape
    width = _bin_width(n_stats)
    hist = np.zeros(n_features * n_bins * width)
    row_stats = np.zeros(width)
    group = max(1, min(n_features, HIST_GROUP_BYTES // (n_bins * width * 8)))
    for k in range(starts.shape[0]):
        _add_node_rows(codes, stats, order, starts[k], ends[k], hist, row_stats,
                       n_bins, width, group)  # fmt: skip
        _move_node(hist, out, first_node + k, width)


@njit(**_COMPILE)
def _pair_histograms(codes, stats, order, starts, feature_starts, features, slots, out):
    """:func:`pair_histograms` on checked arguments: per node one pass over its rows into
    a working histogram of its own features (contiguous, in L1/L2), then moved to its
    pairs' slots of ``out``."""
    n, d = codes.shape
    n_bins, n_stats = out.shape[1], out.shape[2]
    width = _bin_width(n_stats)
    most = 0
    for k in range(starts.shape[0] - 1):
        most = max(most, feature_starts[k + 1] - feature_starts[k])
    hist = np.zeros(most * n_bins * width)
    row_stats = np.zeros(width)
    flat_codes = codes.reshape(n * d)
    flat_stats = stats.reshape(n * n_stats)
    n_rows, row_bytes, row_doubles = uint64(n), uint64(d), uint64(n_stats)
    bins, stride = uint64(n_bins), uint64(n_bins) * uint64(width)
    for k in range(starts.shape[0] - 1):
        f0, f1, stop = feature_starts[k], feature_starts[k + 1], starts[k + 1]
        for q in range(starts[k], stop):
            if q + PREFETCH_ROWS < stop:
                ahead = uint64(order[q + PREFETCH_ROWS])
                if ahead < n_rows:
                    _prefetch_read(flat_codes, ahead * row_bytes)
                    _prefetch_read(flat_codes, ahead * row_bytes + row_bytes - uint64(1))
                    _prefetch_read(flat_stats, ahead * row_doubles)
            r = uint64(order[q])
            if r >= n_rows:
                raise ValueError("order holds a row id outside 0 .. n-1")
            for s in range(n_stats):
                row_stats[s] = flat_stats[r * row_doubles + uint64(s)]
            first, position = r * row_bytes, uint64(0)
            for j in range(f0, f1):
                b = _check_code(flat_codes[first + uint64(features[j])], bins)
                if width == 1:
                    hist[position + b] += row_stats[0]
                elif width == 2:
                    _add2(hist, position + b * uint64(2), row_stats, 0)
                else:
                    for c in range(0, width, 4):
                        _add4(hist, position + b * uint64(width) + uint64(c), row_stats, c)
                position += stride
        for j in range(f1 - f0):
            slot, base = slots[f0 + j], j * n_bins * width
            for b in range(n_bins):
                for s in range(n_stats):
                    out[slot, b, s] = hist[base + b * width + s]
                for s in range(width):
                    hist[base + b * width + s] = 0.0


@njit(**_COMPILE)
def _partition(codes, order, starts, features, bins, mids):
    """:func:`partition` on checked arguments. Per node, left rows are compacted in place
    and right rows go to a scratch buffer, copied back after; branch-free (both stores
    happen, the condition advances one cursor), since the side is unpredictable."""
    n, d = codes.shape
    n_nodes = features.shape[0]
    largest = 0
    for k in range(n_nodes):
        if features[k] >= 0:
            largest = max(largest, starts[k + 1] - starts[k])
    right_rows = np.empty(largest, np.int64)
    flat_codes = codes.reshape(n * d)
    n_rows, row_bytes = uint64(n), uint64(d)
    for k in range(n_nodes):
        start, stop = starts[k], starts[k + 1]
        if features[k] < 0:
            mids[k] = stop
            continue
        f, split_bin = uint64(features[k]), bins[k]
        n_left, n_right = start, 0
        for q in range(start, stop):
            if q + PREFETCH_ROWS < stop:
                ahead = uint64(order[q + PREFETCH_ROWS])
                if ahead < n_rows:
                    _prefetch_read(flat_codes, ahead * row_bytes + f)
            r = order[q]
            if uint64(r) >= n_rows:
                raise ValueError("order holds a row id outside 0 .. n-1")
            goes_left = np.int64(flat_codes[uint64(r) * row_bytes + f]) <= split_bin
            order[n_left] = r  # n_left <= q: order[q] is already read
            right_rows[n_right] = r
            n_left += goes_left
            n_right += 1 - goes_left
        order[n_left:stop] = right_rows[:n_right]
        mids[k] = n_left


@njit(**_COMPILE)
def _walk_tables(feature, threshold, left, right, tree_start):
    """Tables for branch-free walks: per node its feature and threshold (a leaf: feature
    0, threshold +inf) and its two children as absolute ids, ``children[2 node + 1]`` the
    right one (a leaf: itself, twice); and each tree's depth, the steps every walk takes."""
    n_nodes, n_trees = feature.shape[0], tree_start.shape[0] - 1
    split_feature = np.zeros(n_nodes, np.uint64)
    split_threshold = np.full(n_nodes, np.inf)
    children = np.empty(2 * n_nodes, np.uint64)
    node_depth = np.zeros(n_nodes, np.int64)
    tree_depth = np.zeros(n_trees, np.int64)
    for t in range(n_trees):
        root = tree_start[t]
        for node in range(root, tree_start[t + 1]):  # parents before children
            children[2 * node] = children[2 * node + 1] = node
            if feature[node] >= 0:
                split_feature[node] = feature[node]
                split_threshold[node] = threshold[node]
                children[2 * node] = root + left[node]
                children[2 * node + 1] = root + right[node]
                depth = node_depth[node] + 1
                node_depth[root + left[node]] = node_depth[root + right[node]] = depth
                tree_depth[t] = max(tree_depth[t], depth)
    return split_feature, split_threshold, children, tree_depth


@njit(**_COMPILE)
def _predict(X, feature, threshold, left, right, value, tree_start, tree_column, out):
    """:func:`predict` on checked arguments. Blocks of :data:`PREDICT_BLOCK_ROWS` rows;
    per block, each tree in turn walks all the block's rows a level at a time (the rows'
    walks are independent, so the CPU overlaps their loads), branch-free."""
    n, d = X.shape
    n_trees, width = tree_start.shape[0] - 1, value.shape[1]
    split_feature, split_threshold, children, tree_depth = _walk_tables(
        feature, threshold, left, right, tree_start
    )
    flat_X = X.reshape(n * d)
    nodes = np.empty(PREDICT_BLOCK_ROWS, np.uint64)
    row_start = np.empty(PREDICT_BLOCK_ROWS, np.uint64)
    two = uint64(2)
    for first in range(0, n, PREDICT_BLOCK_ROWS):
        m = min(PREDICT_BLOCK_ROWS, n - first)
        for j in range(m):
            row_start[j] = uint64(first + j) * uint64(d)
        for t in range(n_trees):
            nodes[:m] = tree_start[t]
            for _ in range(tree_depth[t]):
                for j in range(m):
                    node = nodes[j]
                    x = flat_X[row_start[j] + split_feature[node]]
                    goes_right = not x <= split_threshold[node]  # NaN goes right
                    nodes[j] = children[two * node + uint64(goes_right)]
            column = tree_column[t]
            for j in range(m):
                for v in range(width):
                    out[first + j, column + v] += value[nodes[j], v]


@njit(**_COMPILE)
def _gbt_best_bins(cells, totals, min_rows, min_hessian, l2, gain, best_bin):
    """:func:`gbt_best_bins` on checked arguments."""
    m, n_bins, _ = cells.shape
    for p in range(m):
        p0, p1, p2 = totals[p, 0], totals[p, 1], totals[p, 2]
        c = p2 + l2
        l0 = l1 = l2_sum = 0.0
        best, at = -np.inf, 0
        for b in range(n_bins - 1):
            l0 += cells[p, b, 0]
            l1 += cells[p, b, 1]
            l2_sum += cells[p, b, 2]
            r0, r1, r2 = p0 - l0, p1 - l1, p2 - l2_sum
            if l0 >= min_rows and r0 >= min_rows and l2_sum >= min_hessian and r2 >= min_hessian:
                a, bb = l2_sum + l2, r2 + l2
                d = l1 * bb - r1 * a
                g = (d * d - l2 * (l1 * l1 * bb + r1 * r1 * a)) / (a * bb * c)
                if g > 0.0 and g < np.inf and g > best:
                    best, at = g, b
        gain[p], best_bin[p] = best, at


def gbt_best_bins(cells, totals, min_rows, min_hessian, l2):
    """The best gbt split bin of each (node, feature) pair in one pass over its (B, 3)
    histogram ``cells`` (m, B, 3) with the node's ``totals`` (m, 3): ``(gain, bin)``, each
    (m,), gain -inf (bin 0) where no split is valid. The same arithmetic, in the same
    order, as :class:`mpigd.trees.split.GBT`'s numpy gains (running prefix sums over the
    bins, then the exact-zero gain form), so the same bits; a split needs both children
    to have ``min_rows`` rows and ``min_hessian`` Hessian, and a finite positive gain,
    and ties go to the smaller bin."""
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    totals = np.ascontiguousarray(totals, dtype=np.float64)
    if cells.ndim != 3 or cells.shape[2] != 3 or totals.shape != (cells.shape[0], 3):
        raise ValueError(f"cells must be (m, B, 3) and totals (m, 3), got {cells.shape} "
                         f"and {totals.shape}")  # fmt: skip
    gain = np.empty(cells.shape[0])
    best_bin = np.empty(cells.shape[0], np.int64)
    _gbt_best_bins(cells, totals, float(min_rows), float(min_hessian), float(l2), gain, best_bin)
    return gain, best_bin


@njit(**_COMPILE)
def _gini_best_bins(cells, totals, min_rows, gain, best_bin):
    """:func:`gini_best_bins` on checked arguments."""
    m, n_bins, n_stats = cells.shape
    left = np.empty(n_stats)
    for p in range(m):
        weight = totals[p, 1]
        for c in range(2, n_stats):
            weight = weight + totals[p, c]
        left[:] = 0.0
        best, at = -np.inf, 0
        for b in range(n_bins - 1):
            for c in range(n_stats):
                left[c] += cells[p, b, c]
            if not (left[0] >= min_rows and totals[p, 0] - left[0] >= min_rows):
                continue
            w_left, w_right = left[1], totals[p, 1] - left[1]
            for c in range(2, n_stats):
                w_left = w_left + left[c]
                w_right = w_right + (totals[p, c] - left[c])
            gaps = 0.0
            for c in range(1, n_stats):
                gap = left[c] / w_left - (totals[p, c] - left[c]) / w_right
                gaps = gaps + gap * gap
            g = (w_left * w_right / weight) * gaps
            if g > 0.0 and g < np.inf and g > best:
                best, at = g, b
        gain[p], best_bin[p] = best, at


def gini_best_bins(cells, totals, min_rows):
    """:func:`gbt_best_bins` for the Gini criterion (cells (m, B, 1 + C): rows, then the
    weight of each class): the arithmetic of :class:`mpigd.trees.split.Gini`'s numpy
    gains in the same order, so the same bits."""
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    totals = np.ascontiguousarray(totals, dtype=np.float64)
    if cells.ndim != 3 or cells.shape[2] < 2 or totals.shape != (cells.shape[0], cells.shape[2]):
        raise ValueError(f"cells must be (m, B, 1 + C) and totals (m, 1 + C), got "
                         f"{cells.shape} and {totals.shape}")  # fmt: skip
    gain = np.empty(cells.shape[0])
    best_bin = np.empty(cells.shape[0], np.int64)
    _gini_best_bins(cells, totals, float(min_rows), gain, best_bin)
    return gain, best_bin


def _check_array(name, a, dtypes, ndim):
    """Raise ValueError unless ``a`` is a C-contiguous ndarray of ``ndim`` dimensions and
    one of ``dtypes``."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in dtypes:
        names = " or ".join(np.dtype(t).name for t in dtypes)
        raise ValueError(f"{name} must be {names}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _as_index(name, a, shape):
    """``a`` (any integer dtype) as a C-contiguous int64 array of ``shape``: for the small
    per-node and per-tree arrays, where a copy costs nothing."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_starts(starts, n_order):
    """``starts`` as int64, checked: non-decreasing within ``0 .. n_order``."""
    starts = np.asarray(starts)
    if starts.ndim != 1 or starts.shape[0] < 1:
        raise ValueError(f"starts must be 1-D with K + 1 >= 1 entries, got shape {starts.shape}")
    starts = _as_index("starts", starts, starts.shape)
    if starts[0] < 0 or starts[-1] > n_order or np.any(np.diff(starts) < 0):
        raise ValueError(f"starts must be non-decreasing within 0 .. len(order) = {n_order}")
    return starts


def _check_codes_order(codes, order):
    """Raise ValueError unless ``codes`` is uint8 (n, d) and ``order`` int64 (m,)."""
    _check_array("codes", codes, (np.uint8,), 2)
    _check_array("order", order, (np.int64,), 1)


def histograms(codes, stats, order, starts, out, ends=None, first_node=0):
    """Per-node histograms of the row stats: ``out[f, first_node + k, b] = sum of
    stats[r]`` over node ``k``'s rows ``r`` with ``codes[r, f] == b``. One pass over each
    node's rows.

    Parameters
    ----------
    codes : ndarray, shape (n, d), uint8, C-contiguous
        Binned rows.
    stats : ndarray, shape (n, S), float64, C-contiguous
        Per-row statistics (column 0 the row count, see the tree modules).
    order : ndarray, shape (m,), int64
        Row ids grouped by node (repeats allowed).
    starts : ndarray of int, shape (K + 1,)
        Node ``k``'s rows are ``order[starts[k]:starts[k + 1]]``; non-decreasing.
    out : ndarray, shape (d, M, B, S), float64, C-contiguous
        Feature-major; nodes ``first_node .. first_node + K - 1`` (M >= that) are
        overwritten, the others left as they were (several trees' nodes fill one
        ``out``). ``B <= 256`` bins: every code must be ``< B``.
    ends : ndarray of int, shape (K,), optional
        With it, ``starts`` is (K,) too and node ``k``'s rows are ``order[starts[k]:
        ends[k]]``: nodes that are not neighbours in ``order`` need no copy of their rows.

    Each bin's sums are float64 in row order, as :func:`histograms_reference` adds them.

    Raises
    ------
    ValueError
        For a wrong dtype, shape or layout, ``starts`` out of order, or (found during
        the pass, ``out`` then partly written) a row id outside ``0 .. n-1`` or a code
        ``>= B``.
    """
    _check_codes_order(codes, order)
    _check_array("stats", stats, (np.float64,), 2)
    _check_array("out", out, (np.float64,), 4)
    n, d = codes.shape
    if stats.shape[0] != n or stats.shape[1] < 1:
        raise ValueError(f"stats must have {n} rows, as codes, and S >= 1 columns, "
                         f"got shape {stats.shape}")  # fmt: skip
    if ends is None:
        starts = _check_starts(starts, order.shape[0])
        starts, ends = starts[:-1], starts[1:]
    else:
        starts = _as_index("starts", starts, np.shape(starts))
        ends = _as_index("ends", ends, starts.shape)
        if (
            starts.ndim != 1
            or np.any(starts < 0)
            or np.any(ends < starts)
            or (np.any(ends > order.shape[0]))
        ):
            raise ValueError(f"starts and ends must be (K,) with 0 <= start <= end <= "
                             f"len(order) = {order.shape[0]}")  # fmt: skip
    n_nodes, n_stats = starts.shape[0], stats.shape[1]
    shape = out.shape
    if shape[0] != d or not 0 <= first_node <= shape[1] - n_nodes or shape[3] != n_stats:
        raise ValueError(f"out must have shape (d, M, B, S) = ({d}, >= {first_node} + "
                         f"{n_nodes}, B, {n_stats}), got {shape}")  # fmt: skip
    if not 1 <= shape[2] <= MAX_BINS:
        raise ValueError(f"out must have 1 .. {MAX_BINS} bins, got {shape[2]}")
    _histograms(codes, stats, order, starts, ends, out, int(first_node))


def pair_histograms(codes, stats, order, starts, feature_starts, features, slots, out):
    """Histograms of (node, feature) pairs, each node over its own features only (a
    forest's node tries a few): node ``k``'s ``j``-th feature ``f = features[
    feature_starts[k] + j]`` fills ``out[slots[feature_starts[k] + j], b] = sum of
    stats[r]`` over its rows ``r`` (``order[starts[k]:starts[k + 1]]``) with ``codes[r, f]
    == b``. ``codes``, ``stats``, ``order``, ``starts`` as :func:`histograms`;
    ``feature_starts`` (K + 1,) non-decreasing from 0, ``features`` and ``slots`` int
    (m,) with ``m = feature_starts[K]``, ``slots`` distinct rows of ``out``, float64
    (M >= m, B, S) C-contiguous: the rows they name are overwritten, the others left as
    they were (several trees' nodes fill one ``out``). Sums in row order, as
    :func:`pair_histograms_reference`. ValueError as :func:`histograms`."""
    _check_codes_order(codes, order)
    _check_array("stats", stats, (np.float64,), 2)
    _check_array("out", out, (np.float64,), 3)
    n, d = codes.shape
    if stats.shape[0] != n or stats.shape[1] != out.shape[2]:
        raise ValueError(f"stats must be ({n}, S) with out's S = {out.shape[2]}, got {stats.shape}")
    starts = _check_starts(starts, order.shape[0])
    features, slots = np.asarray(features), np.asarray(slots)
    n_pairs = features.shape[0] if features.ndim == 1 else -1
    feature_starts = _check_starts(feature_starts, max(n_pairs, 0))
    if (
        feature_starts.shape != starts.shape
        or feature_starts[0] != 0
        or (feature_starts[-1] != n_pairs)
    ):
        raise ValueError(f"feature_starts must have K + 1 = {starts.shape[0]} entries from 0 "
                         f"to the {n_pairs} features")  # fmt: skip
    features = _as_index("features", features, (n_pairs,))
    slots = _as_index("slots", slots, (n_pairs,))
    if n_pairs and (features.min() < 0 or features.max() >= d):
        raise ValueError(f"features must lie in 0 .. {d - 1}")
    if n_pairs and (slots.min() < 0 or slots.max() >= out.shape[0]
                    or np.unique(slots).size != n_pairs):  # fmt: skip
        raise ValueError(f"slots must be distinct rows of out, 0 .. {out.shape[0] - 1}")
    if not 1 <= out.shape[1] <= MAX_BINS:
        raise ValueError(f"out must have 1 .. {MAX_BINS} bins, got {out.shape[1]}")
    _pair_histograms(codes, stats, order, starts, feature_starts, features, slots, out)


def partition(codes, order, starts, features, bins, mids):
    """Split nodes in place: node ``k``'s rows, ``order[starts[k]:starts[k + 1]]``, are
    stably reordered so that those with ``codes[r, features[k]] <= bins[k]`` come first.

    Parameters
    ----------
    codes : ndarray, shape (n, d), uint8, C-contiguous
    order : ndarray, shape (m,), int64, C-contiguous
        Row ids grouped by node; reordered within each split node.
    starts : ndarray of int, shape (K + 1,)
        As in :func:`histograms`.
    features : ndarray of int, shape (K,)
        Split feature of each node, ``0 .. d-1``; negative: the node is not split.
    bins : ndarray of int, shape (K,)
        Split bin: ``code <= bins[k]`` goes left.
    mids : ndarray, shape (K,), int64
        Set to the position in ``order`` of node ``k``'s first right row (``starts[k +
        1]`` for a node not split, or one whose rows all go left).

    O(rows of the split nodes), one scratch buffer of the largest split node's size.

    Raises
    ------
    ValueError
        For a wrong dtype or shape, a feature ``>= d``, ``starts`` out of order, or a
        row id outside ``0 .. n-1`` (found during the pass; ``order`` then partly
        rewritten).
    """
    _check_codes_order(codes, order)
    _check_array("mids", mids, (np.int64,), 1)
    starts = _check_starts(starts, order.shape[0])
    n_nodes = starts.shape[0] - 1
    features = _as_index("features", features, (n_nodes,))
    bins = _as_index("bins", bins, (n_nodes,))
    if mids.shape != (n_nodes,):
        raise ValueError(f"mids must have shape ({n_nodes},), got {mids.shape}")
    if np.any(features >= codes.shape[1]):
        raise ValueError(f"features must be < d = {codes.shape[1]} (negative: no split)")
    _partition(codes, order, starts, features, bins, mids)


def _check_trees(feature, left, right, tree_start, n_features):
    """Raise ValueError unless every tree is non-empty and each split node has a feature
    ``< n_features`` and children after it, inside its tree (so every walk ends)."""
    n_nodes = feature.shape[0]
    sizes = np.diff(tree_start)
    if tree_start[0] != 0 or tree_start[-1] != n_nodes or np.any(sizes < 1):
        raise ValueError(f"tree_start must increase strictly from 0 to n_nodes = {n_nodes}")
    tree = np.repeat(np.arange(sizes.shape[0]), sizes)
    relative = np.arange(n_nodes) - tree_start[tree]
    split = feature >= 0
    if np.any(feature[split] >= n_features):
        raise ValueError(f"feature must be < d = {n_features} (negative at a leaf)")
    for name, child in (("left", left), ("right", right)):
        child = child[split]
        if np.any(child <= relative[split]) or np.any(child >= sizes[tree[split]]):
            raise ValueError(f"{name} must hold ids (relative to the tree's first node) "
                             "after the node's own, inside its tree")  # fmt: skip


def predict(X, feature, threshold, left, right, value, tree_start, tree_column, out):
    """Add the trees' leaf values to ``out``: ``out[i, tree_column[t] : tree_column[t] + V]
    += value[leaf of row i in tree t]``, trees in order.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
        Raw rows; row ``i`` goes left at a node iff ``X[i, feature] <= threshold`` (NaN
        goes right), compared in float64.
    feature : ndarray of int, shape (n_nodes,)
        The nodes of all trees concatenated; the split feature, negative at a leaf.
    threshold : ndarray, shape (n_nodes,), float64
    left, right : ndarray of int, shape (n_nodes,)
        Children of a split node, relative to its tree's first node: after the node
        itself (so every walk ends), inside the tree. Ignored at leaves.
    value : ndarray, shape (n_nodes, V), float64
        Leaf values (ignored at split nodes).
    tree_start : ndarray of int, shape (T + 1,)
        Tree ``t``'s nodes are ``tree_start[t]:tree_start[t + 1]``, root first; increasing
        strictly from 0 to ``n_nodes``.
    tree_column : ndarray of int, shape (T,)
        First column of ``out`` tree ``t`` adds to.
    out : ndarray, shape (n, width), float64, C-contiguous
        Added to, not zeroed.

    Raises
    ------
    ValueError
        For a wrong dtype or shape, or trees that break the rules above.
    """
    _check_array("X", X, (np.float32, np.float64), 2)
    _check_array("value", value, (np.float64,), 2)
    _check_array("out", out, (np.float64,), 2)
    n_nodes, width = value.shape
    feature = _as_index("feature", feature, (n_nodes,))
    left = _as_index("left", left, (n_nodes,))
    right = _as_index("right", right, (n_nodes,))
    threshold = np.asarray(threshold)
    _check_array("threshold", threshold, (np.float64,), 1)
    if threshold.shape != (n_nodes,):
        raise ValueError(f"threshold must have shape ({n_nodes},), got {threshold.shape}")
    tree_start = np.asarray(tree_start)
    if tree_start.ndim != 1 or tree_start.shape[0] < 1:
        raise ValueError(f"tree_start must be 1-D with T + 1 entries, got {tree_start.shape}")
    tree_start = _as_index("tree_start", tree_start, tree_start.shape)
    _check_trees(feature, left, right, tree_start, X.shape[1])
    tree_column = _as_index("tree_column", tree_column, (tree_start.shape[0] - 1,))
    if out.shape[0] != X.shape[0]:
        raise ValueError(f"out must have {X.shape[0]} rows, as X, got shape {out.shape}")
    if np.any(tree_column < 0) or np.any(tree_column + width > out.shape[1]):
        raise ValueError(f"tree_column + V = {width} must fit in out's {out.shape[1]} columns")
    _predict(X, feature, threshold, left, right, value, tree_start, tree_column, out)


#: Edges a feature's row of :func:`bin_codes`' search table holds (2**8 - 1: a branch-free
#: binary search of 8 halvings covers it; unused entries are +inf).
_TABLE_EDGES = 255


@njit(**_COMPILE)
def _bin_codes(X, table, n_edges, out):
    """:func:`bin_codes` on checked arguments: per value a branch-free binary search of
    its feature's row of ``table`` (d, 255) for the count of edges below it (NaN: all)."""
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            x = np.float64(X[i, j])
            position = 0
            step = 128
            while step:
                position += step * (table[j, position + step - 1] < x)
                step >>= 1
            out[i, j] = n_edges[j] if x != x else position


def bin_codes(X, edges, offsets, out):
    """``out[i, j]`` := the number of feature j's edges (``edges[offsets[j]:offsets[j +
    1]]``, increasing, at most 255) below ``X[i, j]``: ``np.searchsorted(edges_j, x,
    side="left")`` compared as float64, NaN last. X float32 or float64 (n, d)
    C-contiguous; out uint8 (n, d). One pass over X, row by row, 8 branch-free halvings
    a value (numpy's searchsorted, column by column on a 1,000,000 x 50 float64 X: 6.9 s
    on the 2-core guest under load; a branchy binary search here: 3.8 s)."""
    _check_array("X", X, (np.float32, np.float64), 2)
    _check_array("out", out, (np.uint8,), 2)
    offsets = np.asarray(offsets, np.int64)
    counts = np.diff(offsets)
    if out.shape != X.shape or offsets.shape != (X.shape[1] + 1,):
        raise ValueError(f"out must be X's shape {X.shape} and offsets ({X.shape[1] + 1},)")
    if np.any(counts < 0) or np.any(counts > _TABLE_EDGES) or offsets[-1] > len(edges):
        raise ValueError(f"offsets must increase by at most {_TABLE_EDGES} a feature")
    table = np.full((X.shape[1], _TABLE_EDGES), np.inf)
    for j, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        table[j, : hi - lo] = edges[lo:hi]
    _bin_codes(X, table, counts, out)


@njit(**_COMPILE)
def _bin_value_ranges(X, codes, low, high):
    """:func:`bin_value_ranges` on checked arguments."""
    n, d = X.shape
    n_bins = low.shape[1]
    for i in range(n):
        for j in range(d):
            b = _check_code(codes[i, j], n_bins)
            x = np.float64(X[i, j])
            low[j, b] = min(low[j, b], x)
            high[j, b] = max(high[j, b], x)


def bin_value_ranges(X, codes, n_bins):
    """``(low, high)``, each float64 (d, n_bins): the smallest and largest value of
    ``X`` (n, d) float32 or float64 C-contiguous among the rows whose code (``codes``,
    uint8 (n, d)) is each bin (+inf and -inf for an empty bin). One pass over both."""
    _check_array("X", X, (np.float32, np.float64), 2)
    _check_array("codes", codes, (np.uint8,), 2)
    if codes.shape != X.shape:
        raise ValueError(f"codes must be X's shape {X.shape}, got {codes.shape}")
    low = np.full((X.shape[1], n_bins), np.inf)
    high = np.full((X.shape[1], n_bins), -np.inf)
    _bin_value_ranges(X, codes, low, high)
    return low, high


def bin_value_ranges_reference(X, codes, n_bins):
    """:func:`bin_value_ranges` in numpy (the specification)."""
    low = np.full((X.shape[1], n_bins), np.inf)
    high = np.full((X.shape[1], n_bins), -np.inf)
    for j in range(X.shape[1]):
        np.minimum.at(low[j], codes[:, j], X[:, j].astype(np.float64))
        np.maximum.at(high[j], codes[:, j], X[:, j].astype(np.float64))
    return low, high


def histograms_reference(codes, stats, order, starts, out):
    """:func:`histograms` in numpy (the specification): ``np.add.at`` adds each node's
    rows in order."""
    out[:] = 0.0
    for k in range(len(starts) - 1):
        rows = order[starts[k] : starts[k + 1]]
        for f in range(codes.shape[1]):
            np.add.at(out[f, k], codes[rows, f], stats[rows])


def pair_histograms_reference(codes, stats, order, starts, feature_starts, features, slots,
                              out):  # fmt: skip
    """:func:`pair_histograms` in numpy (the specification)."""
    out[:] = 0.0
    for k in range(len(starts) - 1):
        rows = order[starts[k] : starts[k + 1]]
        for p in range(feature_starts[k], feature_starts[k + 1]):
            np.add.at(out[slots[p]], codes[rows, features[p]], stats[rows])


def partition_reference(codes, order, starts, features, bins, mids):
    """:func:`partition` in numpy (the specification)."""
    for k in range(len(starts) - 1):
        start, stop = starts[k], starts[k + 1]
        if features[k] < 0:
            mids[k] = stop
            continue
        rows = order[start:stop].copy()
        goes_left = codes[rows, features[k]] <= bins[k]
        order[start:stop] = np.concatenate((rows[goes_left], rows[~goes_left]))
        mids[k] = start + np.count_nonzero(goes_left)


def predict_reference(X, feature, threshold, left, right, value, tree_start, tree_column, out):
    """:func:`predict` in numpy (the specification): each tree walks all rows at once."""
    rows = np.arange(X.shape[0])
    for t in range(len(tree_start) - 1):
        root = tree_start[t]
        node = np.full(X.shape[0], root)
        while np.any(feature[node] >= 0):
            split = feature[node] >= 0
            at = node[split]
            goes_left = X[rows[split], feature[at]] <= threshold[at]
            node[split] = root + np.where(goes_left, left[at], right[at])
        column = tree_column[t]
        out[:, column : column + value.shape[1]] += value[node]
