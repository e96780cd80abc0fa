"""The strategy contract: how the ranks combine their work into updates, for one epoch.

A strategy owns every MPI call of training. The loop hands it the optimiser, the flat
parameters and this epoch's mini-batches (:meth:`Strategy.run_epoch`, the one method a
strategy must write); the strategy decides who computes what, which collective
combines it and who applies the update. It also provides the global sums and maxima
the loop needs for metrics, so the loop never touches MPI. The stop vote and the
divergence flag travel in every strategy's own messages as the control word
(:mod:`mpigd.strategies.control`). The shortest complete strategy is
:mod:`mpigd.strategies.allreduce`; docs/architecture.md says how to add one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property

import numpy as np
from mpi4py import MPI

from mpigd.comm import RankInfo, mean_and_max, sum_across
from mpigd.errors import ConfigError
from mpigd.evaluate import evaluate
from mpigd.objective import LocalObjective
from mpigd.optim import Closure, Optimizer
from mpigd.strategies import control
from mpigd.timing import PhaseTimer

#: ``before_step(i)``: the loop's hook point before the i-th step of the epoch.
BeforeStep = Callable[[int], None]


class Strategy(ABC):
    """Base class of ``--strategy`` implementations.

    Parameters
    ----------
    ranks : this rank's place among the ranks that train together.
    objective : this rank's rows and the model.
    timer : where communication time is booked (``comm``), with a label and byte count.
    options : the strategy's own options (``config.subset(cls.OPTIONS)``).
    hooks : the run's hooks (:class:`mpigd.run.hooks.Hooks`), for strategies that report
        events only they see (an asynchronous server's ``gradient_applied``).
    """

    name: str
    #: The fewest ranks the strategy can run on.
    min_ranks = 1
    #: Names of the TrainConfig options the strategy reads (its ``options`` object).
    OPTIONS: tuple[str, ...] = ()
    #: Whether every rank takes each step at the same time, so that a step index names
    #: one moment of the run (False for an asynchronous server).
    steps_in_lockstep = True

    @classmethod
    def check(cls, config, size: int) -> None:
        """ConfigError if the strategy cannot run this config on ``size`` ranks."""
        if size < cls.min_ranks:
            raise ConfigError(
                f"--strategy {cls.name} needs at least {cls.min_ranks} ranks; this job has "
                f"{size} (run it under mpirun -n P)"
            )

    @classmethod
    def data_share(cls, rank: int, size: int, options) -> tuple[int, int]:
        """Which training rows this rank holds: part ``part`` of ``parts`` equal ranges
        (``(0, 0)``: none). Data parallelism: every rank its own part."""
        del options
        return rank, size

    def __init__(
        self, ranks: RankInfo, objective: LocalObjective, timer: PhaseTimer, options, hooks
    ) -> None:
        self.ranks = ranks
        self.comm = ranks.comm
        self.objective = objective
        self.timer = timer
        self.options = options
        self.hooks = hooks
        #: True on every rank once any rank asked to stop (SIGTERM/SIGUSR1), agreed
        #: through the control word so that all ranks stop after the same step.
        self.stop_agreed = False
        #: ``[gradient | loss | rows | control word]``; ``packed`` is the objective's part.
        self.buffer = np.zeros(objective.packed_buffer().size + control.SIZE)
        self.packed = self.buffer[: -control.SIZE]
        self.word = self.buffer[-control.SIZE :]

    @abstractmethod
    def run_epoch(
        self, optimizer: Optimizer, params: np.ndarray, batches: list, before_step: BeforeStep
    ) -> int:
        """Take the epoch's steps; return how many were taken.

        ``batches`` holds this rank's local row indices per step (``None``: all its
        rows); every rank gets the same number. ``before_step(i)`` must run before the
        i-th of them on every rank that steps. A strategy that can stop early (the
        optimiser converged, or the ranks agreed to stop, :attr:`stop_agreed`) stops at
        the same step on every rank. ``params`` (this rank's flat vector: the whole
        model, or its part of a split one) is updated in place, and ranks holding the
        same part hold the same values when the epoch returns.
        """

    def closure(self, rows: np.ndarray | None) -> Closure:
        """The collective global objective over this batch (``rows`` of this rank).

        One Allreduce of ``[gradient | loss | rows | control word]`` per evaluation over
        all ranks (a rank without rows adds zeros), so the stop vote costs no extra
        message. Every rank returns the same value.
        """

        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(params, rows, self.packed)
            control.fill(self.word)
            with self.timer.phase("comm", "Allreduce", self.buffer.nbytes):
                self.comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
            return self.settled(self.objective.finish(self.packed, params, grad_out), grad_out)

        return evaluate

    def settled(self, loss: float, grad_out: np.ndarray) -> float:
        """``loss`` after the reduced control word and numbers are settled: records an
        agreed stop, raises DivergenceError (every rank alike) if not finite."""
        self.stop_agreed = control.settle(self.word) or self.stop_agreed
        return control.check_finite(loss, grad_out)

    @cached_property
    def full_closure(self) -> Closure:
        """The full-batch objective over all training rows, memoised at its last point.

        The loop evaluates it after every epoch for ``train_loss``, and a full-batch
        optimiser's next step asks for the same point: the memo serves that call. Whether
        it does is agreed, with the control word, in one small Allreduce of ``[ranks that
        missed | control word]``: a split model's ranks may see their own part unchanged
        while another's moved (all must then evaluate), and where the parameters stop
        moving (a float fixed point) the stop vote still travels at every call.
        """
        evaluate, last = self.closure(None), {}
        agreement = np.zeros(1 + control.SIZE)

        def memoised(params: np.ndarray, grad_out: np.ndarray) -> float:
            key = params.tobytes()
            agreement[0] = 0.0 if last.get("key") == key else 1.0
            control.fill(agreement[1:])
            with self.timer.phase("comm", "Allreduce", agreement.nbytes):
                self.comm.Allreduce(MPI.IN_PLACE, agreement, op=MPI.SUM)
            if agreement[0] > 0:
                grad = np.empty_like(grad_out)
                last.update(key=key, loss=evaluate(params, grad), grad=grad)
            else:
                self.stop_agreed = control.settle(agreement[1:]) or self.stop_agreed
            grad_out[:] = last["grad"]
            return last["loss"]

        return memoised

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

    def full_loss(self, params: np.ndarray) -> float:
        """Collective: f at ``params`` over all training rows, without the gradient.

        The ``train_loss`` of a mini-batch epoch; full-batch training uses the memoised
        :attr:`full_closure`, whose pass the next step reuses.
        """
        sums = self.sum_over_data(self.objective.local_loss(params))
        return control.check_finite(self.objective.loss_value(sums, params))

    def sum_over_data(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over the ranks holding distinct rows (in place; returned).

        All ranks here; one rank per model group when the model is split.
        """
        with self.timer.phase("comm", "Allreduce", values.nbytes):
            return sum_across(self.comm, values)

    def full_vector(self, local: np.ndarray) -> np.ndarray | None:
        """Collective: the whole flat vector of which ``local`` is this rank's part, on
        rank 0 (None elsewhere). Unsplit models: ``local`` is already whole."""
        return local

    def local_vector(self, full: np.ndarray) -> np.ndarray:
        """This rank's part of a whole flat vector (inverse of :meth:`full_vector`)."""
        return np.asarray(full)

    def evaluate(self, X, y, params: np.ndarray) -> dict:
        """Collective: the metrics of ``params`` over every rank's rows ``X``, ``y``
        (:func:`mpigd.evaluate.evaluate` on this rank's model; a sharded model pulls the
        weights its rows need first)."""
        return evaluate(self.objective.model, X, y, params, self.ranks)

    def warm_up(self, params: np.ndarray, test_X) -> None:
        """Compile the kernels this rank's steps and evaluations call (no MPI; see
        :meth:`mpigd.objective.LocalObjective.warm_up`)."""
        self.objective.warm_up(params, test_X)

    def mean_and_max(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Element-wise mean and maximum over all ranks of a float64 array (untimed)."""
        return mean_and_max(self.comm, values)


def take_steps(batches: list, before_step: BeforeStep, step, done: Callable[[], bool]) -> int:
    """The epoch of a step-by-step strategy: ``step(rows)`` per batch, after
    ``before_step(i)``, until ``done()``; the number of steps taken."""
    for taken, rows in enumerate(batches):
        before_step(taken)
        step(rows)
        if done():
            return taken + 1
    return len(batches)


def replicated_epoch(strategy: Strategy, optimizer, params, batches, before_step) -> int:
    """The epoch of a strategy whose ranks all run the same optimiser on the same
    numbers: one ``optimizer.step`` per batch on the strategy's collective closure (the
    memoised full-batch one for ``None``), until converged or a stop is agreed."""

    def step(rows) -> None:
        closure = strategy.full_closure if rows is None else strategy.closure(rows)
        optimizer.step(params, closure)

    def done() -> bool:
        return optimizer.stop_reason is not None or strategy.stop_agreed

    return take_steps(batches, before_step, step, done)
