"""Bin edges per feature, fitted on a sample of the training rows over MPI, and the codes.

Trees are grown on ``codes``: uint8 (n, d), ``codes[:, j] = searchsorted(edges[j], X[:, j],
side="left")``, so bin b of feature j holds the x with ``edges[j][b-1] < x <= edges[j][b]``
and the split "code <= b" is exactly the raw split "x <= edges[j][b]" (raw X predicts as
its codes do). The edges come from a sample of rows chosen by a counter-based draw per
global row id (:mod:`mpigd.trees.sampling`), gathered to rank 0 and broadcast, so every
rank has the same :class:`Bins`, the same for any number of ranks and any split of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels import trees as tree_kernels
from mpigd.comm import agree, min_across
from mpigd.errors import DataError
from mpigd.trees.sampling import BIN_STREAM, uniform

#: The most bins a feature may have: its codes are uint8.
MAX_BINS = 256
#: About the most bytes of sampled values rank 0 gathers at once (a block of columns).
BLOCK_BYTES = 64 << 20


def check_max_bins(max_bins: int) -> int:
    """``max_bins`` as an int in 2..256; ValueError otherwise (codes are uint8, and one
    bin cannot split anything)."""
    if int(max_bins) != max_bins or not 2 <= max_bins <= MAX_BINS:
        raise ValueError(
            f"max_bins must be an integer from 2 to {MAX_BINS} (codes are uint8), got {max_bins!r}"
        )
    return int(max_bins)


def bin_edges(values: np.ndarray, max_bins: int) -> np.ndarray:
    """The increasing float64 edges of one feature from its sampled ``values``.

    Parameters
    ----------
    values : float 1-D array, finite, any order (only the multiset of values matters).
    max_bins : the most bins, 2..256.

    Returns
    -------
    float64 strictly increasing edges, at most ``max_bins - 1`` of them (none for a
    constant or empty sample: one bin).

    With u distinct values: if u <= max_bins, the midpoints of consecutive distinct values
    (every value its own bin). Otherwise the max_bins - 1 quantiles of the sorted sample x
    (n values) at the percentiles ``linspace(0, 100, max_bins + 1)[1:-1]``, by numpy's
    "averaged_inverted_cdf": with g = n p / 100, the order statistic x[ceil(g) - 1], or
    the midpoint of x[g - 1] and x[g] where g is an integer. Repeated cuts (heavy ties)
    are removed, so a feature may get fewer bins. (g is computed from the float
    percentile, so a cut that exact arithmetic would put at a midpoint may land on an
    order statistic: kept, to give scikit-learn's edges bit for bit.)

    This is scikit-learn's HistGradientBoosting rule (``_BinMapper`` with ``n_bins =
    max_bins + 1``, there the last bin holds missing values), except:

    * a midpoint m of a < b is always in [a, b): where (a + b) / 2 rounds to b (a and b
      neighbouring floats) the edge is a, so a and b keep separate bins (scikit-learn's
      midpoint merges them);
    * midpoints of distinct values are a / 2 + b / 2, which never overflows, quantiles
      are clipped to the sample's range (numpy's interpolation b - (b - a) / 2 overflows
      for a span above the largest float), and there is no clip at 1e300: values are
      finite (the dataset contract), and so are the edges;
    * non-finite values are refused (ValueError), not binned apart as missing;
    * the sample (:func:`fit_bins`) takes each row with probability sample_rows / n_rows
      from a draw on its global row id, where scikit-learn draws exactly its subsample
      with replacement: ours is the same for any number of ranks.
    """
    check_max_bins(max_bins)
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if not np.isfinite(x).all():
        raise ValueError("bin edges need finite values; found NaN or infinity")
    first = np.ones(len(x), dtype=bool)  # x is sorted: the first of each run of equal values
    first[1:] = x[1:] != x[:-1]
    distinct = x[first]
    if len(distinct) <= max_bins:
        return _midpoints(distinct[:-1], distinct[1:])
    percents = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    with np.errstate(over="ignore", invalid="ignore"):  # a span above the largest float
        quantiles = np.percentile(x, percents, method="averaged_inverted_cdf")
    return np.unique(np.clip(quantiles, x[0], x[-1]))


def _midpoints(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise midpoints of a <= b in [a, b) (a itself where a == b or the rounded
    midpoint would be b)."""
    m = 0.5 * a + 0.5 * b
    return np.where((a <= m) & (m < b), m, a)


