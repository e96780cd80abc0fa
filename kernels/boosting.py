"""Numba kernels of a boosting round's per-row work, outside the trees' growth.

A round of ``--model gbt`` needs, at the current raw output ``raw`` (n, W) of this
rank's training rows: the loss over all rows (the epoch's ``train_loss``), and per
output column ``k`` the statistics its tree grows from, ``stats[k]`` (n, 3) =
``[taking part, w g_k, w h_k]`` (:mod:`mpigd.trees.losses`), rounded onto the exact grid
(:mod:`mpigd.trees.exact`); after the round, each tree's leaf values added to its rows.
In numpy these were a dozen passes over (n, W) arrays and their temporaries (the
derivatives, ``column_stack``, the absolute sums, the rounding, ``np.logaddexp`` for the
loss, a fancy-indexed copy for the root totals, a prediction pass over ``X``): 37% of a
round on 500,000 x 50 rows. Here they are three passes:

- :func:`gradient_stats`: one pass computing the loss, ``g``, ``h`` (one ``exp`` and one
  ``log`` per row for the logistic loss, :func:`kernels.fused._logistic`; ``W`` and one
  for softmax), writing the unrounded ``stats`` and summing ``|stats|`` per column (what
  the grid's exponents need from all ranks);
- :func:`round_to_grid` rounds ``stats`` in place and sums the root totals (exact sums);
- :func:`add_leaf_values`: after the round, each leaf's value added to the rows the
  grower's partition left in that leaf (the same additions, in the same order, that a
  prediction pass over ``X`` makes, without reading ``X``; a forest's trees use it too).

:func:`mpigd.trees.losses.derivatives` and :meth:`mpigd.trees.ensemble.TreeEnsemble.row_losses`
stay the numpy specification the tests hold these to.
"""

import numpy as np
from numba import njit

from kernels.fused import _COMPILE, _logistic

#: Task codes of :func:`gradient_stats` (the dataset's task decides the loss).
TASK_CODES = {"regression": 0, "binary": 1, "multiclass": 2}


@njit(**_COMPILE)
def _gradient_stats(task, raw, y, weight, taking_part, stats, abs_sums):
    """:func:`gradient_stats` on checked arguments; returns ``(loss_sum, weight_sum)``."""
    n, width = raw.shape
    loss_sum = 0.0
    weight_sum = 0.0
    for i in range(n):
        w = weight[i]
        part = taking_part[i]
        wp = w * part
        if task == 0:
            residual = raw[i, 0] - y[i]
            loss = 0.5 * residual * residual
            stats[0, i, 0] = part
            stats[0, i, 1] = wp * residual
            stats[0, i, 2] = wp
        elif task == 1:
            loss, slope = _logistic(raw[i, 0], y[i])
            p = slope + y[i]
            stats[0, i, 0] = part
            stats[0, i, 1] = wp * slope
            stats[0, i, 2] = wp * (p * (1.0 - p))
        else:
            top = raw[i, 0]
            for k in range(1, width):
                top = max(top, raw[i, k])
            total = 0.0
            for k in range(width):
                e = np.exp(raw[i, k] - top)
                stats[k, i, 1] = e  # the unnormalised share, until the sum is known
                total += e
            label = np.int64(y[i])
            loss = top + np.log(total) - raw[i, label]
            inv_total = 1.0 / total
            for k in range(width):
                p = stats[k, i, 1] * inv_total
                stats[k, i, 0] = part
                stats[k, i, 1] = wp * (p - (1.0 if k == label else 0.0))
                stats[k, i, 2] = wp * (p * (1.0 - p))
        loss_sum += w * loss
        weight_sum += w
        for k in range(width):
            for s in range(3):
                abs_sums[k, s] += abs(stats[k, i, s])
    return loss_sum, weight_sum


def gradient_stats(task, raw, y, weight, taking_part, out=None):
    """One pass over this rank's rows at raw output ``raw`` (n, W) float64.

    ``y``: targets (regression, float) or labels (0 .. W-1 for multiclass, 0/1 binary);
    ``weight`` (n,) float64, the rows' weights in the loss (``--class-weight``; ones);
    ``taking_part`` (n,) float64 0/1, the rows this round's trees grow from
    (``--subsample``). Returns ``(stats, abs_sums, loss_sum, weight_sum)``: ``stats``
    (W, n, 3) float64 (``stats[k]`` C-contiguous ``[taking part, w g_k, w h_k]`` per
    row, zero for rows not taking part), ``abs_sums`` (W, 3) the sums of ``|stats|``
    over the rows, ``loss_sum`` the weighted loss summed over all rows and
    ``weight_sum`` their weights. ``out``: a (W, n, 3) float64 C-contiguous array to
    write ``stats`` into (a round's buffer, reused: hundreds of MiB of fresh pages
    would cost a page fault each).
    """
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    n, width = raw.shape
    for name, a in (("y", y), ("weight", weight), ("taking_part", taking_part)):
        if np.shape(a) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.shape(a)}")
    code = TASK_CODES[task]
    if code < 2 and width != 1:
        raise ValueError(f"a {task} ensemble has one output column, got {width}")
    labels = np.asarray(y, np.float64 if code == 0 else np.int64)
    if code == 2 and n and (labels.min() < 0 or labels.max() >= width):
        raise ValueError(f"labels must lie in 0 .. {width - 1}")
    if out is None:
        out = np.empty((width, n, 3))
    elif out.shape != (width, n, 3) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 ({width}, {n}, 3) array")
    stats = out
    abs_sums = np.zeros((width, 3))
    loss_sum, weight_sum = _gradient_stats(code, raw, labels, np.asarray(weight, np.float64),
                                           np.asarray(taking_part, np.float64), stats,
                                           abs_sums)  # fmt: skip
    return stats, abs_sums, loss_sum, weight_sum


