"""``--strategy allreduce``: synchronous data parallelism with one Allreduce per step.

Every rank holds the full parameter vector. Each step every rank computes the packed
sums of its share of the global batch (gradient, loss, row count), one in-place
``MPI_Allreduce`` adds them up with the control word (:meth:`Strategy.closure`), and
every rank applies the same optimiser update to the same numbers, so the replicas stay
identical without ever sending parameters. For a layered model (the MLP) with
``--overlap`` (default) the sum runs bucket by bucket during backpropagation instead
(:mod:`mpigd.strategies.buckets`).
"""

from __future__ import annotations

from mpigd.strategies import control
from mpigd.strategies.base import Strategy, replicated_epoch
from mpigd.strategies.buckets import OverlappedSum, plan_buckets


class AllreduceStrategy(Strategy):
    """One buffer Allreduce of ``n_params + 4`` doubles per objective evaluation."""

    name = "allreduce"
    OPTIONS = ("overlap", "bucket_mb")

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        #: Bucketed, overlapped summing for layered models (None: one plain Allreduce).
        self.overlapped = None
        layers = objective.model.layer_ranges()
        if options.overlap and len(layers) > 1:
            buckets = plan_buckets(layers, options.bucket_mb * 2**20)
            self.overlapped = OverlappedSum(self.comm, self.buffer, objective.n_params,
                                            buckets, timer)  # fmt: skip

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        return replicated_epoch(self, optimizer, params, batches, before_step)

    def closure(self, rows):
        if self.overlapped is None:
            return super().closure(rows)

        def evaluate(params, grad_out) -> float:
            control.fill(self.word)
            self.overlapped.start()
            self.objective.local_sums(params, rows, self.packed, self.overlapped.ready)
            self.overlapped.finish()
            return self.settled(self.objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate
