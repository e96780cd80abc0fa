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

``ps-sync`` and ``ps-async`` with ``--servers K`` > 1 shard the parameters over K
key-range servers, ranks 0..K-1 (:mod:`mpigd.strategies.sharded`, ``sharded_sync``,
``sharded_async``): a worker pulls only the weights its batch touches and pushes a
sparse gradient, for sparse, high-dimensional data. The ``sharded-servers`` layout
builds them (:mod:`mpigd.run.layouts`); ``--servers 1`` is the single server above.

Each is one module subclassing :class:`~mpigd.strategies.base.Strategy` and writing its
:meth:`~mpigd.strategies.base.Strategy.run_epoch`; its own options (``OPTIONS``) reach
it as a small options object. The tensor-parallel grid's communication
(:mod:`mpigd.strategies.tensor_parallel`) is built by its layout, not by name here.
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
#: How the ranks combine a tree ensemble's histograms (:mod:`mpigd.strategies.histograms`):
#: every rank all of them, or each its range of features.
TREE_STRATEGIES = ("allreduce", "reduce-scatter")


def strategy_class(name: str) -> type[Strategy]:
    """The class of strategy ``name`` (see the table above); ConfigError if unknown."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "TREE_STRATEGIES", "Strategy", "strategy_class"]