@njit(**{**_COMPILE, "fastmath": {"reassoc"}})
def _round_to_grid(stats, scale, inverse, totals):
    """:func:`round_to_grid` on checked arguments. The totals' additions may be
    reordered (``reassoc``, so that they vectorise: 2x faster on 10 x 1,000,000 x 3): on
    the grid every partial sum is exact, so any order gives the same bits."""
    width, n, _ = stats.shape
    s0, s1, s2 = scale[0], scale[1], scale[2]
    i0, i1, i2 = inverse[0], inverse[1], inverse[2]
    for k in range(width):
        t0 = t1 = t2 = 0.0
        for i in range(n):
            a = np.rint(stats[k, i, 0] * s0) * i0
            b = np.rint(stats[k, i, 1] * s1) * i1
            c = np.rint(stats[k, i, 2] * s2) * i2
            stats[k, i, 0], stats[k, i, 1], stats[k, i, 2] = a, b, c
            t0 += a
            t1 += b
            t2 += c
        totals[k, 0], totals[k, 1], totals[k, 2] = t0, t1, t2


def round_to_grid(stats, q):
    """Round ``stats`` (W, n, 3) float64 in place, column ``s`` to the nearest multiple
    of ``2**-q[s]`` (ties to even: :func:`mpigd.trees.exact.round_to_grid`'s values,
    since scaling by a power of two is exact), and return the totals (W, 3) over the
    rows, which on the grid are exact whatever the order of the additions."""
    q = np.asarray(q, np.int64)
    if stats.ndim != 3 or stats.shape[2] != 3 or q.shape != (3,) or not stats.flags.c_contiguous:
        raise ValueError(f"stats must be C-contiguous (W, n, 3) and q (3,), got {stats.shape} "
                         f"and {q.shape}")  # fmt: skip
    totals = np.zeros((stats.shape[0], 3))
    _round_to_grid(stats, np.ldexp(1.0, q), np.ldexp(1.0, -q), totals)
    return totals


@njit(**_COMPILE)
def _add_leaf_values(raw, column, order, segments, leaf, value):
    """:func:`add_leaf_values` on checked arguments."""
    n, width = raw.shape[0], value.shape[1]
    for node in range(segments.shape[0]):
        if not leaf[node]:
            continue
        for q in range(segments[node, 0], segments[node, 1]):
            r = order[q]
            if r < 0 or r >= n:
                raise ValueError("order holds a row id outside 0 .. n-1")
            for v in range(width):
                raw[r, column + v] += value[node, v]


def add_leaf_values(raw, column, order, segments, leaf, value):
    """``raw[r, column : column + V] += value[node]`` for each leaf ``node`` and each row
    ``r`` in ``order[segments[node, 0]:segments[node, 1]]`` (the grower's final row order
    and node segments), ``value`` (nodes, V); ``raw`` (n, W) float64 C-contiguous,
    updated in place: what a prediction pass adds for those rows, in the same order."""
    if raw.ndim != 2 or not raw.flags.c_contiguous or raw.dtype != np.float64:
        raise ValueError("raw must be a C-contiguous float64 (n, W) array")
    value = np.asarray(value, np.float64)
    value = value[:, None] if value.ndim == 1 else value
    if not 0 <= column <= raw.shape[1] - value.shape[1]:
        raise ValueError(f"column {column} + {value.shape[1]} values are outside the "
                         f"{raw.shape[1]} output columns")  # fmt: skip
    segments = np.asarray(segments, np.int64)
    if (
        segments.ndim != 2
        or segments.shape[1] != 2
        or (segments.size and (segments.min() < 0 or segments.max() > len(order)))
    ):
        raise ValueError(f"segments must be (nodes, 2) positions within 0 .. {len(order)}")
    if np.shape(leaf) != (len(segments),) or len(value) != len(segments):
        raise ValueError("leaf and value must have one entry per node")
    _add_leaf_values(raw, int(column), np.asarray(order, np.int64), segments,
                     np.asarray(leaf, np.bool_), np.ascontiguousarray(value))  # fmt: skip
