"""The allreduce strategy's sparse gradient exchange under mpirun (any rank count).

Sparse, dense and auto exchange against each other and against a serial reference (the
global mini-batch's gradient from tests/serial_reference.py on the densified rows, the
same optimiser), to 1e-10 relative in float64; auto's per-step choice is the same on
every rank; the sparse messages grow with the batch's nonzeros, not with d; a
checkpoint mid-epoch reads the true state. The strategy is built directly on in-memory
CSR rows (no files), but for one ``mpigd train`` on CSR files at the end.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import write_csr_h5
from mpi4py import MPI
from serial_reference import objective as reference_objective
from test_train_mpi import run

import kernels.cpu
from mpigd.alphabeta import AlphaBeta
from mpigd.comm import RankInfo
from mpigd.data import row_range
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.optim import Schedule, create_optimizer
from mpigd.run.batching import epoch_batches
from mpigd.strategies.allreduce import AllreduceStrategy
from mpigd.strategies.sparse_exchange import Calibration
from mpigd.timing import PhaseTimer

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

WORLD = MPI.COMM_WORLD
TASKS = {"logreg": ("binary", 2), "softmax": ("multiclass", 3)}
SGD = {"lr": 0.5, "l2": 0.01, "batch_size": 16, "epochs": 3, "seed": 4}


def csr_problem(model, n_rows=157, d=300, density=0.03, seed=0):
    """Canonical CSR rows (the same on every rank) with labels for ``model``."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, d, density=density, format="csr", random_state=seed,
                  data_rvs=rng.standard_normal)  # fmt: skip
    X.sum_duplicates()
    X.sort_indices()
    y = rng.integers(0, TASKS[model][1], n_rows)
    return X, y


