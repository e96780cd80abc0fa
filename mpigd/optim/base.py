"""What every optimiser shares: flat vectors in, flat vectors out, and a closure.

A *closure* evaluates the global objective (mean loss over the batch's rows on all ranks
plus the L2 term) at the parameters it is given::

    loss = closure(params, grad_out)   # fills grad_out, returns the objective

It is collective: every rank calls it with the same parameters, in the same order.
Optimisers update ``params`` in place and never see data, models or MPI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

Closure = Callable[[np.ndarray, np.ndarray], float]


class Optimizer(ABC):
    """Base class. ``stop_reason`` becomes a sentence once the optimiser has converged.

    Parameters
    ----------
    n_params : length of the flat parameter vector.
    tol : stop when the infinity norm of the full-batch gradient is at most ``tol``
        (checked only when ``full_batch``, where that gradient is the true one).
    full_batch : whether every closure covers all training rows.
    """

    #: Names of the array attributes that make up the optimiser's state (checkpoints).
    STATE_ARRAYS: tuple[str, ...] = ()

    def __init__(self, n_params: int, tol: float = 0.0, full_batch: bool = True) -> None:
        self.grad = np.zeros(n_params)
        self.tol = tol
        self.full_batch = full_batch
        self.steps = 0
        self.stop_reason: str | None = None
        #: The lazy stepper (:mod:`mpigd.optim.lazy`) attached to this optimiser, if any:
        #: while attached, the parameters and state arrays hold deferred work.
        self.deferred = None

    @abstractmethod
    def step(self, params: np.ndarray, closure: Closure) -> float:
        """Take one step in place; return the objective at the parameters it started from."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: ``steps`` and the state arrays (copies).

        Deferred work of an attached lazy stepper is done first, so the arrays are true.
        """
        if self.deferred is not None:
            self.deferred.flush()
        state = {name: getattr(self, name).copy() for name in self.STATE_ARRAYS}
        state["steps"] = self.steps
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (e.g. read back from a checkpoint)."""
        for name in self.STATE_ARRAYS:
            getattr(self, name)[...] = state[name]
        self.steps = int(state["steps"])

    def lazy_stepper(self, params: np.ndarray, reg_mask: np.ndarray, l2: float):
        """A stepper taking this optimiser's mini-batch steps in O(nonzeros of the batch)
        (:mod:`mpigd.optim.lazy`), attached to ``params``; None where every step costs
        O(n_params) (the default)."""
        del params, reg_mask, l2

    def epoch_fields(self) -> dict:
        """Optimiser-specific fields for the epoch's metrics line."""
        return {}

    def converged(self, grad: np.ndarray) -> bool:
        """Record and report whether ``grad`` (a full-batch gradient) meets the tolerance."""
        if not self.full_batch or self.tol <= 0:
            return False
        norm = float(np.max(np.abs(grad))) if grad.size else 0.0
        if norm <= self.tol:
            self.stop_reason = f"converged: gradient infinity norm {norm:.3e} <= tol {self.tol:g}"
            return True
        return False
