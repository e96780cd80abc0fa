"""Layouts: how a run's ranks divide the work, chosen by the config from a registry.

A layout decides which rows each rank holds, which model each rank builds (whole or
a part of it), which ranks share parameters, and which strategy combines their work.
The builder (:mod:`mpigd.run.builder`) asks the layout and never names one; the loop
never sees it at all.

==================  =====================================  ==============================
layout              when                                   what each rank holds
==================  =====================================  ==============================
``data-parallel``   ``--model-parallel 1`` (default)       the whole model; its rows, as
                                                           ``--strategy`` divides them
``tensor-parallel`` ``--model-parallel M`` > 1             a block of every MLP layer
                                                           (:mod:`mpigd.models.mlp_split`)
                                                           and its model group's rows
``sharded-servers`` ``ps-sync``/``ps-async`` with          servers 0..K-1: a key range of
                    ``--servers K`` > 1                    the flat vector; workers: rows
                                                           (:mod:`mpigd.strategies.sharded`)
``tree-ensemble``   ``--model forest`` or ``gbt``          the whole ensemble; its rows as
                                                           bin ids (:mod:`mpigd.trees`)
==================  =====================================  ==============================

A layout's life: :meth:`Layout.check` (the config fits ``size`` ranks; ConfigError
otherwise), :meth:`Layout.data_share`, :meth:`Layout.connect` (collective: its
sub-communicators), :meth:`Layout.prepare` (collective: what it computes from all
ranks' rows), then :meth:`Layout.build` (no MPI; by default the builder's parts from
:meth:`Layout.model` and :meth:`Layout.strategy`). To
add one, subclass :class:`Layout` and add it to :data:`LAYOUTS`;
:class:`DataParallel` is the shortest example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpigd import comm as mpi
from mpigd.errors import ConfigError
from mpigd.models import TREE_MODELS, create_model
from mpigd.models.mlp_split import SplitMLP
from mpigd.run.builder import build_parts
from mpigd.strategies import sharded, strategy_class
from mpigd.strategies.histograms import HISTOGRAM_STRATEGIES, AllreduceHistograms
from mpigd.strategies.sharded_async import ShardedAsync
from mpigd.strategies.sharded_sync import ShardedSync
from mpigd.strategies.tensor_parallel import (
    GroupOps,
    TensorParallelAllreduce,
    make_grid,
    model_group_share,
)
from mpigd.trees.binning import fit_bins, value_ranges
from mpigd.trees.ensemble import TreeEnsemble
from mpigd.trees.trainers import TRAINERS, TreeObjective


class Layout:
    """Base class: the data-parallel defaults (see the module docstring)."""

    name: str

    def __init__(self, config) -> None:
        self.config = config

    @staticmethod
    def applies(config) -> bool:
        """Whether this layout is the one ``config`` asks for."""
        raise NotImplementedError

    def check(self, size: int) -> None:
        """ConfigError unless the config can run on ``size`` ranks in this layout."""

    def data_share(self, rank: int, size: int) -> tuple[int, int]:
        """``(part, parts)``: rank ``rank`` holds part ``part`` of ``parts`` equal row
        ranges (``(0, 0)``: no rows)."""
        raise NotImplementedError

    def connect(self, ranks, timer) -> None:
        """Collective: make the layout's sub-communicators (none by default)."""

    def prepare(self, ranks, data, timer) -> None:
        """Collective: what the layout computes from every rank's rows (``data``, the
        :class:`~mpigd.run.loop.RunData`) before the parts are built; nothing by
        default (a tree ensemble's quantile bins)."""

    def build(self, ranks, backend, data, timer, hooks):
        """This rank's parts (no MPI): the model, objective, strategy, optimiser and
        parameters of :func:`mpigd.run.builder.build_parts`."""
        return build_parts(self.config, self, ranks, backend, data.info, data.rows, timer,
                           hooks)  # fmt: skip

    def penalty_sum(self, value: float) -> float:
        """This rank's share of the L2 term summed over the ranks sharing parameters."""
        return value

    def model(self, backend, info, rank: int):
        """This rank's model (no MPI)."""
        config = self.config
        return create_model(
            config.model, backend, info.n_features, info.task, info.n_classes,
            svm_loss=config.svm_loss, hidden=config.hidden, dropout=config.dropout,
            dropout_seed=(config.seed, rank),
        )  # fmt: skip

    def strategy(self, ranks, objective, timer, hooks):
        """This rank's strategy (no MPI until it runs)."""
        raise NotImplementedError


