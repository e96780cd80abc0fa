"""``--strategy allreduce``: synchronous data parallelism with one Allreduce per step.

Every rank holds the full parameter vector. Each step every rank computes the packed
sums of its share of the global batch (gradient, loss, row count), one in-place
``MPI_Allreduce`` adds them up, and every rank applies the same optimiser update to
the same numbers, so the replicas stay identical without ever sending parameters.
The buffer's last slot carries each rank's stop vote (a SIGTERM/SIGUSR1 received), so
agreeing to stop costs no extra message.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd import preemption
from mpigd.strategies.base import Strategy


class AllreduceStrategy(Strategy):
    """One buffer Allreduce of ``n_params + 3`` doubles per objective evaluation."""

    name = "allreduce"

    def __init__(self, ranks, objective, timer) -> None:
        super().__init__(ranks, objective, timer)
        self.buffer = np.zeros(objective.packed_buffer().size + 1)
        self.packed = self.buffer[:-1]

    def closure(self, rows):
        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(params, rows, self.packed)
            self.buffer[-1] = 1.0 if preemption.requested() else 0.0
            with self.timer.phase("comm"):
                self.comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
            self.stop_agreed = self.stop_agreed or self.buffer[-1] > 0
            return self.checked(self.objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate

    def step(self, optimizer, params, rows) -> None:
        optimizer.step(params, self.full_closure if rows is None else self.closure(rows))
