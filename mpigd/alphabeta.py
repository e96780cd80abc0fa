"""The latency-bandwidth (alpha-beta) cost of a collective, and its fit to timings.

One formula for two users: ``experiments.perfmodel`` fits it to commbench CSVs to
predict scaling, and the allreduce strategy's ``--exchange auto``
(:mod:`mpigd.strategies.sparse_exchange`) fits it to a few calls timed at start-up to
choose, per step, between a sparse and a dense gradient exchange. It lives here, in
the package, so that training never imports ``experiments``.

Each collective has the shape of the algorithm MPI libraries use for it::

    op         t(P, m) = alpha A(P) + beta B(P) m     A(P)          B(P)
    allreduce  recursive doubling + Rabenseifner       ceil(log2 P)  2 (P - 1) / P
    reduce     binomial tree                           ceil(log2 P)  ceil(log2 P)
    bcast      binomial tree                           ceil(log2 P)  ceil(log2 P)
    sendrecv   one message (ping-pong, one way)        1             1
    allgather  recursive doubling                      ceil(log2 P)  (P - 1) / P

``m`` is the message in bytes: the buffer every rank sends (allreduce, reduce, bcast,
sendrecv), or for allgather(v) the gathered total, the sum of every rank's part (each
rank receives all but its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls


def log2_ceil(ranks) -> np.ndarray:
    """ceil(log2 P), elementwise (0 for one rank)."""
    return np.ceil(np.log2(np.asarray(ranks, dtype=float)))


def _ones(ranks) -> np.ndarray:
    return np.ones_like(np.asarray(ranks, dtype=float))


#: The (A(P), B(P)) algorithm shape of each collective (see the module docstring).
SHAPES = {
    "allreduce": lambda p: (log2_ceil(p), 2.0 * (np.asarray(p, float) - 1.0) / p),
    "reduce": lambda p: (log2_ceil(p), log2_ceil(p)),
    "bcast": lambda p: (log2_ceil(p), log2_ceil(p)),
    "sendrecv": lambda p: (_ones(p), _ones(p)),
    "allgather": lambda p: (log2_ceil(p), (np.asarray(p, float) - 1.0) / p),
}


@dataclass(frozen=True)
class AlphaBeta:
    """Fitted cost of one operation: ``alpha_s`` seconds per stage, ``beta_s`` per byte."""

    alpha_s: float
    beta_s: float

    def time(self, op: str, ranks, n_bytes) -> np.ndarray:
        """Seconds of ``op`` on ``ranks`` ranks for messages of ``n_bytes``."""
        stages, volume = SHAPES[op](ranks)
        return self.alpha_s * stages + self.beta_s * volume * np.asarray(n_bytes, float)

    def message(self, n_bytes: float) -> float:
        """Seconds of one stage moving ``n_bytes``: ``alpha + beta n_bytes``."""
        return self.alpha_s + self.beta_s * n_bytes


def fit_alpha_beta(op: str, ranks, n_bytes, seconds) -> AlphaBeta:
    """Alpha and beta of ``op`` from timings: equal-length arrays of rank counts (each
    at least 2), message bytes and seconds per call.

    Minimises the squared relative error with alpha, beta >= 0, so that small messages
    pin the latency and large ones the bandwidth.
    """
    stages, volume = SHAPES[op](np.asarray(ranks, dtype=float))
    seconds = np.asarray(seconds, dtype=float)
    design = np.column_stack([stages, volume * np.asarray(n_bytes, float)]) / seconds[:, None]
    (alpha, beta), _ = nnls(design, np.ones_like(seconds))
    return AlphaBeta(float(alpha), float(beta))
