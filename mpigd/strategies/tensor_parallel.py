"""The tensor-parallel layout's communication: a (P/M data) x (M model) grid of ranks.

World rank r is model part m = r mod M of data group d = r div M. The M ranks of a
*model group* (same d) hold the same rows and different blocks of the network
(:class:`mpigd.models.mlp_split.SplitMLP`); their per-layer sums and gathers go over
``model_comm`` through :class:`GroupOps`. The P/M ranks of a *data group* (same m) hold
the same block and different rows; each step their gradients, loss and row counts are
summed over ``data_comm`` with one Allreduce, as in plain data parallelism. One more
tiny world Allreduce per evaluation carries the control word (stop vote and
divergence), which every rank must see even though each holds different parameters.
Built by the ``tensor-parallel`` layout (:mod:`mpigd.run.layouts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpigd.strategies import control
from mpigd.strategies.base import Strategy, replicated_epoch


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


def model_group_share(rank: int, size: int, parts: int) -> tuple[int, int]:
    """The rows of world rank ``rank``: its model group's share, ``rank // parts`` of
    ``size // parts`` (every rank of a group holds the same rows)."""
    return rank // parts, size // parts


class GroupOps:
    """The model group's collectives, as the split model calls them (timed as comm)."""

    def __init__(self, grid: Grid, timer) -> None:
        self.comm, self.timer = grid.model_comm, timer

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over the model group, in place."""
        with self.timer.phase("comm", "Allreduce model group", array.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def total(self, value: float) -> float:
        """The sum over the model group of one float (each rank's share of a penalty)."""
        return float(self.sum(np.array([value]))[0])

    def gather_columns(self, block: np.ndarray, widths: list[int]) -> np.ndarray:
        """The (n, Σ widths) matrix whose column blocks are every rank's ``block``."""
        n = block.shape[0]
        gathered = np.empty((sum(widths), n), block.dtype)
        counts = [width * n for width in widths]
        with self.timer.phase("comm", "Allgatherv model group", block.nbytes):
            self.comm.Allgatherv(np.ascontiguousarray(block.T), [gathered, counts])
        return np.ascontiguousarray(gathered.T)


class TensorParallelAllreduce(Strategy):
    """Data-parallel Allreduce over each data group of the grid (see module docstring).

    ``self.comm`` stays the world (metrics, the control word); ``grid.data_comm``
    carries the gradients.
    """

    name = "allreduce"

    def __init__(self, ranks, objective, timer, options, hooks, grid: Grid) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        self.grid = grid

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        return replicated_epoch(self, optimizer, params, batches, before_step)

    def closure(self, rows):
        def evaluate(params: np.ndarray, grad_out: np.ndarray) -> float:
            self.objective.local_sums(params, rows, self.packed)
            with self.timer.phase("comm", "Allreduce data group", self.packed.nbytes):
                self.grid.data_comm.Allreduce(MPI.IN_PLACE, self.packed, op=MPI.SUM)
            loss = self.objective.finish(self.packed, params, grad_out)
            control.fill(self.word, diverged=not control.finite(loss, grad_out))
            with self.timer.phase("comm", "Allreduce control", self.word.nbytes):
                self.comm.Allreduce(MPI.IN_PLACE, self.word, op=MPI.SUM)
            return self.settled(loss, grad_out)

        return evaluate

    def sum_over_data(self, values: np.ndarray) -> np.ndarray:
        with self.timer.phase("comm", "Allreduce data group", values.nbytes):
            self.grid.data_comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
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
