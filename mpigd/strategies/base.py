"""The strategy interface: how the ranks combine their work into one update.

A strategy owns every MPI call of training. The trainer hands it the optimiser, the
flat parameters and this epoch's mini-batches; the strategy decides who computes what,
which collective combines it and who applies the update. It also provides the global
sums and maxima the trainer needs for metrics, so the trainer never touches MPI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np
from mpi4py import MPI

from mpigd.comm import RankInfo, sum_across
from mpigd.objective import LocalObjective, memoize_last
from mpigd.optim import Closure, Optimizer
from mpigd.timing import PhaseTimer


class Strategy(ABC):
    """Base class of ``--strategy`` implementations.

    Parameters
    ----------
    ranks : this rank's place in the job.
    objective : this rank's rows and the model.
    timer : where communication time is booked (``comm``).
    """

    name: str

    def __init__(self, ranks: RankInfo, objective: LocalObjective, timer: PhaseTimer) -> None:
        self.ranks = ranks
        self.comm = ranks.comm
        self.objective = objective
        self.timer = timer

    @abstractmethod
    def closure(self, rows: np.ndarray | None) -> Closure:
        """The collective global objective over this batch (``rows`` of this rank)."""

    @cached_property
    def full_closure(self) -> Closure:
        """The full-batch objective over all training rows, memoised at its last point."""
        return memoize_last(self.closure(None))

    @abstractmethod
    def run_epoch(self, optimizer: Optimizer, params: np.ndarray, batches: list) -> dict:
        """Take one optimiser step per batch, updating ``params`` in place on every rank.

        ``batches`` holds this rank's local row indices per step (``None`` = all rows);
        every rank gets the same number of batches. Returns strategy-specific metric
        fields for the epoch (may be empty). Stops early if ``optimizer.stop_reason``.
        """

    def sum_across_ranks(self, values: np.ndarray) -> np.ndarray:
        """Element-wise global sum of a float64 array (in place; returned for chaining)."""
        with self.timer.phase("comm"):
            return sum_across(self.comm, values)

    def max_across_ranks(self, values: np.ndarray) -> np.ndarray:
        """Element-wise global maximum of a float64 array (in place), untimed (metrics)."""
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)
        return values
