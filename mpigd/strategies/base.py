"""The strategy interface: how the ranks combine their work into one update.

A strategy owns every MPI call of training. The trainer hands it the optimiser, the
flat parameters and this epoch's mini-batches; the strategy decides who computes what,
which collective combines it and who applies the update. It also provides the global
sums and maxima the trainer needs for metrics, so the trainer never touches MPI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property

import numpy as np
from mpi4py import MPI

from mpigd import preemption
from mpigd.comm import RankInfo, sum_across
from mpigd.errors import DivergenceError
from mpigd.objective import LocalObjective, memoize_last
from mpigd.optim import Closure, Optimizer
from mpigd.strategies.buckets import OverlappedSum, plan_buckets
from mpigd.timing import PhaseTimer


class Strategy(ABC):
    """Base class of ``--strategy`` implementations.

    Parameters
    ----------
    ranks : this rank's place in the job.
    objective : this rank's rows and the model.
    timer : where communication time is booked (``comm``).
    config : the run's TrainConfig (strategy options such as ``sync_every``).
    """

    name: str
    #: The fewest ranks the strategy can run on.
    min_ranks = 1

    @classmethod
    def data_share(cls, rank: int, size: int, config) -> tuple[int, int]:
        """Which training rows this rank holds: part ``part`` of ``parts`` equal ranges
        (``(0, 0)``: none). Data parallelism: every rank its own part."""
        del config
        return rank, size

    def __init__(
        self, ranks: RankInfo, objective: LocalObjective, timer: PhaseTimer, config
    ) -> None:
        self.config = config
        self.ranks = ranks
        self.comm = ranks.comm
        self.objective = objective
        self.timer = timer
        #: True on every rank once any rank asked to stop (SIGTERM/SIGUSR1), agreed
        #: through a collective so that all ranks stop after the same step.
        self.stop_agreed = False
        #: ``[gradient | loss | rows | stop vote]``; ``packed`` is the objective's part.
        self.buffer = np.zeros(objective.packed_buffer().size + 1)
        self.packed = self.buffer[:-1]
        #: Bucketed, overlapped summing for layered models (None: one plain Allreduce).
        self.overlapped = None
        layers = objective.model.layer_ranges()
        if getattr(config, "overlap", False) and len(layers) > 1:
            buckets = plan_buckets(layers, config.bucket_mb * 2**20)
            self.overlapped = OverlappedSum(self.comm, self.buffer, objective.n_params,
                                            buckets, timer)  # fmt: skip

    def closure(self, rows: np.ndarray | None) -> Closure:
        """The collective global objective over this batch (``rows`` of this rank).

        One Allreduce of ``[gradient | loss | rows | stop vote]`` per evaluation: the
        buffer's last slot carries each rank's stop vote (a SIGTERM/SIGUSR1 received),
        so agreeing to stop costs no extra message. For a layered model (the MLP) with
        ``--overlap`` (default) the sum runs bucket by bucket during backpropagation
        instead (:mod:`mpigd.strategies.buckets`). Every rank returns the same value.
        """

        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.buffer[-1] = 1.0 if preemption.requested() else 0.0
            if self.overlapped is None:
                self.objective.local_sums(params, rows, self.packed)
                with self.timer.phase("comm"):
                    self.comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
            else:
                self.overlapped.start()
                self.objective.local_sums(params, rows, self.packed, self.overlapped.ready)
                self.overlapped.finish()
            self.stop_agreed = self.stop_agreed or self.buffer[-1] > 0
            return self.checked(self.objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate

    @cached_property
    def full_closure(self) -> Closure:
        """The full-batch objective over all training rows, memoised at its last point."""
        return memoize_last(self.closure(None))

    @abstractmethod
    def step(self, optimizer: Optimizer, params: np.ndarray, rows: np.ndarray | None) -> None:
        """One optimiser step on this batch (``rows`` of this rank; ``None`` = all rows),
        updating ``params`` in place wherever the strategy keeps them."""

    def run_epoch(
        self,
        optimizer: Optimizer,
        params: np.ndarray,
        batches: list,
        before_step: Callable[[int], None],
    ) -> int:
        """Take one step per batch; return how many were taken.

        ``batches`` holds this rank's local row indices per step; every rank gets the same
        number. ``before_step(i)`` runs before the i-th of them (the trainer's hook for
        step checkpoints and fault injection). Stops early, at the same step on every
        rank, when the optimiser has converged or the ranks agreed to stop
        (:attr:`stop_agreed`).
        """
        for taken, rows in enumerate(batches):
            before_step(taken)
            self.step(optimizer, params, rows)
            if self.should_stop(optimizer):
                return taken + 1
        return len(batches)

    def should_stop(self, optimizer: Optimizer) -> bool:
        """Whether the epoch ends here on every rank: converged or a stop was agreed."""
        return optimizer.stop_reason is not None or self.stop_agreed

    def agree_stop_reason(self, optimizer: Optimizer) -> None:
        """Collective: make ``optimizer.stop_reason`` the same on every rank.

        Replicated strategies already agree (every rank runs the same optimiser on the
        same numbers); a strategy whose optimiser runs on one rank broadcasts it.
        """
        del optimizer

    @property
    def replicated(self) -> bool:
        """Whether every rank holds the same parameters now (a checkpoint may be taken)."""
        return True

    def epoch_fields(self) -> dict:
        """Strategy-specific fields for the epoch's metrics line."""
        return {}

    @staticmethod
    def finite(loss: float, grad: np.ndarray | None = None) -> bool:
        """Whether ``loss`` (and ``grad``, if given) hold no NaN or Inf."""
        return bool(np.isfinite(loss) and (grad is None or np.isfinite(grad).all()))

    @classmethod
    def checked(cls, loss: float, grad: np.ndarray | None = None) -> float:
        """``loss``, after making sure it and the global gradient are finite.

        Every rank holds the same reduced numbers, so every rank raises together.
        """
        if not cls.finite(loss, grad):
            what = "loss" if not np.isfinite(loss) else "gradient"
            raise DivergenceError(f"the {what} is not finite ({loss=})")
        return loss

    def full_loss(self, params: np.ndarray) -> float:
        """Collective: f at ``params`` over all training rows, without the gradient.

        The ``train_loss`` of a mini-batch epoch; full-batch training uses the memoised
        :attr:`full_closure`, whose pass the next step reuses.
        """
        sums = self.sum_over_data(self.objective.local_loss(params))
        return self.checked(self.objective.loss_value(sums, params))

    def sum_over_data(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over the ranks holding distinct rows (in place; returned).

        All ranks here; one rank per model group when the model is split.
        """
        with self.timer.phase("comm"):
            return sum_across(self.comm, values)

    def full_vector(self, local: np.ndarray) -> np.ndarray | None:
        """Collective: the whole flat vector of which ``local`` is this rank's part, on
        rank 0 (None elsewhere). Unsplit models: ``local`` is already whole."""
        return local

    def local_vector(self, full: np.ndarray) -> np.ndarray:
        """This rank's part of a whole flat vector (inverse of :meth:`full_vector`)."""
        return np.asarray(full)

    def mean_and_max(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Element-wise mean and maximum over all ranks of a float64 array (untimed)."""
        total, largest = values.copy(), values.copy()
        world = self.ranks.comm
        world.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        world.Allreduce(MPI.IN_PLACE, largest, op=MPI.MAX)
        return total / world.Get_size(), largest
