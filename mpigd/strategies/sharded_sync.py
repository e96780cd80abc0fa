"""``--strategy ps-sync --servers K`` (K > 1): synchronous SGD on K key-range servers.

Servers 0..K-1 each own a range of the flat vector and run the optimiser on it;
workers K..P-1 hold the rows and no parameters (:mod:`mpigd.strategies.sharded`). Each
step, on every rank:

1. pull: every worker asks each server for the keys its batch touches and gets their
   values (:class:`~mpigd.strategies.sharded.KeyExchange`: an Alltoall of counts, an
   Alltoallv of keys, an Alltoallv of values);
2. every worker computes its batch's gradient sum at those keys, its loss sum and its
   row count, and pushes the gradient to the owners (one Alltoallv);
3. one Allreduce of ``[Σ loss | rows | control word]`` over all ranks: each server's
   word says whether the gradient sum it received is finite, each worker's whether its
   own numbers are, and every rank's stop vote rides along, so all stop after the same
   step and all raise the same DivergenceError;
4. each server finishes its range as :meth:`~mpigd.objective.LocalObjective.finish`
   does for the whole vector (the summed pushes over the global batch's rows, plus
   ``l2 w`` on every key of the range, touched or not) and applies the optimiser to it.

Every message, and a worker's work, costs O(the batch's nonzeros). A server's step: on
sparse rows ``sgd`` and ``momentum`` step lazily (:mod:`mpigd.optim.lazy`: the L2 shrink
and momentum decay of the untouched keys deferred, done when a key is next pulled, at the
end of the epoch and before a checkpoint), O(the keys pushed to it); ``adam`` and dense
rows take the full update, O(its range). With one server and dense rows this is
``ps-sync`` without ``--server-computes``: the same sums, added in worker order.
Mini-batch first-order optimisers only (:func:`~mpigd.strategies.sharded.check`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from mpi4py import MPI

from mpigd.strategies import control
from mpigd.strategies.base import take_steps
from mpigd.strategies.sharded import ShardedServers

#: Slots of the step's Allreduce: loss sum, rows, then the control word.
_LOSS, _ROWS, _WORD = 0, 1, slice(2, 2 + control.SIZE)


class ShardedSync(ShardedServers):
    """Pull, compute, push, Allreduce, update each range (see the module docstring)."""

    name = "ps-sync"

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        self.summary = np.zeros(2 + control.SIZE)

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        if self.is_server:
            step = partial(self._server_step, optimizer, params)
        else:
            step = self._worker_step
        with self.lazily(optimizer, params):
            return take_steps(batches, before_step, step, lambda: self.stop_agreed)

    def _server_step(self, optimizer, params, rows) -> None:
        del rows  # a server holds none
        if self.stepper is not None:
            positions, sums = self._served(params)
            _, count = self._summarise()
            # a diverging run may overflow in the step; the next step's numbers report it
            with self.timer.phase("compute"), np.errstate(over="ignore", invalid="ignore"):
                self.stepper.step(positions, sums * (1.0 / count if count > 0 else 0.0))
            return
        n, packed = self.objective.n_params, self.packed  # [Σ gradient | Σ loss | rows]

        def closure(point: np.ndarray, grad_out: np.ndarray) -> float:
            positions, sums = self._served(point)
            packed[:n] = 0.0
            packed[positions] = sums
            packed[n:] = self._summarise()
            return self.objective.finish(packed, point, grad_out)

        with self.timer.phase("compute"):  # the update; the closure's comm nests inside
            optimizer.step(params, closure)

    def _served(self, params) -> tuple[np.ndarray, np.ndarray]:
        """A server's pull and push: the workers' keys answered from ``params``, their
        pushes summed by position; the control word says whether the sums are finite."""
        self.exchange.answer(self.values(params, self.exchange.request(np.zeros(0, np.int64))))
        pushed = self.exchange.push(np.zeros(0))
        with self.timer.phase("compute"):
            positions, sums = self.exchange.summed(pushed)
        control.fill(self.summary[_WORD], diverged=not control.finite(0.0, sums))
        self.summary[: _WORD.start] = 0.0
        return positions, sums

    def _worker_step(self, rows) -> None:
        keys, features = self.work.keys(self.objective.X, rows)
        pulled = self.exchange.pull(keys, np.zeros(0))
        packed = np.empty(len(keys) + 2)
        self.work.sums(rows, features, pulled, packed)
        self.exchange.push(packed[: len(keys)])
        control.fill(self.summary[_WORD], diverged=not control.finite(packed[-2], packed))
        self.summary[_LOSS], self.summary[_ROWS] = packed[-2:]
        self._summarise()

    def _summarise(self) -> np.ndarray:
        """Collective: the global ``[Σ loss, rows]``, the agreed stop vote recorded;
        DivergenceError on every rank if any rank's numbers were not finite."""
        with self.timer.phase("comm", "Allreduce", self.summary.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, self.summary, op=MPI.SUM)
        self.stop_agreed = control.settle(self.summary[_WORD]) or self.stop_agreed
        rows = self.summary[_ROWS]
        control.check_finite(self.summary[_LOSS] / rows if rows > 0 else 0.0)
        return self.summary[: _WORD.start]
