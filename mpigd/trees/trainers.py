"""The "optimisers" of the tree models: what one epoch adds to the ensemble. Every rank.

A tree model has no parameter vector to step; its epoch grows trees instead, and the
training loop drives it exactly as it drives an optimiser (``step``, ``stop_reason``,
``epoch_fields``, ``state_dict``). The strategy (:mod:`mpigd.strategies.histograms`)
passes itself to :meth:`step` as the grower's exchange.

- :class:`ForestTrainer` (``--model forest``): one tree an epoch, grown from Poisson(1)
  bagging weights drawn per (seed, tree, global row id), each node trying
  ``--features-per-node`` features drawn per (seed, tree, node)
  (:func:`mpigd.trees.sampling.node_features`): the forest does not
  depend on the number of ranks. Leaves hold class shares (Gini or entropy) or the mean
  target (variance). Predictions average the trees.
- :class:`BoostingTrainer` (``--model gbt``): one round an epoch, a tree per output column
  (one, or one per class), grown from the loss's gradient and Hessian
  (:mod:`mpigd.trees.losses`) at the current raw output, with the rows of
  ``--subsample`` (drawn per (seed, round, global row id)) and the features of
  ``--colsample`` (per seed, round and class); leaves hold ``-lr G / (H + l2)``.
  ``--early-stop K`` stops once K rounds passed without a lower test loss.

Both keep the raw output of their training rows (``self.raw``), extended by each new
tree's outputs: each leaf's values added to the rows the grower left in it
(:func:`kernels.boosting.add_leaf_values`), the rows a tree did not grow from (out of
bag, not in the subsample) by a prediction pass over theirs alone. After a resume it is recomputed
from the restored trees by prediction, adding them in the same order, so it is bit for
bit what the uninterrupted run had (a row's leaf is the same either way: ``code <= bin``
exactly when ``x <= threshold``). Boosting's epoch loss comes from the pass that also
computes the next round's gradients (:mod:`kernels.boosting`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels import boosting as boosting_kernels
from kernels import trees as tree_kernels
from mpigd.trees import exact, losses, sampling
from mpigd.trees import split as splits
from mpigd.trees.grower import Grower, GrowthLimits, TreeJob


@dataclass
class TreeObjective:
    """What a tree model fits on this rank's rows, as the loop and the set-up see it:
    ``sample_weight`` (n,) (``--class-weight balanced``; None: every row 1) and
    ``full_passes``, the passes over all training rows for the training loss so far."""

    sample_weight: np.ndarray | None = None
    full_passes: int = 0


class _Trainer:
    """What both trainers share: the rows, the grower, the training raw output."""

    #: Optimiser state arrays (the loop's resume maps them); a trainer keeps scalars only.
    STATE_ARRAYS: tuple[str, ...] = ()

    def __init__(self, config, ensemble, X, y, first_row: int, codes, bins, objective,
                 timer, test=None) -> None:  # fmt: skip
        self.config, self.ensemble, self.X, self.y = config, ensemble, X, y
        self.objective, self.timer, self.test = objective, timer, test
        self.ids = first_row + np.arange(X.shape[0], dtype=np.int64)
        self.codes, self.bins = codes, bins
        self.n_features = X.shape[1]
        self.task = ensemble.task
        self.stop_reason: str | None = None
        self.grower: Grower | None = None
        self.raw = np.zeros((X.shape[0], ensemble.width))
        self._raw_trees = 0  # trees whose output self.raw holds

    def attach(self, exchange, limits: GrowthLimits, ranges=None) -> None:
        """Bind the strategy that combines the histograms (it needs the trainer too);
        ``ranges``: the bins' value ranges, for mid-gap thresholds (see the Grower)."""
        self.grower = Grower(self.codes, self.bins, exchange, limits, self.timer, ranges)

    def warm_up(self) -> None:
        """Compile the tree kernels on a few rows (no MPI)."""
        rows = np.arange(min(2, self.codes.shape[0]), dtype=np.int64)
        stats = np.ones((self.codes.shape[0], 2))
        out = np.empty((self.codes.shape[1], 1, self.grower.n_bins, 2))
        tree_kernels.histograms(self.codes, stats, rows, np.array([0, len(rows)]), out)
        order = rows.copy()
        tree_kernels.partition(self.codes, order, np.array([0, len(rows)]), np.zeros(1, np.int64),
                               np.zeros(1, np.int64), np.empty(1, np.int64))  # fmt: skip
        self.ensemble.raw_output(self.X[:1])

    def _sync_raw(self) -> None:
        """Extend the training raw output by the epochs' trees added since (all of them,
        from ``base_score``, after a resume), an epoch's trees at a time, so that each
        row's sum is added up in the same order either way."""
        per_epoch = self.ensemble.width if self.ensemble.name == "gbt" else 1
        if self._raw_trees == 0:
            self.raw[:] = self.ensemble.base_score
        for first in range(self._raw_trees, self.ensemble.n_trees, per_epoch):
            self.ensemble.raw_output(self.X, first, first + per_epoch, out=self.raw)
        self._raw_trees = self.ensemble.n_trees

    def _add_trees(self, grown_trees, columns, grew_from) -> None:
        """Add one epoch's trees (``columns``: each one's first output column) to the
        ensemble and to ``self.raw`` (in sync before): each leaf's values to the rows the
        grower left in it, and the rows the trees did not grow from (``grew_from``,
        bool (n,): out of bag, or not in the subsample) by a prediction pass over theirs."""
        first = self.ensemble.n_trees
        for column, grown in zip(columns, grown_trees, strict=True):
            self.ensemble.add_tree(grown.arrays, column)
            leaf = grown.arrays["feature"] < 0
            boosting_kernels.add_leaf_values(self.raw, column, grown.order, grown.segments,
                                             leaf, grown.arrays["value"])  # fmt: skip
        others = np.flatnonzero(~grew_from)
        if len(others):
            out = self.raw[others]
            self.ensemble.raw_output(self.X[others], first, self.ensemble.n_trees, out=out)
            self.raw[others] = out
        self._raw_trees = self.ensemble.n_trees

    def train_loss(self, exchange) -> float:
        """Collective: the mean (class-weighted) loss over all training rows."""
        self._sync_raw()
        weight = self.objective.sample_weight
        row_losses = self.ensemble.row_losses(self.raw, self.y)
        if weight is not None:
            local = np.array([np.sum(weight * row_losses), np.sum(weight)])
        else:
            local = np.array([np.sum(row_losses), float(len(row_losses))])
        total = exchange.sum(local)
        self.objective.full_passes += 1
        return float(total[0] / total[1])

    def _exact(self, stats_list: list, exchange) -> None:
        """Round every job's statistics onto the exact grid (one small Allreduce)."""
        sums = np.array([np.abs(stats).sum(axis=0) for stats in stats_list])
        q = exact.exponents(exchange.sum(sums).max(axis=0))
        for stats in stats_list:
            exact.round_to_grid(stats, q)

    def epoch_fields(self) -> dict:
        """The ensemble's size so far, for the metrics line."""
        a = self.ensemble.arrays()
        return {"trees": self.ensemble.n_trees,
                "leaves": int(np.count_nonzero(a["feature"] < 0))}  # fmt: skip

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