class DataParallel(Layout):
    """Every rank the whole model; ``--strategy`` combines the ranks' gradients."""

    name = "data-parallel"

    @staticmethod
    def applies(config) -> bool:
        return (config.model_parallel == 1 and not ShardedServers.applies(config)
                and not TreeEnsembleLayout.applies(config))  # fmt: skip

    def __init__(self, config) -> None:
        super().__init__(config)
        self.strategy_class = strategy_class(config.strategy)
        self.options = config.subset(self.strategy_class.OPTIONS)

    def check(self, size: int) -> None:
        self.strategy_class.check(self.config, size)

    def data_share(self, rank: int, size: int) -> tuple[int, int]:
        return self.strategy_class.data_share(rank, size, self.options)

    def strategy(self, ranks, objective, timer, hooks):
        return self.strategy_class(ranks, objective, timer, self.options, hooks)


class TensorParallel(Layout):
    """The MLP split over model groups of M ranks, data-parallel across the groups."""

    name = "tensor-parallel"

    @staticmethod
    def applies(config) -> bool:
        return config.model_parallel > 1 and not TreeEnsembleLayout.applies(config)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.parts = config.model_parallel
        self.grid = self.ops = None

    def check(self, size: int) -> None:
        config, parts = self.config, self.parts
        if config.model != "mlp" or config.strategy != "allreduce":
            raise ConfigError("--model-parallel splits the mlp under --strategy allreduce only")
        if size % parts:
            raise ConfigError(
                f"--model-parallel {parts} needs a multiple of {parts} ranks, not {size}"
            )
        if config.optimizer == "lbfgs" or config.tol:
            raise ConfigError("--model-parallel: lbfgs and --tol need whole-vector norms; use "
                              "gd, sgd, momentum or adam without --tol")  # fmt: skip
        if min(config.hidden) < parts:
            raise ConfigError(
                f"--model-parallel {parts}: every hidden layer needs >= {parts} units"
            )

    def data_share(self, rank: int, size: int) -> tuple[int, int]:
        return model_group_share(rank, size, self.parts)

    def connect(self, ranks, timer) -> None:
        self.grid = make_grid(ranks.comm, self.parts)
        self.ops = GroupOps(self.grid, timer)

    def penalty_sum(self, value: float) -> float:
        return self.ops.total(value)

    def model(self, backend, info, rank: int):
        config = self.config
        return SplitMLP(
            backend, info.n_features, info.n_classes, config.hidden, config.dropout,
            (config.seed, rank), self.parts, self.grid.part, self.ops,
        )  # fmt: skip

    def strategy(self, ranks, objective, timer, hooks):
        return TensorParallelAllreduce(ranks, objective, timer, self.config.subset(()), hooks,
                                       self.grid)  # fmt: skip


class ShardedServers(Layout):
    """``ps-sync``/``ps-async`` over K key-range servers (``--servers K``; K = 1 is the
    data-parallel layout's single server). Built directly, it runs K = 1 too."""

    name = "sharded-servers"
    STRATEGIES = {cls.name: cls for cls in (ShardedSync, ShardedAsync)}

    @staticmethod
    def applies(config) -> bool:
        return (config.model_parallel == 1 and config.servers > 1
                and config.strategy in ShardedServers.STRATEGIES)  # fmt: skip

    def __init__(self, config) -> None:
        super().__init__(config)
        self.strategy_class = self.STRATEGIES[config.strategy]

    def check(self, size: int) -> None:
        sharded.check(self.config, size)

    def data_share(self, rank: int, size: int) -> tuple[int, int]:
        return sharded.data_share(rank, size, self.config.servers)

    def model(self, backend, info, rank: int):
        config = self.config

        def make_model(n_features: int):
            return create_model(config.model, backend, n_features, info.task, info.n_classes,
                                svm_loss=config.svm_loss)  # fmt: skip

        ranges = sharded.KeyRanges.split(make_model(info.n_features).n_params, config.servers)
        return sharded.ModelShard(make_model, info.n_features, ranges, rank, info.sparse)

    def strategy(self, ranks, objective, timer, hooks):
        options = self.config.subset(self.strategy_class.OPTIONS)
        return self.strategy_class(ranks, objective, timer, options, hooks)


