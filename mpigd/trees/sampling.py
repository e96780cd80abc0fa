"""Counter-based random draws per global row: bagging weights, row subsamples, the bin sample.

A draw is a hash of ``(seed, stream, global row id)`` (the splitmix64 finaliser, in
vectorised numpy uint64 arithmetic), not the next output of a generator that walks the
rows. So a row's draw never depends on which rank holds the row, how many ranks there
are or in which order they draw: the bootstrap weights of a forest's trees, the row
subsample of a boosting round and the rows that choose the bin edges are the same for
any number of ranks and any split of the rows, and a P-rank ensemble is the serial one.

Streams keep the uses apart: :data:`BIN_STREAM`, :func:`bagging_stream` (tree t),
:func:`subsample_stream` (boosting round r) and :func:`feature_stream` (tree t) are
distinct by construction (``stream % 4`` names the use), so no two uses ever share
draws.
"""

from __future__ import annotations

import math

import numpy as np

_MASK = (1 << 64) - 1
_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment: 2**64 / golden ratio
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_MANTISSA = 2.0**-53

_USES = 4  # stream % _USES: 0 the bin sample, 1 bagging, 2 the gbt row subsample,
# 3 a forest's features per node
#: The stream of the rows that choose the bin edges (:func:`mpigd.trees.binning.fit_bins`).
BIN_STREAM = 0


def bagging_stream(tree: int) -> int:
    """The stream of the bootstrap weights of forest tree ``tree`` (0, 1, ...)."""
    return _USES * _index(tree, "tree") + 1


def subsample_stream(round: int) -> int:
    """The stream of the row subsample of boosting round ``round`` (0, 1, ...)."""
    return _USES * _index(round, "round") + 2


def feature_stream(tree: int) -> int:
    """The stream of the features each node of forest tree ``tree`` tries."""
    return _USES * _index(tree, "tree") + 3


def node_features(seed: int, tree: int, nodes: np.ndarray, d: int, k: int) -> np.ndarray:
    """bool (len(nodes), d): the ``k`` of ``d`` features each node (ids ``nodes`` of forest
    tree ``tree``) tries, the ``k`` smallest of one draw per (node, feature) of
    :func:`feature_stream` (a uniformly random subset, drawn for a whole level at once;
    the same on every rank)."""
    nodes = np.asarray(nodes, dtype=np.int64)
    mask = np.zeros((len(nodes), d), bool)
    if len(nodes) == 0 or k <= 0:
        return mask
    u = uniform(seed, feature_stream(tree), nodes[:, None] * d + np.arange(d))
    chosen = np.argpartition(u, k - 1, axis=1)[:, :k] if k < d else np.arange(d)[None, :]
    np.put_along_axis(mask, np.broadcast_to(chosen, (len(nodes), chosen.shape[1])), True, axis=1)
    return mask


def _index(value: int, name: str) -> int:
    """``value`` as a non-negative Python int; ValueError otherwise."""
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _finalise(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of uint64 ``z`` (any shape): a bijection that mixes every
    input bit into every output bit. Wraps modulo 2**64 by design."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
        return z ^ (z >> np.uint64(31))


def _key(seed: int, stream: int) -> np.uint64:
    """The 64-bit key of ``(seed, stream)``: each of them hashed in turn."""
    with np.errstate(over="ignore"):
        key = _finalise(np.uint64(int(seed) & _MASK) + _GAMMA)
        return _finalise(key ^ np.uint64(int(stream) & _MASK))


def uniform(seed: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """Uniform draws in [0, 1), one per global row id, independent of any row split.

    Parameters
    ----------
    seed : the run's seed (any int; taken modulo 2**64).
    stream : the use, from :data:`BIN_STREAM`, :func:`bagging_stream` or
        :func:`subsample_stream`.
    rows : int64 array (any shape) of global row ids, >= 0.

    Returns
    -------
    float64 array of ``rows``' shape, multiples of 2**-53 in [0, 1): the top 53 bits of
    ``finalise(key(seed, stream) ^ finalise(row + gamma))``. Equal ids give equal draws.
    """
    ids = np.asarray(rows, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        bits = _finalise(_key(seed, stream) ^ _finalise(ids + _GAMMA))
    return (bits >> np.uint64(11)).astype(np.float64) * _MANTISSA


def _poisson1_cdf() -> np.ndarray:
    """P(N <= k) for N ~ Poisson(1), k = 0, 1, ...: up to the first k where it rounds to
    1, which it is set to exactly (the tail beyond, below 2**-53, is never drawn)."""
    terms, cdf = [], []
    while not cdf or cdf[-1] < 1.0:
        terms.append(math.exp(-1.0) / math.factorial(len(terms)))
        cdf.append(math.fsum(terms))
    cdf[-1] = 1.0
    return np.array(cdf)


_POISSON1_CDF = _poisson1_cdf()


def poisson1(u: np.ndarray) -> np.ndarray:
    """Poisson(1) counts from uniform draws ``u`` in [0, 1), by the inverse CDF.

    The bootstrap weight of a row in a forest tree: the count k with P(N < k) <= u <
    P(N <= k). int32 array of ``u``'s shape.
    """
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.int32)
