"""Strategies by name (``--strategy``): how ranks combine gradients. One module each.

=============  ===============================================  ======================
name           what happens each step                           good for
=============  ===============================================  ======================
allreduce      every rank: local gradient -> one Allreduce of   the default; scales
(default)      [gradient | loss | rows] -> same update on all   with a flat gradient
ps-sync        workers: gradient -> Reduce to rank 0; rank 0    the classic server;
               updates -> Bcast parameters (2 ranks minimum)    shows its bottleneck
ps-async       workers send gradients as they finish; rank 0    straggler tolerance;
               applies each at once, replies to its sender;     ``--max-staleness S``
               bounded staleness (SSP) with --max-staleness     bounds the lag
local-sgd      ``--sync-every H`` local steps, then one         fewer messages when
               row-weighted Allreduce average of parameters     latency dominates
=============  ===============================================  ======================

Each is one module subclassing :class:`~mpigd.strategies.base.Strategy`.
"""

from __future__ import annotations

from mpigd.errors import ConfigError
from mpigd.strategies.allreduce import AllreduceStrategy
from mpigd.strategies.base import Strategy
from mpigd.strategies.local_sgd import LocalSGD
from mpigd.strategies.ps_async import ParameterServerAsync
from mpigd.strategies.ps_sync import ParameterServerSync

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (AllreduceStrategy, ParameterServerSync, ParameterServerAsync, LocalSGD)
}
DEFAULT_STRATEGY = "allreduce"


def create_strategy(name: str, ranks, objective, timer, config) -> Strategy:
    """Build strategy ``name`` (see the table above) for this rank."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](ranks, objective, timer, config)


__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "Strategy", "create_strategy"]
