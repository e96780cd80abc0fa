"""``--strategy local-sgd``: periodic model averaging.

Every rank runs the optimiser on its own rows alone (the objective of its local
mini-batch, no communication) for ``--sync-every H`` steps, then one Allreduce
averages the parameters, weighted by the rows each rank stepped through since the
last average: θ ← Σ_r n_r θ_r / Σ_r n_r. With plain SGD and H = 1 that is exactly
θ − η ∇f over the global batch, i.e. ``allreduce``. An epoch always ends with an
average, so epoch metrics and checkpoints see one model.

Each rank keeps its own optimiser state (momentum, Adam moments); only parameters are
averaged, as in Stich's local SGD. A checkpoint therefore restores rank 0's optimiser
state on every rank, which is exact for ``sgd``/``gd`` and an approximation otherwise.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd.errors import ConfigError
from mpigd.strategies import control
from mpigd.strategies.base import Strategy


class LocalSGD(Strategy):
    """H local steps, then a row-weighted parameter average (one Allreduce)."""

    name = "local-sgd"
    OPTIONS = ("sync_every",)

    @classmethod
    def check(cls, config, size: int) -> None:
        super().check(config, size)
        if config.tol or config.optimizer == "lbfgs":
            raise ConfigError(
                "local-sgd: each rank's optimiser sees only its own rows, so a convergence "
                "test (--tol, lbfgs) would stop the ranks at different steps; use gd, sgd, "
                "momentum or adam without --tol"
            )

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        self.sync_every = options.sync_every
        #: ``[n_r θ_r | n_r | control word]``, summed over ranks at each average.
        self.average = np.zeros(objective.n_params + 1 + control.SIZE)
        self.steps_since_sync = 0
        self.rows_since_sync = 0
        self.diverged = False
        self.syncs = 0

    @property
    def replicated(self) -> bool:
        return self.steps_since_sync == 0

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        for taken, rows in enumerate(batches):
            before_step(taken)
            self._local_step(optimizer, params, rows)
            if self.steps_since_sync == self.sync_every or taken == len(batches) - 1:
                self._average(params)
                if self.stop_agreed:
                    return taken + 1
        return len(batches)

    def epoch_fields(self) -> dict:
        """``syncs``: parameter averages in this epoch."""
        syncs, self.syncs = self.syncs, 0
        return {"syncs": syncs}

    def _local_step(self, optimizer, params, rows) -> None:
        """One optimiser step on this rank's batch alone (no communication)."""

        def local_objective(point: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(point, rows, self.packed)
            loss = self.objective.finish(self.packed, point, grad_out)
            self.diverged = self.diverged or not control.finite(loss, grad_out)
            return loss

        optimizer.step(params, local_objective)
        self.steps_since_sync += 1
        self.rows_since_sync += self.objective.X.shape[0] if rows is None else len(rows)

    def _average(self, params: np.ndarray) -> None:
        """Row-weighted average of every rank's parameters (one Allreduce)."""
        n = params.size
        self.average[:n] = self.rows_since_sync * params
        self.average[n] = self.rows_since_sync
        control.fill(self.average[n + 1 :], diverged=self.diverged)
        with self.timer.phase("comm", "Allreduce", self.average.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, self.average, op=MPI.SUM)
        self.stop_agreed = control.settle(self.average[n + 1 :]) or self.stop_agreed
        rows = self.average[n]
        if rows > 0:
            np.divide(self.average[:n], rows, out=params)
        self.steps_since_sync = self.rows_since_sync = 0
        self.syncs += 1
