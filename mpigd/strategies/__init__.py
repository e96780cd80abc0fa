"""Strategies by name (``--strategy``): how ranks combine gradients. One module each.

=============  ===============================================  ======================
name           what happens each step                           good for
=============  ===============================================  ======================
allreduce      every rank: local gradient -> one Allreduce of   the default; scales
(default)      [gradient | loss | rows] -> same update on all   with a flat gradient
=============  ===============================================  ======================

Later issues add the rank-0 parameter server (``ps-sync``, ``ps-async``) and
``local-sgd`` behind the same :class:`~mpigd.strategies.base.Strategy` interface.
"""

from __future__ import annotations

from mpigd.errors import ConfigError
from mpigd.strategies.allreduce import AllreduceStrategy
from mpigd.strategies.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {AllreduceStrategy.name: AllreduceStrategy}
DEFAULT_STRATEGY = "allreduce"


def create_strategy(name: str, ranks, objective, timer, config) -> Strategy:
    """Build strategy ``name`` (see the table above) for this rank."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](ranks, objective, timer, config)


__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "Strategy", "create_strategy"]
