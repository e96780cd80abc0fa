"""``--strategy allreduce``: synchronous data parallelism with one Allreduce per step.

Every rank holds the full parameter vector. Each step every rank computes the packed
sums of its share of the global batch (gradient, loss, row count), one in-place
``MPI_Allreduce`` adds them up with the control word (:meth:`Strategy.closure`), and
every rank applies the same optimiser update to the same numbers, so the replicas stay
identical without ever sending parameters. For a layered model (the MLP) with
``--overlap`` (default) the sum runs bucket by bucket during backpropagation instead
(:mod:`mpigd.strategies.buckets`).

On sparse (CSR) data, unless ``--exchange dense``, the gradients travel through
:mod:`mpigd.strategies.sparse_exchange` instead: as (index, value) pairs of the touched
coordinates, or as the d-vector, chosen per step (``auto``) or forced (``sparse``).
With mini-batches, ``sgd`` and ``momentum`` (heavy ball or Nesterov) then step in
O(nonzeros of the batch) too (:mod:`mpigd.optim.lazy`): the update of the coordinates no
batch touched, the L2 shrink and the momentum decay, is deferred and done when a batch
touches them, at the end of every epoch and before a checkpoint reads the parameters
(:meth:`AllreduceStrategy.full_vector`). A step that went dense is taken densely (the
deferred work done first). Adam, L-BFGS and full-batch gd scatter the exchanged
gradient into a d-vector and step in O(n_params). Dense data, and a model whose
gradient touches every parameter, always take the dense path above.
"""

from __future__ import annotations

from mpigd.strategies import control
from mpigd.strategies.base import Strategy, replicated_epoch, take_steps
from mpigd.strategies.buckets import OverlappedSum, plan_buckets
from mpigd.strategies.sparse_exchange import GradientExchange


class AllreduceStrategy(Strategy):
    """One buffer Allreduce of ``n_params + 4`` doubles per objective evaluation (dense),
    or the sparse exchange's messages (sparse data)."""

    name = "allreduce"
    OPTIONS = ("overlap", "bucket_mb", "exchange")

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        #: The sparse gradient exchange (None: the dense Allreduce of the d-vector).
        self.exchange = None
        if objective.sparse and options.exchange != "dense":
            self.exchange = GradientExchange(self.comm, objective.n_params, options.exchange,
                                             timer)  # fmt: skip
        #: Bucketed, overlapped summing for layered models (None: one plain Allreduce).
        self.overlapped = None
        layers = objective.model.layer_ranges()
        if self.exchange is None and options.overlap and len(layers) > 1:
            buckets = plan_buckets(layers, options.bucket_mb * 2**20)
            self.overlapped = OverlappedSum(self.comm, self.buffer, objective.n_params,
                                            buckets, timer)  # fmt: skip
        #: The lazy O(nnz) stepper of the epoch under way (None: dense steps).
        self.stepper = None

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        mini_batches = bool(batches) and batches[0] is not None
        if self.exchange is not None and mini_batches:
            objective = self.objective
            self.stepper = optimizer.lazy_stepper(params, objective.reg_mask, objective.l2)
        if self.stepper is None:
            return replicated_epoch(self, optimizer, params, batches, before_step)

        def step(rows) -> None:
            self._lazy_step(optimizer, params, rows)

        def done() -> bool:
            return optimizer.stop_reason is not None or self.stop_agreed

        try:
            return take_steps(batches, before_step, step, done)
        finally:
            with self.timer.phase("compute"):
                self.stepper.detach()
            self.stepper = None

    def full_vector(self, local):
        """The parameters, with any deferred lazy work done first (a checkpoint reads
        them mid-epoch)."""
        if self.stepper is not None:
            with self.timer.phase("compute"):
                self.stepper.flush()
        return local

    def epoch_fields(self) -> dict:
        """With the sparse exchange: its steps sent sparse and dense, bytes sent and
        ``auto``'s calibration (:meth:`GradientExchange.epoch_fields`)."""
        return {} if self.exchange is None else self.exchange.epoch_fields()

    def closure(self, rows):
        if self.exchange is not None:
            return self._exchanged_closure(rows)
        if self.overlapped is None:
            return super().closure(rows)

        def evaluate(params, grad_out) -> float:
            control.fill(self.word)
            self.overlapped.start()
            self.objective.local_sums(params, rows, self.packed, self.overlapped.ready)
            self.overlapped.finish()
            return self.settled(self.objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate

    def _exchanged_closure(self, rows):
        """The collective objective over ``rows`` with the gradients exchanged sparse or
        dense, scattered into the d-vector the optimiser reads (O(n_params))."""
        objective, n = self.objective, self.objective.n_params
        with self.timer.phase("compute"):
            touched = objective.touched(rows)

        def evaluate(params, grad_out) -> float:
            local = objective.sparse_sums(params, rows, touched)
            summed = self._exchanged(touched, *local)
            if summed.sparse:
                with self.timer.phase("compute"):
                    self.packed[:n] = 0.0
                    self.packed[summed.indices] = summed.values
            return self.settled(objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate

    def _exchanged(self, touched, values, loss_sum: float, count: int):
        """This rank's sums (:meth:`LocalObjective.sparse_sums`) exchanged with every
        rank's; the summed loss and rows land in ``packed``, the control word in
        ``word``."""
        n = self.objective.n_params
        summed = self.exchange.sum(touched, values, loss_sum, count, self.packed[:n])
        self.packed[n], self.packed[n + 1] = summed.loss_sum, summed.rows
        self.word[:] = summed.word
        return summed

    def _lazy_step(self, optimizer, params, rows) -> None:
        """One O(nnz) step over ``rows``: the batch's sums at the touched coordinates
        (read at their true values), exchanged, and the lazy step, or a dense step when
        the exchange went dense."""
        objective, stepper = self.objective, self.stepper
        with self.timer.phase("compute"):
            touched = objective.touched(rows)
        with stepper.materialised(touched):
            local = objective.sparse_sums(params, rows, touched)
        summed = self._exchanged(touched, *local)
        n = objective.n_params
        if not summed.sparse:
            with self.timer.phase("compute"):
                stepper.flush()

            def exchanged(point, grad_out) -> float:
                return self.settled(objective.finish(self.packed, point, grad_out), grad_out)

            optimizer.step(params, exchanged)
            return
        count = self.packed[n + 1]
        with self.timer.phase("compute"):
            scale = 1.0 / count if count > 0 else 0.0
            mean = summed.values * scale
            self.settled(float(self.packed[n] * scale), mean)
            stepper.step(summed.indices, mean)