class ForestTrainer(_Trainer):
    """``--model forest``: one bagged tree an epoch (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.criterion_name = "variance" if self.task == "regression" else config.criterion
        self.per_node = features_per_node(config.features_per_node, self.n_features, self.task)

    def limits(self) -> GrowthLimits:
        config = self.config
        return GrowthLimits(config.max_depth, config.max_leaves,
                            splits.criterion(self.criterion_name),
                            splits.Limits(min_rows_leaf=config.min_rows_leaf))  # fmt: skip

    def step(self, exchange) -> None:
        """Collective: grow the next tree and add it to the forest."""
        tree = self.ensemble.n_trees
        seed = self.config.seed
        if self.config.bootstrap:
            u = sampling.uniform(seed, sampling.bagging_stream(tree), self.ids)
            draws = sampling.poisson1(u).astype(np.float64)
        else:
            draws = np.ones(len(self.ids))
        weight = draws if self.objective.sample_weight is None else (
            draws * self.objective.sample_weight)  # fmt: skip
        if self.task == "regression":
            stats = np.column_stack([draws, weight, weight * self.y, weight * self.y**2])
        else:
            classes = self.ensemble.n_classes
            stats = np.zeros((len(self.y), 1 + classes))
            stats[:, 0] = draws
            stats[np.arange(len(self.y)), 1 + self.y] = weight
        self._exact([stats], exchange)
        d, k = self.n_features, self.per_node

        def allowed(node_ids: np.ndarray):
            return None if k == d else sampling.node_features(seed, tree, node_ids, d, k)

        job = TreeJob(stats, np.flatnonzero(draws > 0).astype(np.int64), allowed,
                      node_features=k < d)  # fmt: skip
        self._sync_raw()
        self._add_trees(self.grower.grow([job]), [0], draws > 0)


@dataclass
class _Round:
    """A boosting round prepared at an ensemble of ``trees`` trees: the training
    ``loss`` there (all ranks' rows), this rank's rounded ``stats`` (W, n, 3) and their
    ``totals`` (W, 3), and which rows take part (bool (n,))."""

    trees: int
    loss: float
    stats: np.ndarray
    totals: np.ndarray
    taking_part: np.ndarray


class BoostingTrainer(_Trainer):
    """``--model gbt``: one boosting round an epoch (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.best_loss, self.best_round = math.inf, 0
        self._next: _Round | None = None
        self._stats_buffer: np.ndarray | None = None  # the rounds' stats, (W, n, 3)

    def limits(self) -> GrowthLimits:
        config = self.config
        limits = splits.Limits(min_rows_leaf=config.min_rows_leaf,
                               min_hessian_leaf=config.min_hessian_leaf, l2=config.l2)  # fmt: skip
        return GrowthLimits(config.max_depth, config.max_leaves, splits.criterion("gbt"), limits,
                            lr=config.lr)  # fmt: skip

    def start(self, exchange) -> None:
        """Collective: the starting raw output, the loss's best constant over all rows
        (from exact sums, so the same for every rank count)."""
        weight = self.objective.sample_weight
        w = np.ones(len(self.y)) if weight is None else weight
        if self.task == "regression":
            sums = np.column_stack([w, w * self.y])
        else:
            sums = np.zeros((len(self.y), self.ensemble.n_classes))
            sums[np.arange(len(self.y)), self.y] = w
        self._exact([sums], exchange)
        self.ensemble.base_score = losses.base_score(self.task, exchange.sum(sums.sum(axis=0)))

    def train_loss(self, exchange) -> float:
        """Collective: the mean (class-weighted) loss over all training rows, from the
        pass that also prepares the next round's statistics (:meth:`_prepare`)."""
        return self._prepare(exchange).loss

    def _prepare(self, exchange) -> _Round:
        """Collective (once per ensemble size): at the current raw output, the next
        round's rounded statistics and the training loss, from one pass over the rows
        (:func:`kernels.boosting.gradient_stats`) and one small Allreduce of the loss,
        the weights and the sums of ``|stats|`` that fix the exact grid."""
        if self._next is not None and self._next.trees == self.ensemble.n_trees:
            return self._next
        if self.ensemble.n_trees == 0:  # once: the next call at 0 trees returns above
            self.start(exchange)
        self._sync_raw()
        config, width = self.config, self.ensemble.width
        round_ = self.ensemble.n_trees // width
        taking_part = np.ones(len(self.ids), bool)
        if config.subsample < 1:
            u = sampling.uniform(config.seed, sampling.subsample_stream(round_), self.ids)
            taking_part = u < config.subsample
        weight = self.objective.sample_weight
        weight = np.ones(len(self.ids)) if weight is None else weight
        if self._stats_buffer is None:  # the last round's stats are spent: reuse their pages
            self._stats_buffer = np.empty((width, len(self.ids), 3))
        stats, abs_sums, loss_sum, weight_sum = boosting_kernels.gradient_stats(
            self.task,
            self.raw,
            self.y,
            weight,
            taking_part.astype(np.float64),
            out=self._stats_buffer,
        )
        total = exchange.sum(np.concatenate([[loss_sum, weight_sum], abs_sums.ravel()]))
        q = exact.exponents(total[2:].reshape(abs_sums.shape).max(axis=0))
        totals = boosting_kernels.round_to_grid(stats, q)
        self.objective.full_passes += 1
        self._next = _Round(self.ensemble.n_trees, float(total[0] / total[1]), stats, totals,
                            taking_part)  # fmt: skip
        return self._next

    def step(self, exchange) -> None:
        """Collective: grow the next round's trees (one per output column) and add them;
        the training raw output follows from the rows' leaves (the rows not taking part:
        a prediction pass over theirs alone)."""
        prepared = self._prepare(exchange)
        self._next = None
        width = self.ensemble.width
        round_ = self.ensemble.n_trees // width
        rows = np.flatnonzero(prepared.taking_part).astype(np.int64)
        jobs = [TreeJob(prepared.stats[k], rows, self._columns(round_, k), prepared.totals[k])
                for k in range(width)]  # fmt: skip
        self._add_trees(self.grower.grow(jobs), range(width), prepared.taking_part)
        self._watch_test_loss(exchange, round_ + 1)

    def _columns(self, round_: int, k: int):
        """The features tree ``k`` of round ``round_`` may split on (``--colsample``)."""
        d, fraction = self.n_features, self.config.colsample
        if fraction >= 1:
            return lambda node_ids: None
        mask = np.zeros(d, bool)
        chosen = np.random.default_rng([self.config.seed, 1, round_, k]).choice(
            d, max(1, round(fraction * d)), replace=False)  # fmt: skip
        mask[chosen] = True
        return lambda node_ids: np.broadcast_to(mask, (len(node_ids), d))

    def _watch_test_loss(self, exchange, round_: int) -> None:
        """Collective (with ``--early-stop K``): the test loss after this round; stop
        once K rounds passed since the lowest."""
        patience = self.config.early_stop
        if not patience or self.test is None:
            return
        test_X, test_y = self.test
        raw = self.ensemble.raw_output(test_X)
        local = np.array([np.sum(self.ensemble.row_losses(raw, test_y)), float(len(test_y))])
        total = exchange.sum(local)
        loss = total[0] / total[1]
        if loss < self.best_loss:
            self.best_loss, self.best_round = loss, round_
        elif round_ - self.best_round >= patience:
            self.stop_reason = (
                f"--early-stop {patience}: no lower test loss in {patience} rounds after "
                f"round {self.best_round} ({self.best_loss:.6g})"
            )

    def epoch_fields(self) -> dict:
        fields = super().epoch_fields()
        if self.config.early_stop:
            fields["best_round"] = self.best_round
        return fields

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_round": self.best_round}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss = float(state.get("best_loss", math.inf))
        self.best_round = int(state.get("best_round", 0))


def features_per_node(setting: str, d: int, task: str) -> int:
    """How many features a forest's node tries: ``--features-per-node`` (auto: sqrt for
    classification, all for regression, as scikit-learn's defaults), at least 1."""
    if setting == "auto":
        setting = "all" if task == "regression" else "sqrt"
    if setting == "all":
        return d
    if setting == "sqrt":
        return max(1, int(math.sqrt(d)))
    if setting == "log2":
        return max(1, int(math.log2(d)))
    return max(1, int(float(setting) * d))


#: The trainer of each tree model.
TRAINERS = {"forest": ForestTrainer, "gbt": BoostingTrainer}
