"""The strategies against each other and against serial references, under mpirun.

``ps-sync`` (with and without the server computing), ``ps-async`` (staleness 0, 2,
unbounded, a slow worker) and ``local-sgd`` (H = 1 and 8); every strategy with every
model on the smallest world it accepts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fault_hooks import ApplyOrder, SlowRank
from mpi4py import MPI
from scipy.optimize import minimize
from serial_reference import objective
from test_train_mpi import run, shared_dataset, trained_params

from mpigd.comm import RankInfo
from mpigd.config import TrainConfig
from mpigd.data import row_range
from mpigd.errors import AgreedError
from mpigd.run import train
from mpigd.run.batching import epoch_batches

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

WORLD = MPI.COMM_WORLD
SGD = {"model": "logreg", "optimizer": "sgd", "lr": 0.5, "batch_size": 64, "epochs": 3,
       "l2": 0.01, "seed": 2}  # fmt: skip


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]


def optimum(X, y, l2) -> float:
    result = minimize(lambda p: objective("logreg", p, X, y, l2), np.zeros(X.shape[1] + 1),
                      jac=True, method="BFGS", options={"gtol": 1e-10})  # fmt: skip
    return result.fun


@pytest.mark.mpi(min_size=2)
def test_ps_sync_with_the_server_computing_equals_allreduce(mpi_tmp_path):
    data, *_ = shared_dataset(mpi_tmp_path, "logreg")
    reference = run(data, mpi_tmp_path / "allreduce", **SGD)
    served = run(data, mpi_tmp_path / "ps", strategy="ps-sync", server_computes=True, **SGD)
    np.testing.assert_allclose(served, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.mpi(min_size=2)
def test_ps_sync_equals_allreduce_over_the_workers_rows(mpi_tmp_path):
    """Without the server computing, the workers split the rows as allreduce would on
    P-1 ranks: run that on a sub-communicator of ranks 1..P-1 and compare."""
    data, *_ = shared_dataset(mpi_tmp_path, "logreg")
    for options in (SGD, {**SGD, "optimizer": "lbfgs", "batch_size": None, "epochs": 8}):
        served = run(data, mpi_tmp_path / "ps", strategy="ps-sync", overwrite=True, **options)
        workers = WORLD.Split(0 if WORLD.rank else MPI.UNDEFINED, WORLD.rank)
        if workers != MPI.COMM_NULL:
            config = TrainConfig(data=data, out=str(mpi_tmp_path / "workers"), progress="quiet",
                                 overwrite=True, **options)  # fmt: skip
            train(config, RankInfo(workers, workers.rank, workers.size))
            workers.Free()
        reference = trained_params(mpi_tmp_path / "workers")
        np.testing.assert_allclose(served, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.mpi(min_size=2)
def test_ps_async_without_staleness_is_sequential_sgd_in_the_applied_order(mpi_tmp_path):
    data, X, y, _ = shared_dataset(mpi_tmp_path, "logreg")
    order = ApplyOrder()
    params = run(data, mpi_tmp_path / "async", hooks=[order], strategy="ps-async",
                 max_staleness=0, **SGD)  # fmt: skip
    applied = WORLD.bcast(order.applied)  # the server (rank 0) saw the order
    assert len(applied) == SGD["epochs"] * (WORLD.size - 1) * -(-len(X) // SGD["batch_size"])
    rows_of = worker_rows(len(X), WORLD.size)
    reference = np.zeros_like(params)
    assert all(row["staleness_max"] == 0 for row in metrics(mpi_tmp_path / "async"))
    for epoch, worker, step in applied:
        rows = rows_of(worker, epoch)[step]
        _, grad = objective("logreg", reference, X[rows], y[rows], SGD["l2"])
        reference -= SGD["lr"] * grad
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-12)


def worker_rows(n_rows: int, size: int):
    """Global row indices of worker w's mini-batches in an epoch (ps-async's split)."""

    def rows_of(worker: int, epoch: int) -> list[np.ndarray]:
        start, stop = row_range(n_rows, worker - 1, size - 1)
        batches = epoch_batches(stop - start, worker - 1, size - 1, n_rows, SGD["batch_size"],
                                SGD["seed"], epoch)  # fmt: skip
        return [start + batch for batch in batches]

    return rows_of


@pytest.mark.mpi(min_size=2)
def test_ps_async_staleness_bound_holds_and_unbounded_still_converges(mpi_tmp_path):
    data, X, y, _ = shared_dataset(mpi_tmp_path, "logreg")
    run(data, mpi_tmp_path / "s2", strategy="ps-async", max_staleness=2, **SGD)
    assert max(row["staleness_max"] for row in metrics(mpi_tmp_path / "s2")) <= 2
    free = {**SGD, "epochs": 12, "lr": 0.3, "lr_schedule": "invsqrt"}
    params = run(data, mpi_tmp_path / "free", strategy="ps-async", **free)
    value, _ = objective("logreg", params, X, y, SGD["l2"])
    assert value - optimum(X, y, SGD["l2"]) < 5e-3  # stated tolerance: within 0.005


@pytest.mark.mpi(min_size=3)
def test_a_slow_worker_neither_deadlocks_nor_hides_its_staleness(mpi_tmp_path):
    data, *_ = shared_dataset(mpi_tmp_path, "logreg")
    run(data, mpi_tmp_path / "slow", hooks=[SlowRank(1, 0.01)], strategy="ps-async",
        **{**SGD, "epochs": 2})  # fmt: skip
    for row in metrics(mpi_tmp_path / "slow"):
        slow, *fast = row["staleness_mean_per_worker"]
        assert slow > max(fast)
        assert row["updates_per_s_per_worker"][0] < min(row["updates_per_s_per_worker"][1:])


def test_local_sgd_with_one_step_per_average_equals_allreduce(mpi_tmp_path):
    data, *_ = shared_dataset(mpi_tmp_path, "logreg")
    reference = run(data, mpi_tmp_path / "allreduce", **SGD)
    local = run(data, mpi_tmp_path / "local", strategy="local-sgd", sync_every=1, **SGD)
    np.testing.assert_allclose(local, reference, rtol=1e-10, atol=1e-12)


def test_local_sgd_with_eight_local_steps_converges(mpi_tmp_path):
    data, X, y, _ = shared_dataset(mpi_tmp_path, "logreg")
    options = {**SGD, "epochs": 15, "lr": 0.3, "lr_schedule": "invsqrt"}
    params = run(data, mpi_tmp_path / "local", strategy="local-sgd", sync_every=8, **options)
    value, _ = objective("logreg", params, X, y, SGD["l2"])
    assert value - optimum(X, y, SGD["l2"]) < 5e-3


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("strategy", ["ps-sync", "ps-async", "local-sgd"])
@pytest.mark.parametrize("model", ["linreg", "logreg", "softmax", "svm"])
def test_every_strategy_trains_every_model(mpi_tmp_path, strategy, model):
    data, *_ = shared_dataset(mpi_tmp_path, model, n_rows=300)
    options = {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "epochs": 3}
    run(data, mpi_tmp_path / "run", model=model, strategy=strategy, **options)
    losses = [row["train_loss"] for row in metrics(mpi_tmp_path / "run")]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_server_strategies_need_two_ranks(mpi_tmp_path):
    if WORLD.size > 1:
        pytest.skip("checks the one-rank error")
    data, *_ = shared_dataset(mpi_tmp_path, "logreg")
    for strategy in ("ps-sync", "ps-async"):
        with pytest.raises(AgreedError, match="needs at least 2 ranks"):
            run(data, mpi_tmp_path / strategy, strategy=strategy, **SGD)
