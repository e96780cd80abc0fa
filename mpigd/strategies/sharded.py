"""What the sharded parameter servers (``--servers K`` > 1) share: key ranges, the
worker's batch on pulled weights, collective pulls and pushes, and the base strategy.

Ranks 0..K-1 are servers; server s owns the contiguous key range ``[b_s, b_{s+1})`` of
the flat parameter vector (:class:`KeyRanges`: K nearly equal ranges, the first ones one
key longer when K does not divide the length, as rows are split). The supported models
(linreg, logreg, svm, softmax) keep their intercepts after the weights, so the
intercepts, the only keys that are no column's, belong to server K-1. Ranks K..P-1 are
workers holding the rows; a worker holds no parameters between steps.

For a batch a worker computes the keys it touches (``model.touched_params`` of the
batch's features; every key for dense rows), *pulls* just those weights from the servers
owning them, computes the batch's loss and gradient on the pulled weights alone (the
batch renumbered to its features, :func:`mpigd.features.compact_rows`, with a model of
that many features: :class:`BatchWork`), and *pushes* the gradient at those keys back,
split by key range. What a worker sends and receives per step is O(the batch's
nonzeros), never O(d). A server holds its range of the parameters, of the optimiser
state and of the scratch buffers (the builder sizes them all from :class:`ModelShard`).

The run's whole vector exists only where it must: gathered on rank 0 for checkpoints and
model.h5 (:meth:`ShardedServers.full_vector`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

from mpigd import comm as mpi
from mpigd.errors import ConfigError
from mpigd.evaluate import evaluate
from mpigd.features import batch_features, compact_rows
from mpigd.objective import LocalObjective
from mpigd.strategies import control
from mpigd.strategies.base import Strategy

#: The models whose keys can be sharded: one weight per column (per class), intercepts last.
SHARDABLE_MODELS = ("linreg", "logreg", "svm", "softmax")
#: The most nonzeros a worker's chunk of rows holds in one round of the full loss pass.
PASS_NONZEROS = 1 << 20


@dataclass(frozen=True)
class KeyRanges:
    """The split of ``bounds[-1]`` keys into ``len(bounds) - 1`` contiguous ranges:
    server s owns ``[bounds[s], bounds[s + 1])``."""

    bounds: np.ndarray

    @classmethod
    def split(cls, n_keys: int, servers: int) -> KeyRanges:
        """K balanced ranges: ``[s N // K, (s + 1) N // K)`` (lengths differ by one at most)."""
        return cls(np.arange(servers + 1, dtype=np.int64) * n_keys // servers)

    @property
    def servers(self) -> int:
        return len(self.bounds) - 1

    def of(self, rank: int) -> tuple[int, int]:
        """``(lo, hi)`` of rank ``rank``'s keys; an empty range for a worker."""
        if rank < self.servers:
            return int(self.bounds[rank]), int(self.bounds[rank + 1])
        end = int(self.bounds[-1])
        return end, end

    def cuts(self, keys: np.ndarray) -> np.ndarray:
        """(K + 1,) positions in sorted ``keys`` where each server's keys start (and the
        end): server s's are ``keys[cuts[s]:cuts[s + 1]]``."""
        return np.searchsorted(keys, self.bounds)


class ModelShard:
    """The part of a model one rank holds: the keys ``[lo, hi)`` of ``whole``'s vector.

    What the builder sizes the rank's parameters, optimiser and objective from:
    ``n_params`` is the range's length (0 on a worker) and ``reg_mask`` its part of the
    penalty mask; ``full_size`` and ``layout`` describe the whole model, for records.
    ``make_model(n_features)`` builds the model of the same kind over ``n_features``
    columns (a batch's, for :class:`BatchWork`); ``whole`` is the one over every column
    (its methods allocate nothing of its size: the worker asks it which keys a batch
    touches). Convex models start at zero, so the shard's start needs no whole vector.
    ``sparse``: whether the rows are CSR, so that a batch touches few of a range's keys
    (and a server's ``sgd``/``momentum`` steps pay for those alone).
    """

    def __init__(self, make_model, n_features: int, ranges: KeyRanges, rank: int,
                 sparse: bool) -> None:  # fmt: skip
        self.make_model = make_model
        self.sparse = sparse
        self.whole = make_model(n_features)
        self.ranges = ranges
        self.lo, self.hi = ranges.of(rank)
        self.n_classes = self.whole.n_classes

    @property
    def n_params(self) -> int:
        return self.hi - self.lo

    @property
    def full_size(self) -> int:
        return self.whole.n_params

    @property
    def reg_mask(self) -> np.ndarray:
        """1.0 on the range's weights, 0.0 on its intercepts (the keys no column touches)."""
        mask = np.ones(self.n_params)
        intercepts = self.whole.touched_params(np.zeros(0, dtype=np.int64))
        inside = intercepts[(intercepts >= self.lo) & (intercepts < self.hi)]
        mask[inside - self.lo] = 0.0
        return mask

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        """Positions in the range of the keys a batch using ``features`` can move."""
        keys = self.whole.touched_params(features)
        return keys[(keys >= self.lo) & (keys < self.hi)] - self.lo

    def layout(self) -> dict:
        return self.whole.layout()

    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        """Refused: a range of keys is not the weights a batch reads. The sharded
        strategies compute batches on pulled weights (:class:`BatchWork`), and a call
        here by mistake is a clear error rather than wrong numbers."""
        raise TypeError("a ModelShard holds a key range; compute batches with BatchWork")

    def targets(self, y: np.ndarray) -> np.ndarray:
        return self.whole.targets(y)

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        del rng
        return np.zeros(self.n_params)

    def rng_state(self) -> None:
        return None

    def saved_arrays(self) -> None:
        """No arrays besides the flat parameters (see :meth:`mpigd.models.Model.saved_arrays`)."""
        return None

    def load_saved_arrays(self, arrays) -> None:
        del arrays

    def set_rng_state(self, state) -> None:
        del state


class BatchWork:
    """A worker's computation on pulled weights: which keys a batch of rows touches, and
    its sums at the values of those keys alone.

    Sparse rows: the batch's features, their keys (``whole.touched_params``), and the
    batch renumbered to those features with a model over that many columns, whose flat
    vector is exactly the whole vector at the keys, in key order (weights of the
    features, then the intercepts). Dense rows touch every key: the whole model on the
    rows as they are, as an unsharded strategy computes them.
    """

    def __init__(self, shard: ModelShard, objective: LocalObjective) -> None:
        self.shard, self.objective = shard, objective

    def keys(self, X, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Sorted int64 keys that ``rows`` of ``X`` (None: all) touch, and the features
        they use (None for dense rows: all)."""
        if not sp.issparse(X):
            return np.arange(self.shard.full_size), None
        features = batch_features(X, rows)
        return self.shard.whole.touched_params(features), features

    def problem(self, X, rows, features) -> tuple:
        """``(model, X', rows')``: the rows as a model over their features sees them
        (dense: the whole model and the rows unchanged)."""
        if features is None:
            return self.shard.whole, X, rows
        return self.shard.make_model(len(features)), compact_rows(X, rows, features), None

    def objective_of(self, rows, features) -> tuple[LocalObjective, np.ndarray | None]:
        """The training rows ``rows`` as an objective over the pulled weights (no L2
        term: the servers add it), and the rows to pass it."""
        own = self.objective
        model, X, passed = self.problem(own.X, rows, features)
        y, weights = own.y, own.sample_weight
        if features is not None and rows is not None:  # the compact rows are in batch order
            y, weights = y[rows], None if weights is None else weights[rows]
        return LocalObjective(model, X, y, weights, 0.0, own.timer, own.accumulate), passed

    def sums(self, rows, features, pulled: np.ndarray, packed: np.ndarray) -> None:
        """``packed`` := ``[Σ gradient at the keys | Σ loss | rows]`` of the batch."""
        objective, rows = self.objective_of(rows, features)
        objective.local_sums(pulled, rows, packed)

    def loss_sums(self, rows, features, pulled: np.ndarray) -> np.ndarray:
        """``[Σ loss, rows]`` over ``rows`` of this worker's rows (dense: over all)."""
        objective, _ = self.objective_of(None if features is None else rows, features)
        return objective.local_loss(pulled)

    def warm_up(self, test_X) -> None:
        """Compile the kernels a worker calls (on a row each, at zero weights; no MPI)."""
        own = self.objective
        if own.X.shape[0]:
            head = np.zeros(1, dtype=np.int64)
            keys, features = self.keys(own.X, head)
            self.objective_of(head, features)[0].warm_up(np.zeros(len(keys)))
        if test_X is not None and test_X.shape[0]:
            keys, features = self.keys(test_X, None)
            model, X, _ = self.problem(test_X, None, features)
            params, targets = np.zeros(len(keys)), np.zeros(X.shape[0], dtype=own.y.dtype)
            model.loss_grad(X, targets, None, params, np.empty(len(keys)), train=False)
            model.predict(X, params)


class KeyExchange:
    """Collective pulls and pushes between the workers and the servers (every rank).

    A pull is :meth:`request` (one Alltoall of the key counts, one Alltoallv of the
    keys, worker to owner) then :meth:`answer` (one Alltoallv of their values, owner to
    worker); :meth:`push` then sends a value per pulled key back to its owner (one
    Alltoallv), and :meth:`summed` adds up what a server received. Every rank takes
    part, sending what it holds, possibly nothing: workers send keys and gradients,
    servers values.
    """

    def __init__(self, comm, ranges: KeyRanges, rank: int, timer) -> None:
        self.comm, self.ranges, self.timer = comm, ranges, timer
        self.lo = ranges.of(rank)[0]
        size = comm.Get_size()
        self.sent = np.zeros(size, dtype=np.int64)  # keys this rank asked of each rank
        self.received = np.zeros(size, dtype=np.int64)  # keys each rank asked of this one
        #: Positions in this rank's range of the keys asked of it, by asker in rank order.
        self.requested = np.zeros(0, dtype=np.int64)

    def request(self, keys: np.ndarray) -> np.ndarray:
        """Ask the owners of ``keys`` (sorted; none on a server) for them; the positions
        in this rank's range that the workers asked for (:attr:`requested`)."""
        self.sent[:] = 0
        self.sent[: self.ranges.servers] = np.diff(self.ranges.cuts(keys))
        with self.timer.phase("comm", "Alltoall key counts", self.sent.nbytes):
            self.comm.Alltoall(self.sent, self.received)
        asked = np.empty(int(self.received.sum()), dtype=np.int64)
        self._alltoallv(keys, self.sent, asked, self.received, MPI.INT64_T, "pull keys")
        self.requested = asked - self.lo
        return self.requested

    def answer(self, values: np.ndarray) -> np.ndarray:
        """Send ``values`` (at :attr:`requested`; none on a worker) to the askers; the
        values of the keys this rank asked for, in their order."""
        pulled = np.empty(int(self.sent.sum()))
        self._alltoallv(values, self.received, pulled, self.sent, MPI.DOUBLE, "pull values")
        return pulled

    def pull(self, keys: np.ndarray, params: np.ndarray) -> np.ndarray:
        """:meth:`request` and :meth:`answer` from ``params``, this rank's range."""
        return self.answer(params[self.request(keys)])

    def push(self, values: np.ndarray) -> np.ndarray:
        """Send ``values`` (one per key of the last pull) to the keys' owners; the values
        pushed to this rank, aligned with :attr:`requested`."""
        pushed = np.empty(int(self.received.sum()))
        self._alltoallv(values, self.sent, pushed, self.received, MPI.DOUBLE, "push")
        return pushed

    def summed(self, pushed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, sums)``: the sorted distinct positions pushed to, and the sum of
        the values pushed to each, added in asker order (O(values pushed))."""
        order = np.argsort(self.requested, kind="stable")  # keeps the askers' order
        positions = self.requested[order]
        if not len(positions):
            return positions, pushed
        starts = np.flatnonzero(np.concatenate(([True], positions[1:] != positions[:-1])))
        return positions[starts], np.add.reduceat(pushed[order], starts)

    def _alltoallv(self, send, send_counts, recv, recv_counts, datatype, label) -> None:
        with self.timer.phase("comm", f"Alltoallv {label}", send.nbytes):
            self.comm.Alltoallv(
                [np.ascontiguousarray(send), (send_counts, _starts(send_counts)), datatype],
                [recv, (recv_counts, _starts(recv_counts)), datatype],
            )


def _starts(counts: np.ndarray) -> np.ndarray:
    """Displacements of consecutive blocks of ``counts`` elements."""
    return np.cumsum(counts) - counts


def check(config, size: int) -> None:
    """ConfigError unless ``config`` can run with ``--servers K`` > 1 on ``size`` ranks."""
    servers = config.servers
    flag = f"--servers {servers}"
    if size < servers + 1:
        raise ConfigError(f"{flag} needs at least {servers + 1} ranks ({servers} servers and "
                          f"a worker); this job has {size} (run it under mpirun -n P)")  # fmt: skip
    if config.server_computes:
        raise ConfigError(f"{flag}: the servers only serve their key ranges; drop "
                          "--server-computes (or use --servers 1)")  # fmt: skip
    if config.model not in SHARDABLE_MODELS:
        raise ConfigError(
            f"{flag} shards the keys of {', '.join(SHARDABLE_MODELS)}; every batch touches "
            f"all of the {config.model}'s deeper layers, so use --servers 1 (or "
            "--model-parallel) for it"
        )
    if config.batch_size is None:
        raise ConfigError(
            f"{flag} takes mini-batch steps: give --batch-size (full-batch gd and lbfgs "
            "need the whole gradient on one rank; use --servers 1 for them)"
        )
    if config.backend == "cupy":
        raise ConfigError(f"{flag} renumbers each batch on the host: use --backend numba "
                          "or numpy")  # fmt: skip


def data_share(rank: int, size: int, servers: int) -> tuple[int, int]:
    """Workers K..P-1 hold parts 0..P-K-1 of the rows; the servers none."""
    return (0, 0) if rank < servers else (rank - servers, size - servers)


class ShardedServers(Strategy):
    """Base of the sharded ``ps-sync`` and ``ps-async``: everything but the steps.

    The whole vector is assembled only for records (:meth:`full_vector`); the epoch's
    ``train_loss`` and the test metrics pull, once per pass, the weights the worker's
    rows touch (:meth:`full_loss`, :meth:`evaluate`).
    """

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        self.shard: ModelShard = objective.model
        self.ranges = self.shard.ranges
        self.is_server = ranks.rank < self.ranges.servers
        self.exchange = KeyExchange(self.comm, self.ranges, ranks.rank, timer)
        self.work = BatchWork(self.shard, objective)
        #: A server's lazy stepper in the epoch under way (None: dense steps).
        self.stepper = None

    @contextmanager
    def lazily(self, optimizer, params: np.ndarray):
        """The epoch's steps inside: on a server with sparse rows whose optimiser has an
        O(touched) stepper (sgd, momentum: :mod:`mpigd.optim.lazy`) it is
        :attr:`stepper`, and the deferred work is done when the block ends."""
        if self.is_server and self.shard.sparse:
            objective = self.objective
            self.stepper = optimizer.lazy_stepper(params, objective.reg_mask, objective.l2)
        try:
            yield
        finally:
            if self.stepper is not None:
                with self.timer.phase("compute"):
                    self.stepper.detach()
                self.stepper = None

    def values(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """A server's parameters at ``positions`` of its range (deferred work applied)."""
        return params[positions] if self.stepper is None else self.stepper.values(positions)

    def agree_stop_reason(self, optimizer) -> None:
        optimizer.stop_reason = mpi.from_root(self.comm, optimizer.stop_reason)

    def full_vector(self, local: np.ndarray) -> np.ndarray | None:
        """Collective: the ranges of the servers, one after the other, on rank 0 (any
        deferred lazy work done first: a checkpoint may read them mid-epoch)."""
        if self.stepper is not None:
            with self.timer.phase("compute"):
                self.stepper.flush()
        counts = np.diff(self.ranges.bounds).tolist()
        counts += [0] * (self.ranks.size - len(counts))
        full = target = None
        if self.ranks.is_root:
            full = np.empty(self.shard.full_size)
            target = [full, (counts, _starts(np.array(counts)).tolist()), MPI.DOUBLE]
        self.comm.Gatherv(np.ascontiguousarray(local, dtype=np.float64), target, root=0)
        return full

    def local_vector(self, full: np.ndarray) -> np.ndarray:
        return np.array(np.asarray(full)[self.shard.lo : self.shard.hi])

    def full_loss(self, params: np.ndarray) -> float:
        """Collective: f at the servers' parameters over all training rows.

        In rounds of at most :data:`PASS_NONZEROS` nonzeros a worker (as many rounds on
        every rank: the most any worker needs), each pulling the keys its chunk of rows
        touches, so no worker holds more weights than such a chunk reads; then one
        Allreduce of ``[Σ loss, rows, penalty]`` (each server adds its range's L2 term).
        """
        X, sums = self.objective.X, np.zeros(3)
        rounds = -(-int(X.nnz) // PASS_NONZEROS) if sp.issparse(X) else 1
        with self.timer.phase("comm", "Allreduce rounds", 8):
            rounds = max(self.comm.allreduce(rounds, op=MPI.MAX), 1)
        for rows in np.array_split(np.arange(X.shape[0]), rounds):
            keys, features = self._keys(X, rows)
            pulled = self.exchange.pull(keys, params)
            if not self.is_server:
                sums[:2] += self.work.loss_sums(rows, features, pulled)
        if self.is_server:
            sums[2] = self.objective.loss_value(np.zeros(2), params)  # no rows: its L2 term
        self.objective.full_passes += 1
        sums = self.sum_over_data(sums)
        data_loss = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
        return control.check_finite(data_loss + float(sums[2]))

    def evaluate(self, X, y, params) -> dict:
        """Collective: the test metrics, each worker's test rows on the weights they
        touch (pulled in one round: a worker's test rows are one chunk)."""
        keys, features = self._keys(X, None)
        model, X, _ = self.work.problem(X, None, features)
        return evaluate(model, X, y, self.exchange.pull(keys, params), self.ranks)

    def warm_up(self, params, test_X) -> None:
        del params
        if not self.is_server:
            self.work.warm_up(test_X)

    def _keys(self, X, rows) -> tuple[np.ndarray, np.ndarray | None]:
        """The keys ``rows`` of ``X`` (None: all) touch and their features (none on a
        server)."""
        if self.is_server:
            return np.zeros(0, dtype=np.int64), None
        return self.work.keys(X, rows)
