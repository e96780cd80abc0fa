"""``--strategy ps-sync``: a synchronous parameter server on rank 0.

Rank 0 holds the authoritative parameters and the optimiser state; ranks 1..P-1 are
workers holding the data (with ``--server-computes`` rank 0 also takes a share, and
the trajectory equals ``allreduce``'s). Each step:

1. every computing rank evaluates its packed sums ``[gradient | loss | rows | vote]``
   at the current parameters, and one ``MPI_Reduce`` sums them on the server;
2. the server applies the optimiser update;
3. one ``MPI_Bcast`` sends ``[DONE | stop agreed | converged | parameters]`` back.

An optimiser that needs more evaluations per step (L-BFGS's line search) makes the
server broadcast ``[EVAL | · | · | trial point]``, after which every rank computes and
reduces again. A non-finite objective makes the server broadcast ``FAIL``, so the
workers raise with it instead of waiting. The server is the bottleneck by design: it
receives P−1 gradients and sends P−1 parameter vectors per step (as a tree, inside
MPI), which is what the scaling studies measure against ``allreduce``.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd import preemption
from mpigd.errors import DivergenceError
from mpigd.strategies.server import SERVER, ServerStrategy

# Command codes in the first slot of the broadcast message.
DONE, EVAL, FAIL = 0.0, 1.0, 2.0


class ParameterServerSync(ServerStrategy):
    """Reduce to rank 0, update there, broadcast the parameters back."""

    name = "ps-sync"

    def __init__(self, ranks, objective, timer, config) -> None:
        super().__init__(ranks, objective, timer, config)
        #: ``[command, stop agreed, converged, parameters...]``, broadcast by the server.
        self.message = np.zeros(3 + objective.n_params)
        self.converged = False

    def step(self, optimizer, params, rows) -> None:
        if self.is_server:
            self._server_step(optimizer, params, rows)
        else:
            self._worker_step(params, rows)

    def should_stop(self, optimizer) -> bool:
        return self.converged or self.stop_agreed

    # -- both sides ----------------------------------------------------------------

    def _reduce_sums(self, params: np.ndarray, rows) -> None:
        """This rank's packed sums at ``params``, summed on the server (Reduce)."""
        self.objective.local_sums(params, rows, self.packed)
        self.buffer[-1] = 1.0 if preemption.requested() else 0.0
        with self.timer.phase("comm"):
            if self.is_server:
                self.comm.Reduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM, root=SERVER)
            else:
                self.comm.Reduce(self.buffer, None, op=MPI.SUM, root=SERVER)

    def _broadcast(self) -> None:
        with self.timer.phase("comm"):
            self.comm.Bcast(self.message, root=SERVER)

    # -- server --------------------------------------------------------------------

    def _server_step(self, optimizer, params, rows) -> None:
        first_evaluation = True

        def closure(point: np.ndarray, grad_out: np.ndarray) -> float:
            nonlocal first_evaluation
            if not first_evaluation:  # the workers still hold ``params``: send the point
                self.message[0] = EVAL
                self.message[3:] = point
                self._broadcast()
            first_evaluation = False
            self._reduce_sums(point, rows)
            self.stop_agreed = self.stop_agreed or self.buffer[-1] > 0
            loss = self.objective.finish(self.packed, point, grad_out)
            try:
                return self.checked(loss, grad_out)
            except DivergenceError:
                self.message[0] = FAIL
                self._broadcast()
                raise

        with self.timer.phase("compute"):  # the update; the closure's comm nests inside
            optimizer.step(params, closure)
        self.converged = optimizer.stop_reason is not None
        self.message[:3] = DONE, self.stop_agreed, self.converged
        self.message[3:] = params
        self._broadcast()

    # -- worker --------------------------------------------------------------------

    def _worker_step(self, params, rows) -> None:
        self._reduce_sums(params, rows)
        while True:
            self._broadcast()
            command = self.message[0]
            if command == EVAL:
                self._reduce_sums(self.message[3:].copy(), rows)
                continue
            if command == FAIL:
                raise DivergenceError("the server found the objective not finite")
            params[:] = self.message[3:]
            self.stop_agreed = bool(self.message[1])
            self.converged = bool(self.message[2])
            return
