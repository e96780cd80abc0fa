"""What the parameter-server strategies share: rank 0 serves, ranks 1..P-1 work."""

from __future__ import annotations

from mpigd import comm as mpi
from mpigd.strategies.base import Strategy

SERVER = 0


class ServerStrategy(Strategy):
    """Base of ``ps-sync`` and ``ps-async``: the optimiser runs on the server alone.

    The workers split the training rows among themselves; with ``--server-computes``
    (where the strategy supports it) the server takes a share too.
    """

    min_ranks = 2
    OPTIONS = ("server_computes",)

    @classmethod
    def data_share(cls, rank: int, size: int, options) -> tuple[int, int]:
        if options.server_computes:
            return rank, size
        return (0, 0) if rank == SERVER else (rank - 1, size - 1)

    @property
    def is_server(self) -> bool:
        return self.ranks.rank == SERVER

    def agree_stop_reason(self, optimizer) -> None:
        optimizer.stop_reason = mpi.from_root(self.comm, optimizer.stop_reason)
