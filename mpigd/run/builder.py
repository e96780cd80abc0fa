"""The builder: a run's parts from its config, its layout and this rank's rows.

Pure: no MPI and no files. Everything that needs the ranks together (loading, the
layout's communicators, class counts) happens before or after it, in
:mod:`mpigd.run.setup`; benchmarks call :func:`build_parts` the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mpigd.errors import ConfigError
from mpigd.models import create_model
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
    full-batch optimiser with ``--batch-size``, more ``--accumulate`` micro-batches
    than a step has rows), or when the model or the rows do not fit in memory: an
    allocation sized by the options fails at once (numpy's MemoryError), and that is
    the options' fault, so the message names them.
    """
    _check_accumulate(config, info, rows.X.shape[0])
    size = _whole_model_size(config, backend, info)
    with _memory_for(f"copying this rank's {rows.X.shape[0]:,} training rows to the device",
                     "use more ranks, so that each holds fewer rows"):  # fmt: skip
        X = backend.to_device(rows.X)
    with _memory_for(f"for a model of {size:,} parameters ({_gib(size)} a copy)",
                     _smaller_model(config, info)):  # fmt: skip
        model = layout.model(backend, info, ranks.rank)
        objective = LocalObjective(
            model, X, backend.to_device(model.targets(rows.y)), None, config.l2, timer,
            config.accumulate, penalty_sum=layout.penalty_sum,
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


def _check_accumulate(config, info, n_local: int) -> None:
    """ConfigError when ``--accumulate K`` asks for more micro-batches than any step of
    an epoch gives this rank rows.

    A step takes at most ceil(n_local / S) of this rank's rows (S steps an epoch,
    :func:`~mpigd.run.batching.epoch_batches` spreads the rows evenly), and the
    objective splits them into K micro-batches: with more micro-batches than rows, some
    are empty in every step. They would change nothing but the time a step takes (and a
    K in the billions could not even be listed), so the run is refused rather than K
    quietly lowered, which would record one K and train with another. A rank without
    rows (a parameter server that does not compute) has nothing to split.
    """
    steps = steps_per_epoch(info.n_rows, config.batch_size)
    most = -(-n_local // steps)  # ceil(n_local / steps)
    if 0 < most < config.accumulate:
        if steps == 1:
            has = f"this rank's full batch is {most} rows"
        else:
            has = (f"a step gives this rank at most {most} rows ({n_local} rows over {steps} "
                   "steps an epoch)")  # fmt: skip
        raise ConfigError(
            f"--accumulate {config.accumulate} splits each step's rows into that many "
            f"micro-batches, but {has}, so some would always be empty: use --accumulate "
            f"{most} or less"
        )


def _whole_model_size(config, backend, info) -> int:
    """The length of the whole (unsplit) model's parameter vector; ConfigError, naming
    what sizes it, when no float64 array can be that long.

    Such a size is refused before anything is allocated: numpy would raise a ValueError
    (``array is too big``, ``Maximum allowed dimension exceeded``), not a MemoryError,
    and a split model indexes its part of the whole vector while it is being built.
    """
    size = create_model(config.model, backend, info.n_features, info.task, info.n_classes,
                        svm_loss=config.svm_loss, hidden=config.hidden).full_size  # fmt: skip
    longest = np.iinfo(np.intp).max // np.dtype(np.float64).itemsize
    if size > longest:
        raise ConfigError(
            f"a model of {size:,} parameters is more than an array can hold ({longest:,} "
            f"float64 values); {_smaller_model(config, info)}"
        )
    return size


def _smaller_model(config, info) -> str:
    """What makes the model smaller: the options that size it."""
    if config.model == "mlp":
        hidden = ",".join(map(str, config.hidden))
        split = "over M ranks with --model-parallel M"
        if config.model_parallel > 1:
            split = f"over more ranks than --model-parallel {config.model_parallel}"
        return f"use narrower layers than --hidden {hidden}, or split them {split}"
    classes = f" and {info.n_classes} classes" if info.n_classes else ""
    return (f"--model {config.model} has a parameter per feature{' and class' if classes else ''}: "
            f"--data {config.data} has {info.n_features:,} features{classes}")  # fmt: skip


@contextmanager
def _memory_for(what: str, advice: str):
    """Turn running out of memory inside the block (on the host, or on the GPU: CuPy's
    OutOfMemoryError is a MemoryError) into a ConfigError saying what needed the memory
    and which options would need less."""
    try:
        yield
    except MemoryError as exc:
        raise ConfigError(f"out of memory {what} ({type(exc).__name__}: {exc}); {advice}") from exc


def _gib(n_values: int) -> str:
    """The size of ``n_values`` float64 values, in GiB."""
    return f"{n_values * 8 / 2**30:,.1f} GiB"
