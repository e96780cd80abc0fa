"""Optimisers by name (``--optimizer``). All work on flat float64 vectors via a closure.

==========  =========================================================================
name        what it is, and what it suits
==========  =========================================================================
gd          full-batch gradient descent (no ``--batch-size``)
sgd         mini-batch SGD (full batch when no ``--batch-size``)
momentum    SGD with heavy-ball momentum ``--momentum``; ``--nesterov`` for Nesterov
adam        Adam; robust default for mini-batches
lbfgs       full-batch L-BFGS with a strong-Wolfe line search; fastest to the optimum of
            smooth convex models (what Spark MLlib uses); ``--tol``, ``--lbfgs-memory``
==========  =========================================================================
"""

from __future__ import annotations

from mpigd.errors import ConfigError
from mpigd.optim.base import Closure, Optimizer
from mpigd.optim.first_order import Adam, GradientDescent, Momentum
from mpigd.optim.lbfgs import LBFGS
from mpigd.optim.schedule import SCHEDULES, Schedule

OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "lbfgs")
FULL_BATCH_ONLY = ("gd", "lbfgs")
#: ``--tol`` when not given: L-BFGS stops at a gradient infinity norm of 1e-6; the
#: first-order methods run their epochs.
DEFAULT_TOL = {"lbfgs": 1e-6}


def create_optimizer(name: str, n_params: int, schedule: Schedule, config) -> Optimizer:
    """Build optimiser ``name``; ``config`` supplies momentum, nesterov, tol, lbfgs_memory."""
    full_batch = config.batch_size is None
    tol = config.tol if config.tol is not None else DEFAULT_TOL.get(name, 0.0)
    if name in FULL_BATCH_ONLY and not full_batch:
        raise ConfigError(f"optimizer {name!r} is full-batch; drop --batch-size or use sgd/adam")
    common = {"tol": tol, "full_batch": full_batch}
    if name in ("gd", "sgd"):
        return GradientDescent(n_params, schedule, **common)
    if name == "momentum":
        return Momentum(n_params, schedule, mu=config.momentum, nesterov=config.nesterov, **common)
    if name == "adam":
        return Adam(n_params, schedule, **common)
    if name == "lbfgs":
        return LBFGS(n_params, memory=config.lbfgs_memory, tol=tol)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


__all__ = ["OPTIMIZERS", "SCHEDULES", "Closure", "Optimizer", "Schedule", "create_optimizer"]
