"""Per-row statistics rounded so that every sum of them is exact in float64.

A tree's splits compare gains computed from histogram sums; summed in another order
(other ranks, another rank count, a Reduce-Scatter instead of an Allreduce) float64
sums round differently, and a near tie between two splits could go either way. So
before a tree grows, each column ``s`` of the per-row statistics is rounded to a
multiple of ``2**-q_s``, with ``q_s`` chosen from the sum of ``|stats[:, s]|`` over all
ranks' rows so that that sum stays below ``2**53 * 2**-q_s``: every partial sum of the
column is then a multiple of ``2**-q_s`` small enough for float64's 53-bit significand,
hence exact, in any order. Histograms, gains, splits and leaf values are bit-identical
for every rank count and both histogram strategies.

What it costs: a gradient of magnitude at most 1 on a million rows (sum below 2**20)
is rounded to a multiple of 2**-32, an error of at most 1.2e-10 per row; counts and
integer bagging weights are not changed at all.
"""

from __future__ import annotations

import numpy as np

#: Bits of a float64 significand: a sum of multiples of 2**-q below 2**(53 - q) is exact.
SIGNIFICAND_BITS = 53


def exponents(column_abs_sums: np.ndarray) -> np.ndarray:
    """``q_s`` per column from the sums over all ranks' rows of ``|stats[:, s]|``: the
    finest power-of-two grid on which every partial sum of the column is exact (with one
    bit to spare for ``total - left`` of a split)."""
    magnitude = np.ceil(np.log2(np.asarray(column_abs_sums, np.float64) + 1.0))
    return (SIGNIFICAND_BITS - 1 - magnitude).astype(np.int64)


def round_to_grid(stats: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``stats`` (n, S) with column s rounded (in place) to the nearest multiple of
    ``2**-q[s]``; returned."""
    for s in range(stats.shape[1]):
        column = stats[:, s]
        np.ldexp(np.rint(np.ldexp(column, int(q[s]))), -int(q[s]), out=column)
    return stats
