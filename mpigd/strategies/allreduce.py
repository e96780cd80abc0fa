"""``--strategy allreduce``: synchronous data parallelism with one Allreduce per step.

Every rank holds the full parameter vector. Each step every rank computes the packed
sums of its share of the global batch (gradient, loss, row count), one in-place
``MPI_Allreduce`` adds them up (:meth:`Strategy.closure`), and every rank applies the
same optimiser update to the same numbers, so the replicas stay identical without ever
sending parameters.
"""

from __future__ import annotations

from mpigd.strategies.base import Strategy


class AllreduceStrategy(Strategy):
    """One buffer Allreduce of ``n_params + 3`` doubles per objective evaluation."""

    name = "allreduce"

    def step(self, optimizer, params, rows) -> None:
        optimizer.step(params, self.full_closure if rows is None else self.closure(rows))
