"""The sharded parameter servers (``--servers K``) against allreduce, today's single
server and sequential SGD, under mpirun; what a step sends on a 2**24-feature model; and
one whole run through ``train`` (files, test metrics, model.h5, a resume).

Most runs are built in memory (:func:`mpigd.run.builder.build_parts` on rows sliced from
one array on every rank), so they need no files. K servers need K + 1 ranks: a test
skips where the world is too small (CI runs 1 to 4 ranks).
"""

from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from fault_hooks import Fault
from helpers import write_csr_h5
from mpi4py import MPI
from serial_reference import objective

from mpigd.comm import RankInfo
from mpigd.config import TrainConfig
from mpigd.data import DatasetInfo, LocalRows, row_range
from mpigd.errors import DivergenceError
from mpigd.models import load_backend
from mpigd.preemption import Preempted
from mpigd.run import train
from mpigd.run.batching import epoch_batches
from mpigd.run.builder import build_parts
from mpigd.run.hooks import Hook, Hooks
from mpigd.run.layouts import DataParallel, ShardedServers
from mpigd.strategies import sharded
from mpigd.timing import PhaseTimer

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

WORLD = MPI.COMM_WORLD
SGD = {"model": "logreg", "optimizer": "sgd", "lr": 0.5, "batch_size": 16, "epochs": 2,
       "l2": 0.01, "seed": 3}  # fmt: skip
TASKS = {"logreg": ("binary", 2), "softmax": ("multiclass", 3)}


def problem(model: str, sparse: bool, n_rows=90, d=30, seed=0):
    """(X, y): dense normal rows, or CSR rows with ~4 nonzeros each (some columns of a
    batch unused), with labels from a linear model."""
    rng = np.random.default_rng(seed)
    if sparse:
        X = sp.random(n_rows, d, density=0.15, format="csr", random_state=seed)
        X.sum_duplicates()
        X.indptr = X.indptr.astype(np.int64)
    else:
        X = rng.standard_normal((n_rows, d))
    task, classes = TASKS[model]
    scores = X @ rng.standard_normal((d, classes)) + rng.gumbel(size=(n_rows, classes))
    return X, np.argmax(scores, axis=1).astype(np.int64)


def config(**options) -> TrainConfig:
    return TrainConfig(data="in-memory", out="unused", progress="quiet", **{**SGD, **options})


class Built:
    """One rank's run of ``config`` on ``comm``, built in memory from ``X``, ``y``."""

    def __init__(self, cfg, layout, X, y, comm, hooks=()) -> None:
        self.cfg, self.comm, self.n_rows = cfg, comm, X.shape[0]
        ranks = RankInfo(comm, comm.rank, comm.size)
        layout.check(comm.size)
        self.part, self.parts = layout.data_share(ranks.rank, ranks.size)
        self.start, self.stop = (
            row_range(self.n_rows, self.part, self.parts) if self.parts else (0, 0)
        )
        task, classes = TASKS[cfg.model]
        info = DatasetInfo("in-memory", (), (), self.n_rows, X.shape[1], X.dtype, task, classes,
                           sp.issparse(X), X.nnz if sp.issparse(X) else None,
                           X.indices.dtype if sp.issparse(X) else None)  # fmt: skip
        rows = LocalRows(
            X[self.start : self.stop], y[self.start : self.stop], self.start, self.stop
        )
        self.timer = PhaseTimer()
        self.parts_ = build_parts(cfg, layout, ranks, load_backend(cfg.backend), info, rows,
                                  self.timer, Hooks(hooks))  # fmt: skip

    def batches(self, epoch: int) -> list:
        return epoch_batches(self.stop - self.start, self.part, max(self.parts, 1), self.n_rows,
                             self.cfg.batch_size, self.cfg.seed, epoch)  # fmt: skip

    def train(self) -> np.ndarray:
        """The epochs; the whole trained vector on every rank of ``comm``."""
        parts = self.parts_
        for epoch in range(1, self.cfg.epochs + 1):
            parts.strategy.run_epoch(parts.optimizer, parts.params, self.batches(epoch),
                                     lambda i: None)  # fmt: skip
        return self.comm.bcast(parts.strategy.full_vector(parts.params), root=0)


def on_workers(cfg, X, y, servers: int) -> np.ndarray:
    """``cfg`` under allreduce on ranks K..P-1 alone (the sharded workers' rows and
    batches), the result on every world rank."""
    workers = WORLD.Split(0 if WORLD.rank >= servers else MPI.UNDEFINED, WORLD.rank)
    reference = None
    if workers != MPI.COMM_NULL:
        reference = Built(cfg, DataParallel(cfg), X, y, workers).train()
        workers.Free()
    return WORLD.bcast(reference, root=servers)


def needs(ranks: int) -> None:
    if WORLD.size < ranks:
        pytest.skip(f"needs {ranks} ranks")