@dataclass
class TreeParts:
    """What one rank trains a tree ensemble with, under the names the loop reads
    (:class:`~mpigd.run.builder.RunParts`): the ensemble as ``model``; the trainer
    (:mod:`mpigd.trees.trainers`), which grows each epoch's trees, as ``optimizer``; the
    histogram strategy; and an empty ``params``: the trees are the model's saved
    arrays (:meth:`~mpigd.models.Model.saved_arrays`), not a flat vector."""

    model: TreeEnsemble
    objective: TreeObjective
    strategy: AllreduceHistograms
    optimizer: object
    params: np.ndarray


class TreeEnsembleLayout(Layout):
    """``--model forest`` or ``gbt``: every rank its rows' bin ids; the trees grow from
    their histograms, which ``--strategy allreduce`` or ``reduce-scatter`` combines."""

    name = "tree-ensemble"

    @staticmethod
    def applies(config) -> bool:
        return config.model in TREE_MODELS

    def __init__(self, config) -> None:
        super().__init__(config)
        self.bins = self.codes = self.ranges = None

    def check(self, size: int) -> None:
        if self.config.model_parallel > 1:
            raise ConfigError("--model-parallel splits the mlp; a tree ensemble is not split")

    def data_share(self, rank: int, size: int) -> tuple[int, int]:
        return rank, size

    def prepare(self, ranks, data, timer) -> None:
        """Collective: the quantile bins of every feature from a sample of all ranks'
        rows (:func:`mpigd.trees.binning.fit_bins`), this rank's rows as bin ids, and for
        a forest each bin's range of values (:func:`mpigd.trees.binning.value_ranges`)."""
        config, info, rows = self.config, data.info, data.rows

        def dense() -> None:
            if info.sparse:
                raise ConfigError(
                    f"--model {config.model} bins every feature of every row: it needs a "
                    f"dense dataset, and {config.data} is sparse"
                )

        mpi.collectively(ranks.comm, dense)
        with timer.phase("compute"):
            self.bins = fit_bins(ranks.comm, rows.X, rows.start, info.n_rows, config.max_bins,
                                 config.seed)  # fmt: skip
            self.codes = self.bins.codes(rows.X)
            if config.model == "forest":  # thresholds mid-gap, as RandomForest's
                self.ranges = value_ranges(ranks.comm, rows.X, self.codes, self.bins)

    def build(self, ranks, backend, data, timer, hooks):
        del backend, hooks
        config, info, rows = self.config, data.info, data.rows
        ensemble = TreeEnsemble(config.model, info.n_features, info.task, info.n_classes)
        ensemble.bins = self.bins.to_arrays()
        objective = TreeObjective()
        test = (data.test_X, data.test.y) if data.test is not None else None
        trainer = TRAINERS[config.model](config, ensemble, rows.X, rows.y, rows.start, self.codes,
                                         self.bins, objective, timer, test)  # fmt: skip
        strategy = HISTOGRAM_STRATEGIES[config.strategy](ranks, trainer, timer)
        trainer.attach(strategy, trainer.limits(), self.ranges)
        return TreeParts(ensemble, objective, strategy, trainer, np.zeros(0))


#: Every layout, by name.
LAYOUTS: dict[str, type[Layout]] = {
    cls.name: cls for cls in (DataParallel, TensorParallel, ShardedServers, TreeEnsembleLayout)
}


def layout_for(config) -> Layout:
    """The layout ``config`` asks for (exactly one applies)."""
    (chosen,) = [cls for cls in LAYOUTS.values() if cls.applies(config)]
    return chosen(config)