def optimizer_for(name, n_params, options):
    steps = -(-157 // options["batch_size"])
    schedule = Schedule(options["lr"], "invsqrt", steps_per_epoch=steps,
                        total_steps=steps * options["epochs"])  # fmt: skip
    config = SimpleNamespace(batch_size=options["batch_size"], tol=None, momentum=0.9,
                             nesterov=name == "nesterov", lbfgs_memory=10)  # fmt: skip
    return create_optimizer("momentum" if name == "nesterov" else name, n_params, schedule, config)


def trained(X, y, model_name, optimizer_name, exchange, calibration=None, read_at=None,
            resume=None, **options):  # fmt: skip
    """This rank's share of the rows trained by the allreduce strategy; (params,
    strategy, per-step decisions ``(sparse?, total pairs)``, per-epoch fields).

    ``read_at``: a global step before which the parameters and optimiser state are read
    as a checkpoint reads them (kept in ``strategy.read``). ``resume``: such a read,
    with its ``epoch`` and ``step_in_epoch``, to start from.
    """
    options = {**SGD, **options}
    start, stop = row_range(X.shape[0], WORLD.rank, WORLD.size)
    task, n_classes = TASKS[model_name]
    model = create_model(model_name, kernels.cpu, X.shape[1], task, n_classes)
    local = LocalObjective(model, X[start:stop], model.targets(y[start:stop]),
                           None, options["l2"], PhaseTimer())  # fmt: skip
    strategy = AllreduceStrategy(RankInfo(WORLD, WORLD.rank, WORLD.size), local, PhaseTimer(),
                                 SimpleNamespace(overlap=True, bucket_mb=25.0, exchange=exchange),
                                 None)  # fmt: skip
    decisions = []
    if strategy.exchange is not None:
        if calibration is not None:
            strategy.exchange.calibration = calibration
        choose = strategy.exchange.prefers_sparse

        def recorded(pairs):
            decisions.append((choose(pairs), int(np.sum(pairs))))
            return decisions[-1][0]

        strategy.exchange.prefers_sparse = recorded
    optimizer = optimizer_for(optimizer_name, local.n_params, options)
    params = np.zeros(local.n_params)
    first_epoch, first_step = 1, 0
    if resume is not None:
        params[:] = resume["params"]
        optimizer.load_state_dict(resume["state"])
        first_epoch, first_step = resume["epoch"], resume["step_in_epoch"]
    steps_per_epoch = -(-X.shape[0] // options["batch_size"])

    def before_step(i, epoch):
        step_in_epoch = (first_step if epoch == first_epoch else 0) + i
        if (epoch - 1) * steps_per_epoch + step_in_epoch == read_at:
            strategy.read = {"params": strategy.full_vector(params).copy(),
                             "state": optimizer.state_dict(), "epoch": epoch,
                             "step_in_epoch": step_in_epoch}  # fmt: skip

    fields = []
    for epoch in range(first_epoch, options["epochs"] + 1):
        batches = epoch_batches(stop - start, WORLD.rank, WORLD.size, X.shape[0],
                                options["batch_size"], options["seed"], epoch)  # fmt: skip
        skip = first_step if epoch == first_epoch else 0
        strategy.run_epoch(optimizer, params, batches[skip:],
                           lambda i, epoch=epoch: before_step(i, epoch))  # fmt: skip
        fields.append(strategy.epoch_fields())
    return params, strategy, decisions, fields


def serial_reference(X, y, model_name, optimizer_name, steps=None, **options):
    """The same steps on one process (the first ``steps``; None: all): each step's
    global batch (every rank's batch, in rank order), its gradient from
    serial_reference.py, the dense optimiser."""
    options = {**SGD, **options}
    task, n_classes = TASKS[model_name]
    n_params = (X.shape[1] + 1) * (1 if model_name == "logreg" else n_classes)
    optimizer = optimizer_for(optimizer_name, n_params, options)
    params = np.zeros(n_params)
    dense = X.toarray()
    for epoch in range(1, options["epochs"] + 1):
        per_rank = []
        for rank in range(WORLD.size):
            start, stop = row_range(X.shape[0], rank, WORLD.size)
            batches = epoch_batches(stop - start, rank, WORLD.size, X.shape[0],
                                    options["batch_size"], options["seed"], epoch)  # fmt: skip
            per_rank.append([start + batch for batch in batches])
        for step_rows in zip(*per_rank, strict=True):
            rows = np.concatenate(step_rows)

            def closure(p, grad_out, rows=rows):
                value, grad = reference_objective(model_name, p, dense[rows], y[rows],
                                                  options["l2"])  # fmt: skip
                grad_out[:] = grad
                return value

            if optimizer.steps == steps:
                return params
            optimizer.step(params, closure)
    return params


def same_on_every_rank(value) -> bool:
    return all(other == value for other in WORLD.allgather(value))


@pytest.mark.parametrize(
    "model_name, optimizer_name",
    [("logreg", "sgd"), ("logreg", "momentum"), ("logreg", "nesterov"), ("logreg", "adam"),
     ("softmax", "momentum")],
)  # fmt: skip
def test_sparse_dense_and_auto_exchange_equal_the_serial_reference(model_name, optimizer_name):
    X, y = csr_problem(model_name)
    reference = serial_reference(X, y, model_name, optimizer_name)
    for exchange in ("sparse", "dense", "auto"):
        params, strategy, decisions, fields = trained(X, y, model_name, optimizer_name, exchange)
        np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-12)
        if exchange == "dense":
            assert strategy.exchange is None and fields[0] == {}
            continue
        assert same_on_every_rank(params.tobytes())
        assert same_on_every_rank(decisions)
        steps = sum(f["exchange_sparse_steps"] + f["exchange_dense_steps"] for f in fields)
        assert steps == len(decisions) == SGD["epochs"] * -(-X.shape[0] // SGD["batch_size"])
        if exchange == "auto" and WORLD.size > 1:
            assert fields[0]["exchange_allreduce_beta_s"] > 0
            assert 0 < fields[0]["exchange_calibration_s"] < 3.0  # ~0.05 s when idle


@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum"])
def test_auto_switching_step_by_step_agrees_on_every_rank_and_with_the_reference(optimizer_name):
    """A calibration that puts the crossover at the median step's pairs: auto sends some
    steps sparse and some dense, the same ones on every rank, and the lazy steps and
    the dense ones taken in between still give the reference's parameters."""
    X, y = csr_problem("logreg")
    _, _, sparse_run, _ = trained(X, y, "logreg", optimizer_name, "sparse")
    median = float(np.median([pairs for _, pairs in sparse_run]))
    # alpha 0: sparse iff allgather beta 1 * (P-1)/P * 8 * 1.5 pairs < allreduce beta *
    # 2 (P-1)/P * 8 d; on one rank both are free and the smaller message wins.
    beta = 1.5 * (median + 0.5) / (2 * X.shape[1] + 2)
    crossover = Calibration(AlphaBeta(0.0, beta), AlphaBeta(0.0, 1.0), 0.0, 0.0, 0.0)
    params, _, decisions, fields = trained(X, y, "logreg", optimizer_name, "auto", crossover)
    assert same_on_every_rank(decisions)
    if WORLD.size > 1:
        assert {sparse for sparse, _ in decisions} == {True, False}
    reference = serial_reference(X, y, "logreg", optimizer_name)
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-12)


def test_sparse_messages_grow_with_the_nonzeros_not_with_d():
    """The same rows embedded in 300 and in 2**20 columns: the sparse exchange sends
    the same bytes per step; more nonzeros per row send more."""
    X, y = csr_problem("logreg", n_rows=64)
    wide = sp.csr_matrix((X.data, X.indices * 3000, X.indptr), shape=(64, 1 << 20))
    denser, _ = csr_problem("logreg", n_rows=64, density=0.09)
    options = {"epochs": 1, "batch_size": 32}
    sent = {}
    for name, rows in (("narrow", X), ("wide", wide), ("denser", denser)):
        _, strategy, decisions, fields = trained(rows, y, "logreg", "sgd", "sparse", **options)
        sent[name] = fields[0]["exchange_bytes"]
        pairs = sum(p for _, p in decisions)
        counts = 40 * WORLD.size * len(decisions)
        assert counts + 8 * pairs < sent[name] <= counts + 8 * (1.5 * pairs + WORLD.size * 2)
    assert sent["narrow"] == sent["wide"] < sent["denser"]


@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum"])
def test_a_checkpoint_mid_epoch_reads_the_true_state_and_resumes_bit_for_bit(optimizer_name):
    """Before global step 13 (epoch 2) the parameters and optimiser state are read as a
    checkpoint reads them: they equal the reference's after 13 steps, and a run started
    from them ends on the very bits of the run that was read."""
    X, y = csr_problem("logreg")
    params, strategy, _, _ = trained(X, y, "logreg", optimizer_name, "sparse", read_at=13)
    read = strategy.read
    assert read["epoch"] == 2 and read["state"]["steps"] == 13
    reference = serial_reference(X, y, "logreg", optimizer_name, steps=13)
    np.testing.assert_allclose(read["params"], reference, rtol=1e-10, atol=1e-12)
    resumed, _, _, _ = trained(X, y, "logreg", optimizer_name, "sparse", resume=read)
    np.testing.assert_array_equal(resumed, params)
    unread, _, _, _ = trained(X, y, "logreg", optimizer_name, "sparse")
    np.testing.assert_allclose(unread, params, rtol=1e-10, atol=1e-12)


def test_train_on_csr_files_with_each_exchange_and_a_resume(mpi_tmp_path):
    """``mpigd train`` on two CSR shards: auto, and sparse cut after 2 epochs then
    resumed (step checkpoints on the way), give the serial reference's model; the epoch
    lines count the steps each way and the bytes."""
    X, y = csr_problem("logreg")
    data = mpi_tmp_path / "data"
    if WORLD.rank == 0:
        write_csr_h5(data / "part-00000.h5", X[:90], y[:90], "binary", 2)
        write_csr_h5(data / "part-00001.h5", X[90:], y[90:], "binary", 2)
    WORLD.Barrier()
    options = {"model": "logreg", "optimizer": "momentum", "lr": 0.5, "l2": 0.01,
               "batch_size": 16, "epochs": 3, "lr_schedule": "invsqrt", "seed": 4,
               "checkpoint_every_steps": 7}  # fmt: skip
    reference = serial_reference(X, y, "logreg", "momentum")  # the same batches and steps
    auto = run(str(data), mpi_tmp_path / "auto", exchange="auto", **options)
    np.testing.assert_allclose(auto, reference, rtol=1e-10, atol=1e-12)
    cut = {**options, "epochs": 2}
    run(str(data), mpi_tmp_path / "sparse", exchange="sparse", **cut)
    resumed = run(str(data), mpi_tmp_path / "sparse", exchange="sparse", resume=True, **options)
    np.testing.assert_allclose(resumed, reference, rtol=1e-10, atol=1e-12)
    for name in ("auto", "sparse"):
        lines = [json.loads(line) for line in open(mpi_tmp_path / name / "metrics.jsonl")]
        for line in lines:
            assert line["exchange_sparse_steps"] + line["exchange_dense_steps"] == line["steps"]
            assert line["exchange_bytes"] > 0
        assert ("exchange_allreduce_beta_s" in lines[0]) == (name == "auto")