@dataclass(frozen=True, eq=False)
class Bins:
    """The bin edges of every feature, replicated on every rank.

    ``edges[j]``: float64 strictly increasing, ``n_bins[j] - 1 <= 255`` of them;
    ``n_bins``: int64 (d,), the bins of each feature (1 for a constant one);
    :attr:`max_bins_used`: B, the bins axis of the histograms.
    """

    edges: list[np.ndarray]
    n_bins: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        edges = [np.ascontiguousarray(e, dtype=np.float64) for e in self.edges]
        for j, e in enumerate(edges):
            if e.ndim != 1 or len(e) >= MAX_BINS or (np.diff(e) <= 0).any():
                raise ValueError(
                    f"edges of feature {j} must be 1-D, strictly increasing and fewer "
                    f"than {MAX_BINS}"
                )
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "n_bins", np.array([len(e) + 1 for e in edges], np.int64))

    @property
    def n_features(self) -> int:
        """d, the number of features."""
        return len(self.edges)

    @property
    def max_bins_used(self) -> int:
        """B = max n_bins over the features (1 without features)."""
        return int(self.n_bins.max(initial=1))

    def codes(self, X: np.ndarray) -> np.ndarray:
        """The bin of every value: uint8 (n, d) C-contiguous, from X (n, d) float32 or
        float64, compared as float64 (``searchsorted(edges[j], x, side="left")``).

        A NaN gets the last bin and so goes right at every split, as raw X does
        (``NaN <= t`` is false); the dataset contract has none.
        """
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be (n, {self.n_features}), got shape {X.shape}")
        out = np.empty(X.shape, dtype=np.uint8)
        arrays = self.to_arrays()
        tree_kernels.bin_codes(np.ascontiguousarray(X), arrays["edges"], arrays["edge_offsets"],
                               out)  # fmt: skip
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for a model file: ``edges`` float64 (all features' edges in order)
        and ``edge_offsets`` int64 (d + 1): feature j's are edges[offsets[j]:offsets[j+1]]."""
        offsets = np.zeros(self.n_features + 1, dtype=np.int64)
        np.cumsum([len(e) for e in self.edges], out=offsets[1:])
        flat = np.concatenate(self.edges) if self.edges else np.empty(0)
        return {"edges": flat.astype(np.float64, copy=False), "edge_offsets": offsets}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Bins:
        """The inverse of :meth:`to_arrays`."""
        flat = np.asarray(arrays["edges"], dtype=np.float64)
        offsets = np.asarray(arrays["edge_offsets"], dtype=np.int64)
        return cls([flat[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)])


def fit_bins(
    comm,
    X_local: np.ndarray,
    first_row: int,
    n_rows: int,
    max_bins: int,
    seed: int,
    sample_rows: int = 200_000,
) -> Bins:
    """Collective over ``comm`` (mpi4py): the bins of every feature, on every rank.

    Parameters
    ----------
    comm : mpi4py communicator; every rank calls this.
    X_local : float32 or float64 (n_local, d), this rank's rows: global row ids
        ``first_row .. first_row + n_local - 1`` (ranks may hold any disjoint ranges that
        together cover 0..n_rows-1, in any order; n_local may be 0). Finite values.
    n_rows : the global number of rows (like max_bins, seed and sample_rows: the same on
        every rank).
    max_bins : the most bins of a feature, 2..256 (ValueError otherwise).
    seed : the run's seed; with :data:`~mpigd.trees.sampling.BIN_STREAM` it picks the sample.
    sample_rows : about how many rows choose the edges.

    Each rank keeps its rows with ``uniform(seed, BIN_STREAM, row) < sample_rows / n_rows``
    (every row when n_rows <= sample_rows): a row is sampled or not by its global id alone,
    so the sample, and with it the edges, are the same for any number of ranks and any
    split of the rows. Rank 0 gathers the sampled values in blocks of columns
    (Gatherv, about :data:`BLOCK_BYTES` a block), computes :func:`bin_edges` of each
    feature and broadcasts them as two flat arrays (buffer Bcast). A non-finite sampled
    value raises the same :class:`~mpigd.errors.DataError` on every rank.
    """
    check_max_bins(max_bins)
    ids = np.arange(first_row, first_row + len(X_local), dtype=np.int64)
    if n_rows <= sample_rows:
        rows = np.arange(len(X_local))
    else:
        rows = np.flatnonzero(uniform(seed, BIN_STREAM, ids) < sample_rows / n_rows)
    shapes = comm.allgather((len(rows), X_local.shape[1]))
    counts = np.array([count for count, _ in shapes], dtype=np.int64)
    d = shapes[0][1]
    if any(width != d for _, width in shapes):
        raise ValueError(f"ranks hold different numbers of features: {[w for _, w in shapes]}")

    root = comm.Get_rank() == 0
    edges, error = [], None
    width = max(1, BLOCK_BYTES // (8 * max(int(counts.sum()), 1)))
    for lo in range(0, d, width):
        hi = min(lo + width, d)
        sent = np.ascontiguousarray(X_local[rows, lo:hi], dtype=np.float64)
        gathered = np.empty((int(counts.sum()), hi - lo)) if root else None
        sizes = counts * (hi - lo)
        comm.Gatherv(sent, (gathered, (sizes, np.cumsum(sizes) - sizes)) if root else None, 0)
        if root and error is None:
            error = _append_edges(edges, gathered, lo, max_bins)
    agree(comm, error)
    return _bins_from_root(comm, Bins(edges) if root else None, d)


def _append_edges(edges: list, block: np.ndarray, lo: int, max_bins: int) -> DataError | None:
    """On rank 0: append the edges of the gathered columns ``block`` (features lo, lo + 1,
    ...) to ``edges``; the error to agree on if a column cannot be binned."""
    for j in range(block.shape[1]):
        try:
            edges.append(bin_edges(block[:, j], max_bins))
        except ValueError as exc:
            return DataError(f"cannot bin feature {lo + j}: {exc}")
    return None


def _bins_from_root(comm, bins: Bins | None, d: int) -> Bins:
    """Collective: rank 0's ``bins`` (d features) on every rank, as two buffer Bcasts."""
    arrays = bins.to_arrays() if bins is not None else {}
    offsets = arrays.get("edge_offsets", np.empty(d + 1, dtype=np.int64))
    comm.Bcast(offsets, root=0)
    flat = arrays.get("edges", np.empty(int(offsets[-1]), dtype=np.float64))
    comm.Bcast(flat, root=0)
    return Bins.from_arrays({"edges": flat, "edge_offsets": offsets})


def value_ranges(comm, X_local: np.ndarray, codes: np.ndarray, bins: Bins):
    """Collective over ``comm``: ``(low, high)``, each float64 (d, B), the smallest and
    largest value of every feature among all ranks' rows in each bin (+inf, -inf for a
    bin no row falls in). Minima and maxima are exact in any order, so they are the same
    for every rank count. A forest places its thresholds from them (:func:`mid_gap`)."""
    low, high = tree_kernels.bin_value_ranges(np.ascontiguousarray(X_local), codes,
                                              bins.max_bins_used)  # fmt: skip
    both = min_across(comm, np.concatenate([low.ravel(), -high.ravel()]))
    return both[: low.size].reshape(low.shape), -both[low.size :].reshape(high.shape)


def mid_gap(edges: np.ndarray, low: np.ndarray, high: np.ndarray, split_bin: int,
            upper_bin: int) -> float:  # fmt: skip
    """The threshold of a split "bin <= split_bin goes left" whose node has no rows in
    bins ``split_bin + 1 .. upper_bin``: the midpoint (:func:`_midpoints`) between the
    largest value of any row in bin ``split_bin`` (``high``, one feature's (B,)) and the
    smallest in bin ``upper_bin + 1`` (``low``), as scikit-learn's forests place it between
    the node's values. The node's left rows are <= it and its right rows above it, as
    their bins say, so its rows go the same way by value as by bin. Falls back to the
    bin's edge where either bin holds no row (not on the node's own rows)."""
    a, b = high[split_bin], low[upper_bin + 1]
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        return float(edges[split_bin])
    return float(_midpoints(np.array([a]), np.array([b]))[0])
