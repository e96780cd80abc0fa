"""``--strategy ps-sync``: a synchronous parameter server on rank 0.

Rank 0 holds the authoritative parameters and the optimiser state; ranks 1..P-1 are
workers holding the data (with ``--server-computes`` rank 0 also takes a share, and
the trajectory equals ``allreduce``'s). Each step:

1. every computing rank evaluates its packed sums ``[gradient | loss | rows | control]``
   at the current parameters, and one ``MPI_Reduce`` sums them on the server;
2. the server applies the optimiser update;
3. one ``MPI_Bcast`` sends ``[DONE | converged | control | parameters]`` back.

An optimiser that needs more evaluations per step (L-BFGS's line search) makes the
server broadcast ``[EVAL | · | · · | trial point]``, after which every rank computes and
reduces again. A non-finite objective is marked in the broadcast control word, so the
workers raise the same DivergenceError as the server instead of waiting. The server is
the bottleneck by design: it receives P−1 gradients and sends P−1 parameter vectors
per step (as a tree, inside MPI), which is what the scaling studies measure against
``allreduce``. ``--servers K`` > 1 spreads the parameters over K servers instead
(:mod:`mpigd.strategies.sharded_sync`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from mpi4py import MPI

from mpigd.strategies import control
from mpigd.strategies.base import take_steps
from mpigd.strategies.server import SERVER, ServerStrategy

# Command codes in the first slot of the broadcast message.
DONE, EVAL = 0.0, 1.0
#: Slots of the broadcast message before the parameters.
_COMMAND, _CONVERGED, _WORD = 0, 1, slice(2, 2 + control.SIZE)
_HEADER = 2 + control.SIZE


class ParameterServerSync(ServerStrategy):
    """Reduce to rank 0, update there, broadcast the parameters back."""

    name = "ps-sync"

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        #: ``[command, converged, control word, parameters...]``, broadcast by the server.
        self.message = np.zeros(_HEADER + objective.n_params)
        self.converged = False

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        if self.is_server:
            step = partial(self._server_step, optimizer, params)
        else:
            step = partial(self._worker_step, params)
        return take_steps(batches, before_step, step, lambda: self.converged or self.stop_agreed)

    # -- both sides ----------------------------------------------------------------

    def _reduce_sums(self, params: np.ndarray, rows) -> None:
        """This rank's packed sums at ``params``, summed on the server (Reduce)."""
        self.objective.local_sums(params, rows, self.packed)
        control.fill(self.word)
        with self.timer.phase("comm", "Reduce", self.buffer.nbytes):
            if self.is_server:
                self.comm.Reduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM, root=SERVER)
            else:
                self.comm.Reduce(self.buffer, None, op=MPI.SUM, root=SERVER)

    def _broadcast(self) -> None:
        with self.timer.phase("comm", "Bcast", self.message.nbytes if self.is_server else 0):
            self.comm.Bcast(self.message, root=SERVER)

    # -- server --------------------------------------------------------------------

    def _server_step(self, optimizer, params, rows) -> None:
        first_evaluation = True

        def closure(point: np.ndarray, grad_out: np.ndarray) -> float:
            nonlocal first_evaluation
            if not first_evaluation:  # the workers still hold ``params``: send the point
                self.message[_COMMAND] = EVAL
                self.message[_HEADER:] = point
                self._broadcast()
            first_evaluation = False
            self._reduce_sums(point, rows)
            self.stop_agreed = control.settle(self.word) or self.stop_agreed
            loss = self.objective.finish(self.packed, point, grad_out)
            if not control.finite(loss, grad_out):
                self.message[_COMMAND] = DONE
                control.fill(self.message[_WORD], diverged=True)
                self._broadcast()
                raise control.diverged()
            return loss

        with self.timer.phase("compute"):  # the update; the closure's comm nests inside
            optimizer.step(params, closure)
        self.converged = optimizer.stop_reason is not None
        self.message[_COMMAND], self.message[_CONVERGED] = DONE, self.converged
        self.message[_WORD] = self.stop_agreed, 0.0
        self.message[_HEADER:] = params
        self._broadcast()

    # -- worker --------------------------------------------------------------------

    def _worker_step(self, params, rows) -> None:
        self._reduce_sums(params, rows)
        while True:
            self._broadcast()
            if self.message[_COMMAND] == EVAL:
                self._reduce_sums(self.message[_HEADER:].copy(), rows)
                continue
            self.stop_agreed = control.settle(self.message[_WORD])
            params[:] = self.message[_HEADER:]
            self.converged = bool(self.message[_CONVERGED])
            return
