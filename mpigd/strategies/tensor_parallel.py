"""``--model-parallel M``: a (P/M data) x (M model) grid of ranks for the split MLP.

World rank r is model part m = r mod M of data group d = r div M. The M ranks of a
*model group* (same d) hold the same rows and different blocks of the network
(:class:`mpigd.models.mlp_split.SplitMLP`); their per-layer sums and gathers go over
``model_comm``. The P/M ranks of a *data group* (same m) hold the same block and
different rows; each step their gradients, loss and row counts are summed over
``data_comm`` with one Allreduce, as in plain data parallelism. One more tiny world
Allreduce per evaluation agrees on the stop vote and on divergence, which every rank
must see even though each holds different parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpigd import preemption
from mpigd.errors import DivergenceError
from mpigd.strategies.allreduce import AllreduceStrategy


@dataclass(frozen=True)
class Grid:
    """This rank's place in the grid and the two sub-communicators."""

    model_comm: MPI.Comm
    data_comm: MPI.Comm
    part: int
    parts: int


def make_grid(world: MPI.Comm, parts: int) -> Grid:
    """Collective: split ``world`` into model groups of ``parts`` ranks and data groups."""
    rank = world.Get_rank()
    model_comm = world.Split(color=rank // parts, key=rank)
    data_comm = world.Split(color=rank % parts, key=rank)
    return Grid(model_comm, data_comm, rank % parts, parts)


class GroupOps:
    """The model group's collectives, as the split model calls them (timed as comm)."""

    def __init__(self, grid: Grid, timer) -> None:
        self.comm, self.timer = grid.model_comm, timer

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over the model group, in place."""
        with self.timer.phase("comm"):
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def gather_columns(self, block: np.ndarray, widths: list[int]) -> np.ndarray:
        """The (n, Σ widths) matrix whose column blocks are every rank's ``block``."""
        n = block.shape[0]
        gathered = np.empty((sum(widths), n), block.dtype)
        counts = [width * n for width in widths]
        with self.timer.phase("comm"):
            self.comm.Allgatherv(np.ascontiguousarray(block.T), [gathered, counts])
        return np.ascontiguousarray(gathered.T)


class TensorParallelAllreduce(AllreduceStrategy):
    """Data-parallel Allreduce over each data group of the grid (see module docstring)."""

    def __init__(self, ranks, objective, timer, config, grid: Grid) -> None:
        super().__init__(ranks, objective, timer, config)
        self.world, self.grid = ranks.comm, grid
        self.comm = grid.data_comm
        self.overlapped = None
        self.flags = np.zeros(2)
        objective.penalty_sum = lambda value: float(grid.model_comm.allreduce(value, op=MPI.SUM))

    @classmethod
    def data_share(cls, rank: int, size: int, config) -> tuple[int, int]:
        parts = config.model_parallel
        return rank // parts, size // parts

    def closure(self, rows):
        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(params, rows, self.packed)
            with self.timer.phase("comm"):
                self.comm.Allreduce(MPI.IN_PLACE, self.packed, op=MPI.SUM)
            loss = self.objective.finish(self.packed, params, grad_out)
            self.flags[:] = preemption.requested(), not np.isfinite(grad_out).all()
            with self.timer.phase("comm"):
                self.world.Allreduce(MPI.IN_PLACE, self.flags, op=MPI.SUM)
            self.stop_agreed = self.stop_agreed or self.flags[0] > 0
            if self.flags[1]:
                raise DivergenceError("the gradient is not finite on some rank")
            return self.checked(loss, grad_out)

        return evaluate

    def sum_over_data(self, values: np.ndarray) -> np.ndarray:
        with self.timer.phase("comm"):
            self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
        return values

    def full_vector(self, local: np.ndarray) -> np.ndarray | None:
        """Collective: the unsplit vector on world rank 0 (None elsewhere)."""
        pieces = self.grid.model_comm.gather(local, root=0)
        indices = self.grid.model_comm.gather(self.objective.model.index, root=0)
        if self.ranks.rank != 0:
            return None
        full = np.zeros(self.objective.model.full_size)
        for piece, index in zip(pieces, indices, strict=True):
            full[index] = piece
        return full

    def local_vector(self, full: np.ndarray) -> np.ndarray:
        return np.asarray(full)[self.objective.model.index]
