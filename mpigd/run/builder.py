"""The builder: a run's parts from its config, its layout and this rank's rows.

Pure: no MPI and no files. Everything that needs the ranks together (loading, the
layout's communicators, class counts) happens before or after it, in
:mod:`mpigd.run.setup`; benchmarks call :func:`build_parts` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpigd.objective import LocalObjective
from mpigd.optim import Optimizer, Schedule, create_optimizer
from mpigd.run.batching import steps_per_epoch
from mpigd.strategies import Strategy


@dataclass
class RunParts:
    """What one rank trains with. ``params`` is this rank's flat parameter vector (the
    whole model, or its part of a split one); every other part works on it."""

    model: object
    objective: LocalObjective
    strategy: Strategy
    optimizer: Optimizer
    params: np.ndarray


def build_parts(config, layout, ranks, backend, info, rows, timer, hooks) -> RunParts:
    """Model, local objective, strategy, optimiser and starting parameters of this rank.

    Parameters
    ----------
    config : the run's TrainConfig.  layout : its :class:`~mpigd.run.layouts.Layout`,
        already connected.  ranks : the ranks training together (RankInfo).
    backend : the kernel backend module.  info : the training set's DatasetInfo.
    rows : this rank's LocalRows (moved to the backend's device here, once).
    timer : the run's PhaseTimer.  hooks : the run's Hooks.

    Raises ConfigError when the pieces do not fit (a model for another task, a
    full-batch optimiser with ``--batch-size``).
    """
    model = layout.model(backend, info, ranks.rank)
    objective = LocalObjective(
        model, backend.to_device(rows.X), backend.to_device(model.targets(rows.y)), None,
        config.l2, timer, config.accumulate, penalty_sum=layout.penalty_sum,
    )  # fmt: skip
    strategy = layout.strategy(ranks, objective, timer, hooks)
    steps = steps_per_epoch(info.n_rows, config.batch_size)
    schedule = Schedule(
        config.lr,
        config.lr_schedule,
        steps_per_epoch=steps,
        total_steps=steps * config.epochs,
        step_epochs=config.lr_step_epochs,
        gamma=config.lr_gamma,
    )
    optimizer = create_optimizer(config.optimizer, model.n_params, schedule, config)
    params = model.init_params(np.random.default_rng(config.seed))
    return RunParts(model, objective, strategy, optimizer, params)