@pytest.mark.parametrize("servers", [1, 2, 3])
@pytest.mark.parametrize("model, sparse", [("logreg", False), ("logreg", True), ("softmax", True)])
def test_synchronous_sgd_on_k_servers_equals_allreduce_on_the_workers(servers, model, sparse):
    needs(servers + 1)
    X, y = problem(model, sparse)
    cfg = config(model=model, strategy="ps-sync", servers=servers)
    sharded = Built(cfg, ShardedServers(cfg), X, y, WORLD).train()
    reference = on_workers(config(model=model, exchange="sparse"), X, y, servers)  # no calibration
    np.testing.assert_allclose(sharded, reference, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_server_on_dense_rows_is_todays_ps_sync(optimizer):
    needs(2)
    X, y = problem("logreg", sparse=False)
    cfg = config(strategy="ps-sync", optimizer=optimizer, lr=0.1)
    sharded = Built(cfg, ShardedServers(cfg), X, y, WORLD).train()
    today = Built(cfg, DataParallel(cfg), X, y, WORLD).train()
    np.testing.assert_allclose(sharded, today, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("sparse", [False, True])
def test_the_train_loss_pass_in_rounds_is_the_objective_at_the_servers_parameters(
    sparse, monkeypatch
):
    needs(2)
    monkeypatch.setattr(sharded, "PASS_NONZEROS", 7)  # a round of a row or two
    X, y = problem("softmax", sparse)
    cfg = config(model="softmax", strategy="ps-sync", servers=min(3, WORLD.size - 1), epochs=1)
    run = Built(cfg, ShardedServers(cfg), X, y, WORLD)
    trained = run.train()
    value = run.parts_.strategy.full_loss(run.parts_.params)
    dense = X.toarray() if sparse else X
    assert value == pytest.approx(objective("softmax", trained, dense, y, cfg.l2)[0], rel=1e-12)


class Order(Hook):
    """``(worker, step)`` of each gradient a server applies, in its order."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, int]] = []

    def gradient_applied(self, run, worker: int, step: int, lag: int) -> None:
        self.applied.append((worker, step))


@pytest.mark.parametrize("servers", [1, 2, 3])
@pytest.mark.parametrize("sparse", [False, True])
def test_asynchronous_sgd_without_staleness_is_sequential_sgd_in_server_0s_order(servers, sparse):
    needs(servers + 1)
    X, y = problem("logreg", sparse)
    cfg = config(strategy="ps-async", servers=servers, max_staleness=0)
    order = Order()
    run = Built(cfg, ShardedServers(cfg), X, y, WORLD, hooks=[order])
    params, orders = run.parts_.params, []
    for epoch in range(1, cfg.epochs + 1):
        run.parts_.strategy.run_epoch(run.parts_.optimizer, params, run.batches(epoch),
                                      lambda i: None)  # fmt: skip
        orders.append(WORLD.bcast(order.applied, root=0))
        order.applied = []
        assert run.parts_.strategy.epoch_fields()["staleness_max"] == 0
    trained = WORLD.bcast(run.parts_.strategy.full_vector(params), root=0)
    dense = X.toarray() if sparse else X
    reference = np.zeros_like(trained)
    workers = WORLD.size - servers
    for epoch, applied in enumerate(orders, start=1):
        assert len(applied) == workers * len(run.batches(epoch))
        for worker, step in applied:
            start, stop = row_range(len(y), worker - servers, workers)
            rows = start + epoch_batches(stop - start, worker - servers, workers, len(y),
                                         cfg.batch_size, cfg.seed, epoch)[step]  # fmt: skip
            _, grad = objective("logreg", reference, dense[rows], y[rows], cfg.l2)
            reference -= cfg.lr * grad
    np.testing.assert_allclose(trained, reference, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("servers", [1, 2])
def test_asynchronous_staleness_bound_holds_on_every_server(servers):
    needs(servers + 2)  # two workers, or nothing is ever stale
    X, y = problem("logreg", sparse=True, n_rows=200)
    for bound in (1, None):
        cfg = config(strategy="ps-async", servers=servers, max_staleness=bound, epochs=1)
        run = Built(cfg, ShardedServers(cfg), X, y, WORLD)
        trained = run.train()
        fields = run.parts_.strategy.epoch_fields()
        assert bound is None or fields["staleness_max"] <= bound
        assert len(fields["staleness_mean_per_worker"]) == WORLD.size - servers
        assert np.isfinite(trained).all() and np.any(trained != 0)


@pytest.mark.parametrize("strategy, bound", [("ps-sync", None), ("ps-async", None),
                                             ("ps-async", 0)])  # fmt: skip
def test_a_divergence_stops_every_rank_with_the_same_error(strategy, bound):
    needs(2)
    X, y = problem("logreg", sparse=True)
    options = {} if bound is None else {"max_staleness": bound}
    cfg = config(strategy=strategy, servers=min(2, WORLD.size - 1), lr=1e308, epochs=4,
                 **options)  # fmt: skip
    run = Built(cfg, ShardedServers(cfg), X, y, WORLD)
    with pytest.raises(DivergenceError, match="not finite"):
        run.train()


def wide_rows(n_rows: int, d: int, per_row: int, seed: int) -> sp.csr_matrix:
    """``n_rows`` CSR rows of ``d`` columns with ``per_row`` nonzeros each, built
    without any d-sized array."""
    rng = np.random.default_rng(seed)
    columns = np.sort(rng.choice(d, size=(n_rows, per_row), replace=True), axis=1)
    columns = [np.unique(row) for row in columns]
    indptr = np.concatenate(([0], np.cumsum([len(row) for row in columns]))).astype(np.int64)
    indices = np.concatenate(columns).astype(np.int32)
    return sp.csr_matrix((rng.standard_normal(len(indices)), indices, indptr), shape=(n_rows, d))


@pytest.mark.timeout(240)
def test_bytes_per_step_grow_with_the_batch_nonzeros_not_with_d():
    needs(2)
    d, per_row = 2**24, 40
    servers = min(2, WORLD.size - 1)
    X = wide_rows(48 * (WORLD.size - servers), d, per_row, seed=1)
    y = (np.arange(X.shape[0]) % 2).astype(np.int64)
    per_step = {}
    for batch in (4, 16):
        cfg = config(strategy="ps-sync", servers=servers, batch_size=batch, l2=0.0, epochs=1)
        tracing = WORLD.rank >= servers
        if tracing:
            tracemalloc.start()
        run = Built(cfg, ShardedServers(cfg), X, y, WORLD)
        run.timer.trace = []
        batches = run.batches(1)[:3]
        run.parts_.strategy.run_epoch(run.parts_.optimizer, run.parts_.params, batches,
                                      lambda i: None)  # fmt: skip
        if tracing:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 16 * 2**20, f"a worker allocated {peak / 2**20:.0f} MiB"
        sent = sum(event[4] or 0 for event in run.timer.trace if event[0] == "comm")
        nonzeros = sum(int(X[run.start + rows].nnz) for rows in batches)
        sent, nonzeros = WORLD.allreduce(sent), WORLD.allreduce(nonzeros)
        per_step[batch] = sent / len(batches)
        # each nonzero's key, value and gradient, plus the counts and a 32-byte Allreduce
        assert sent <= 3 * 8 * (nonzeros + 2 * len(batches) * WORLD.size) + len(batches) * (
            WORLD.size**2 * 8 + WORLD.size * 32
        )
    assert per_step[16] < 8 * d / 100  # a dense vector would be 8 d bytes a message
    assert 2.5 < per_step[16] / per_step[4] < 5  # four times the rows, about four times the bytes


def trained_run(data, test, out, comm=WORLD, hooks=(), **options):
    """``train`` on ``comm``; model.h5's parameters and the metrics lines, on its ranks."""
    cfg = TrainConfig(data=data, test_data=test, out=str(out), progress="quiet",
                      **{**SGD, "optimizer": "momentum", "epochs": 3, **options})  # fmt: skip
    train(cfg, RankInfo(comm, comm.rank, comm.size), hooks=hooks)
    comm.Barrier()
    with h5py.File(f"{out}/model.h5", "r") as handle:
        params = handle["params"][()]
    lines = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
    comm.Barrier()
    return params, lines


def test_a_run_through_train_evaluates_records_and_resumes_like_allreduce(mpi_tmp_path):
    needs(2)
    servers = min(2, WORLD.size - 1)
    X, y = problem("logreg", sparse=True, n_rows=150)
    data, test = str(mpi_tmp_path / "train.h5"), str(mpi_tmp_path / "test.h5")
    if WORLD.rank == 0:
        write_csr_h5(data, X, y, "binary", 2)
        write_csr_h5(test, X[:40], y[:40], "binary", 2)
    WORLD.Barrier()
    sharded = {"strategy": "ps-sync", "servers": servers}
    params, lines = trained_run(data, test, mpi_tmp_path / "sharded", **sharded)
    workers = WORLD.Split(0 if WORLD.rank >= servers else MPI.UNDEFINED, WORLD.rank)
    reference = None
    if workers != MPI.COMM_NULL:
        reference = trained_run(data, test, mpi_tmp_path / "allreduce", comm=workers,
                                exchange="sparse")  # fmt: skip
        workers.Free()
    reference_params, reference_lines = WORLD.bcast(reference, root=servers)
    np.testing.assert_allclose(params, reference_params, rtol=1e-10, atol=1e-13)
    for ours, theirs in zip(lines, reference_lines, strict=True):
        for key in ("train_loss", "test_loss", "test_accuracy"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-10)
    steps = -(-len(y) // SGD["batch_size"])
    cut = Fault("sigterm", rank=servers, step=steps + 3)  # a worker, in epoch 2
    with pytest.raises(Preempted):
        trained_run(data, test, mpi_tmp_path / "cut", hooks=[cut], **sharded)
    resumed, _ = trained_run(data, test, mpi_tmp_path / "cut", resume=True, **sharded)
    # the checkpoint did the servers' deferred lazy work early: equal up to its rounding
    np.testing.assert_allclose(resumed, params, rtol=1e-12, atol=1e-15)
