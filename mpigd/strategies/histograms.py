"""The strategies of the tree ensembles: how the ranks combine histograms. Every rank.

A tree grows level by level (:mod:`mpigd.trees.grower`); per level each rank builds the
histograms of its own rows, and the strategy sums them and agrees on every node's best
split, so that each rank takes the same decisions:

====================  ============================================  ===================
``--strategy``        per level                                     each rank receives
====================  ============================================  ===================
``allreduce``         one Allreduce of all the level's histograms   all of them
                      (as XGBoost's rabit); every rank searches     (d features)
                      every feature
``reduce-scatter``    one Reduce-Scatter by feature range (as       its d / P features;
                      LightGBM's data-parallel learner); each rank  then one record per
                      searches its features, then one Allgather     node and rank
                      of the best split per node and rank
====================  ============================================  ===================

Both give the same trees bit for bit (the statistics are exact, :mod:`mpigd.trees.exact`).
For the training loop each is a strategy like the gradient ones: an epoch is one tree
(forest) or one boosting round, which the "optimiser" of a tree model grows
(:mod:`mpigd.trees.trainers`) through the strategy's :meth:`reduce`,
:meth:`best_splits` and :meth:`sum`; the stop vote travels in one small Allreduce at
the end of each epoch. ``epoch_fields`` adds to the metrics line, as means over the
ranks: ``histogram_s`` (the histogram kernel), ``split_s`` (choosing the splits, with
the split search's collective) and ``histogram_mib`` (the histograms this rank
contributed to collectives in the epoch; an Allreduce moves about twice that per rank,
a Reduce-Scatter about once).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd.comm import RankInfo, mean_and_max, sum_across
from mpigd.evaluate import evaluate
from mpigd.strategies import control
from mpigd.trees import split as splits


class AllreduceHistograms:
    """``--strategy allreduce`` for a tree ensemble: every rank gets every histogram."""

    name = "allreduce"
    steps_in_lockstep = True
    replicated = True

    def __init__(self, ranks: RankInfo, trainer, timer) -> None:
        self.ranks, self.comm, self.trainer, self.timer = ranks, ranks.comm, trainer, timer
        self.stop_agreed = False
        self.word = np.zeros(control.SIZE)
        self._bytes = 0

    @classmethod
    def check(cls, config, size: int) -> None:
        """Any number of ranks will do."""

    # what the grower asks of the strategy
    @property
    def features(self) -> slice:
        """The features whose reduced histograms this rank receives."""
        return slice(None)

    def reduce(self, local: np.ndarray) -> np.ndarray:
        """Collective: the sum over ranks of ``local`` (d, K, B, S) histograms."""
        self._bytes += local.nbytes
        with self.timer.phase("comm", "Allreduce", local.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        return local

    def best_splits(self, hist, totals, masks, criterion, limits):
        """Each node's best split over all features: ``(gain, feature, bin, left,
        upper)``, ``upper`` the last bin of its gap (:func:`mpigd.trees.split.best_splits`)."""
        return splits.best_splits(hist, totals, masks, criterion, limits, with_gaps=True)

    def reduce_pairs(self, local: np.ndarray, pair_feature: np.ndarray):
        """Collective: the sum over ranks of ``local`` (m, B, S), histograms of (node,
        feature) pairs ordered by feature; with the pairs this rank received (all)."""
        del pair_feature
        return self.reduce(local), slice(None)

    def best_pair_splits(self, cells, pair_node, pair_feature, totals, criterion, limits):
        """Each node's best split over its pairs: ``(gain, feature, bin, left, upper)``."""
        return splits.best_pair_splits(cells, pair_node, pair_feature, totals, criterion,
                                       limits, with_gaps=True)  # fmt: skip

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Collective: element-wise sum over the ranks (in place; returned)."""
        with self.timer.phase("comm", "Allreduce", values.nbytes):
            return sum_across(self.comm, values)

    sum_over_data = sum

    # what the training loop asks of a strategy (mpigd.strategies.base.Strategy)
    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        """Grow this epoch's tree(s), then agree on a stop; one step."""
        del params, batches
        before_step(0)
        optimizer.step(self)
        control.fill(self.word)
        with self.timer.phase("comm", "Allreduce", self.word.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, self.word, op=MPI.SUM)
        self.stop_agreed = control.settle(self.word) or self.stop_agreed
        return 1

    def agree_stop_reason(self, optimizer) -> None:
        """The trainer's stop reason is already the same everywhere (replicated)."""

    def full_closure(self, params, grad_out) -> float:
        """Collective: the training loss over all rows (a tree model has no gradient)."""
        del params, grad_out
        return control.check_finite(self.trainer.train_loss(self))

    full_loss = full_closure

    def evaluate(self, X, y, params) -> dict:
        """Collective: the ensemble's metrics over every rank's rows ``X``, ``y``."""
        return evaluate(self.trainer.ensemble, X, y, params, self.ranks)

    def warm_up(self, params, test_X) -> None:
        """Compile the tree kernels (no MPI)."""
        del params, test_X
        self.trainer.warm_up()

    def mean_and_max(self, values):
        return mean_and_max(self.comm, values)

    def full_vector(self, local):
        return local

    def local_vector(self, full):
        return np.asarray(full)

    def epoch_fields(self) -> dict:
        """Collective: the epoch's histogram and split seconds and histogram MiB, each
        the mean over the ranks; then restarted."""
        grower = self.trainer.grower
        values = np.array([grower.histogram_s, grower.split_s, self._bytes / 2**20])
        mean, _ = mean_and_max(self.comm, values)
        grower.histogram_s = grower.split_s = 0.0
        self._bytes = 0
        return dict(zip(("histogram_s", "split_s", "histogram_mib"), mean.tolist(), strict=True))


