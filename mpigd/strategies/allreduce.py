"""``--strategy allreduce``: synchronous data parallelism with one Allreduce per step.

Every rank holds the full parameter vector. Each step every rank computes the packed
sums of its share of the global batch (gradient, loss, row count), one in-place
``MPI_Allreduce`` adds them up, and every rank applies the same optimiser update to
the same numbers, so the replicas stay identical without ever sending parameters.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd.strategies.base import Strategy


class AllreduceStrategy(Strategy):
    """One buffer Allreduce of ``n_params + 2`` doubles per step."""

    name = "allreduce"

    def __init__(self, ranks, objective, timer) -> None:
        super().__init__(ranks, objective, timer)
        self.packed = objective.packed_buffer()

    def closure(self, rows):
        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(params, rows, self.packed)
            with self.timer.phase("comm"):
                self.comm.Allreduce(MPI.IN_PLACE, self.packed, op=MPI.SUM)
            return self.objective.finish(self.packed, params, grad_out)

        return evaluate

    def run_epoch(self, optimizer, params, batches) -> dict:
        for rows in batches:
            optimizer.step(params, self.full_closure if rows is None else self.closure(rows))
            if optimizer.stop_reason:
                break
        return {}