class ReduceScatterHistograms(AllreduceHistograms):
    """``--strategy reduce-scatter``: rank p receives the histograms of its range of
    features only (equal ranges, the first ranks one feature more), searches those, and
    the ranks agree on each node's best with one Allgather of small records."""

    name = "reduce-scatter"

    def __init__(self, ranks: RankInfo, trainer, timer) -> None:
        super().__init__(ranks, trainer, timer)
        d = trainer.n_features
        bounds = np.linspace(0, d, ranks.size + 1)
        sizes = np.diff(np.floor(bounds).astype(np.int64))
        self.first = np.concatenate([[0], np.cumsum(sizes)])
        self.sizes = sizes

    @property
    def features(self) -> slice:
        p = self.ranks.rank
        return slice(int(self.first[p]), int(self.first[p + 1]))

    def reduce(self, local: np.ndarray) -> np.ndarray:
        """Collective: this rank's feature range of the sum over ranks of ``local``."""
        return self._scatter_sum(local, self.sizes)

    def best_splits(self, hist, totals, masks, criterion, limits):
        """Each node's best split: this rank's over its features, then agreed
        (:meth:`_agree`)."""
        mine = self.features
        gain, feature, bin_, left, upper = splits.best_splits(
            hist,
            totals,
            masks[:, mine],
            criterion,
            limits,
            feature_offset=mine.start,
            with_gaps=True,
        )
        return self._agree(gain, feature, bin_, left, upper)

    def reduce_pairs(self, local: np.ndarray, pair_feature: np.ndarray):
        """Collective: this rank's feature range of the sum over ranks of ``local`` (m,
        B, S) pair histograms, ordered by feature so that the range is one block."""
        bounds = np.searchsorted(pair_feature, self.first)
        mine = slice(int(bounds[self.ranks.rank]), int(bounds[self.ranks.rank + 1]))
        return self._scatter_sum(local, np.diff(bounds)), mine

    def _scatter_sum(self, local: np.ndarray, sizes) -> np.ndarray:
        """Collective: rank p's block of the sum over ranks of ``local``, its
        ``sizes[p]`` entries along axis 0 (the blocks in rank order)."""
        per_entry = int(np.prod(local.shape[1:]))
        counts = [int(size) * per_entry for size in sizes]
        own = np.empty((int(sizes[self.ranks.rank]),) + local.shape[1:])
        self._bytes += local.nbytes
        with self.timer.phase("comm", "Reduce_scatter", local.nbytes):
            self.comm.Reduce_scatter(local, own, recvcounts=counts, op=MPI.SUM)
        return own

    def best_pair_splits(self, cells, pair_node, pair_feature, totals, criterion, limits):
        """Each node's best split: this rank's over its pairs, then agreed as
        :meth:`best_splits`."""
        return self._agree(*splits.best_pair_splits(cells, pair_node, pair_feature, totals,
                                                    criterion, limits, with_gaps=True))  # fmt: skip

    def _agree(self, gain, feature, bin_, left, upper):
        """Collective: per node the best of every rank's split (ties: the smaller
        feature), from one Allgather of ``[gain, feature, bin, gap end, left stats]``."""
        record = np.column_stack([gain, feature, bin_, upper, left]).astype(np.float64)
        every = np.empty((self.ranks.size,) + record.shape)
        with self.timer.phase("comm", "Allgather", record.nbytes):
            self.comm.Allgather(record, every)
        gains, features = every[:, :, 0], every[:, :, 1]
        # the best gain, then the smallest feature: order ranks by (-gain, feature)
        key = np.where(np.isfinite(gains), -gains, np.inf)
        best = np.lexsort((np.where(features < 0, np.inf, features), key), axis=0)[0]
        chosen = every[best, np.arange(record.shape[0])]
        return (chosen[:, 0], chosen[:, 1].astype(np.int64), chosen[:, 2].astype(np.int64),
                chosen[:, 4:], chosen[:, 3].astype(np.int64))  # fmt: skip


#: The histogram strategies by ``--strategy`` name.
HISTOGRAM_STRATEGIES = {cls.name: cls for cls in (AllreduceHistograms, ReduceScatterHistograms)}
