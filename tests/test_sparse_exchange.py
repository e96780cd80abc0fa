"""The sparse gradient exchange's serial parts: lazy O(nnz) optimiser steps against the
dense optimisers, a batch's sparse local sums against the dense ones, the exchange on
one rank and auto's choice."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

import kernels.cpu
from mpigd.alphabeta import AlphaBeta
from mpigd.features import batch_features
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.optim import Schedule
from mpigd.optim.first_order import Adam, GradientDescent, Momentum
from mpigd.optim.lazy import LazyMomentum, LazySGD
from mpigd.strategies.sparse_exchange import (
    Calibration,
    GradientExchange,
    calibrate,
    sparse_is_cheaper,
)
from mpigd.timing import PhaseTimer

N = 60  # parameters of the optimiser tests; the last 3 are intercepts (not penalised)
MASK = np.r_[np.ones(N - 3), np.zeros(3)]


def schedule(lr=0.3, name="invsqrt"):
    return Schedule(lr, name, steps_per_epoch=10, total_steps=400)


def lazy_against_dense(make, l2=0.05, steps=400, touched=6, seed=0, attach=None):
    """Run ``make()`` twice over the same steps, densely and through a lazy stepper
    (``attach(optimizer, params, l2)``, by default its own): each step touches a few
    random weights and the intercepts, with a data gradient that depends on the
    parameters there. Returns the (dense, lazy) optimisers and parameters and the
    stepper (detached)."""
    rng = np.random.default_rng(seed)
    dense, lazy = make(), make()
    start = rng.standard_normal(N)
    p_dense, p_lazy = start.copy(), start.copy()
    if attach is None:
        stepper_ = lazy.lazy_stepper(p_lazy, MASK, l2)
    else:
        stepper_ = attach(lazy, p_lazy, l2)
    worst = 0.0  # of the parameters a batch reads, relative to the largest
    for _ in range(steps):
        idx = np.r_[np.sort(rng.choice(N - 3, touched, replace=False)), np.arange(N - 3, N)]
        noise = rng.standard_normal(idx.size)
        with stepper_.materialised(idx):
            read = p_lazy[idx]
            worst = max(worst, np.abs(read - p_dense[idx]).max() / np.abs(p_dense).max())
            grad = np.sin(read) + noise
        full = np.zeros(N)
        full[idx] = np.sin(p_dense[idx]) + noise

        def closure(params, grad_out, full=full):
            grad_out[:] = full + (params * MASK) * l2
            return 0.0

        dense.step(p_dense, closure)
        stepper_.step(idx, grad)
    stepper_.detach()
    assert worst < 1e-10
    return dense, lazy, p_dense, p_lazy, stepper_


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("window", [2.0**128, 1.05])
def test_lazy_sgd_equals_dense_sgd_and_rescales(window):
    dense, lazy, p_dense, p_lazy, stepper = lazy_against_dense(
        lambda: GradientDescent(N, schedule(), full_batch=False),
        attach=lambda optimizer, params, l2: LazySGD(optimizer, params, MASK, l2, window),
    )
    close(p_lazy, p_dense)
    assert lazy.steps == dense.steps == 400
    assert stepper.flushes > (20 if window < 2 else 0)  # the rescale path ran


@pytest.mark.parametrize("lr, l2", [(2.0, 0.5), (1.0, 1.5), (0.5, 3.5)])
def test_lazy_sgd_at_extreme_shrinks(lr, l2):
    """lr l2 = 1 (the shrink is 0), 1.5 (negative) and 1.75 (|shrink| 0.75): the scale
    cannot or barely can be deferred."""
    make = lambda: GradientDescent(N, schedule(lr, "constant"), full_batch=False)  # noqa: E731
    _, _, p_dense, p_lazy, _ = lazy_against_dense(make, l2=l2, steps=60)
    close(p_lazy, p_dense)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mu, horizon", [(0.9, None), (0.99, None), (0.9, 2)])
def test_lazy_momentum_equals_dense_momentum(nesterov, mu, horizon):
    """Over 300 steps (products reset every 16 steps by default; every 2, forced)."""
    make = lambda: Momentum(N, schedule(0.05), mu=mu, nesterov=nesterov, full_batch=False)  # noqa: E731
    dense, lazy, p_dense, p_lazy, stepper = lazy_against_dense(
        make, steps=300,
        attach=lambda optimizer, params, l2: LazyMomentum(optimizer, params, MASK, l2, horizon),
    )  # fmt: skip
    close(p_lazy, p_dense)
    close(lazy.velocity, dense.velocity)
    assert stepper.flushes >= 300 // stepper.horizon


def test_state_dict_of_an_attached_stepper_is_the_true_state():
    make = lambda: Momentum(N, schedule(0.05), mu=0.9, full_batch=False)  # noqa: E731
    dense, lazy, p_dense, p_lazy, _ = lazy_against_dense(make, steps=37)
    reattached = lazy.lazy_stepper(p_lazy, MASK, 0.05)
    reattached.step(np.arange(N - 3, N), np.ones(3))  # defer some work
    assert lazy.deferred is reattached
    state = lazy.state_dict()
    assert reattached.t == 0  # flushed
    expected = Momentum(N, schedule(0.05), mu=0.9, full_batch=False)
    expected.load_state_dict(dense.state_dict())
    full = np.zeros(N)
    full[N - 3 :] = 1.0
    expected.step(p_dense, lambda p, g: (g.__setitem__(..., full + p * MASK * 0.05), 0)[1])
    close(state["velocity"], expected.velocity)
    close(p_lazy, p_dense)
    assert state["steps"] == expected.steps == 38


def test_adam_and_full_batch_optimisers_have_no_lazy_stepper():
    assert Adam(N, schedule()).lazy_stepper(np.zeros(N), MASK, 0.1) is None


# -- a batch's sparse sums ------------------------------------------------------------------


def csr_problem(n_rows=50, d=40, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, d, density=density, format="csr", random_state=seed,
                  data_rvs=rng.standard_normal)  # fmt: skip
    X.sum_duplicates()
    X.sort_indices()
    y = (rng.random(n_rows) < 0.5).astype(np.float64)
    return X, y


def objective_of(model_name, X, y, accumulate=1, l2=0.1):
    model = create_model(model_name, kernels.cpu, X.shape[1], "binary", 2)
    return LocalObjective(model, X, model.targets(y), None, l2, PhaseTimer(), accumulate)


@pytest.mark.parametrize("model_name", ["logreg", "softmax"])
@pytest.mark.parametrize("accumulate", [1, 3])
def test_sparse_sums_are_the_dense_sums_at_the_touched_indices(model_name, accumulate):
    X, y = csr_problem()
    objective = objective_of(model_name, X, y, accumulate)
    assert objective.sparse
    params = np.random.default_rng(1).standard_normal(objective.n_params)
    for rows in (np.array([3, 7, 7, 20, 41]), np.arange(0), None):
        touched = objective.touched(rows)
        values, loss, count = objective.sparse_sums(params, rows, touched)
        packed = objective.packed_buffer()
        objective.local_sums(params, rows, packed)
        np.testing.assert_allclose(values, packed[touched], rtol=1e-12, atol=1e-14)
        outside = np.setdiff1d(np.arange(objective.n_params), touched)
        assert not packed[outside].any()
        assert loss == pytest.approx(packed[-2], rel=1e-12) and count == packed[-1]
        assert not objective._scratch.any()  # kept zero between calls


# -- the exchange on one rank, and auto's choice ----------------------------------------------


@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
def test_exchange_on_one_rank_returns_the_local_sums(mode):
    exchange = GradientExchange(MPI.COMM_SELF, 1000, mode, PhaseTimer())
    if mode == "auto":  # one rank: the local work decides; three pairs are the fewer
        exchange.calibration = Calibration(AlphaBeta(0, 0), AlphaBeta(0, 0), 1e-8, 1e-9, 0)
    indices, values = np.array([3, 10, 999]), np.array([1.5, -2.0, 0.25])
    dense_out = np.empty(1000)
    summed = exchange.sum(indices, values, 4.0, 7, dense_out)
    assert summed.sparse == (mode != "dense")
    assert (summed.loss_sum, summed.rows) == (4.0, 7.0) and not summed.word.any()
    if summed.sparse:
        np.testing.assert_array_equal(summed.indices, indices)
        np.testing.assert_array_equal(summed.values, values)
        assert exchange.last_bytes == 40 + 8 * (3 + 2)  # counts + 3 values + 3 int32
    else:
        expected = np.zeros(1000)
        expected[indices] = values
        np.testing.assert_array_equal(summed.values, expected)
        assert exchange.last_bytes == 40 + 8000
    fields = exchange.epoch_fields()
    assert fields["exchange_sparse_steps"] + fields["exchange_dense_steps"] == 1
    assert ("exchange_allreduce_alpha_s" in fields) == (mode == "auto")


def test_sparse_bytes_grow_with_the_pairs_not_with_d():
    sent = {}
    for d in (1_000, 1 << 22):
        exchange = GradientExchange(MPI.COMM_SELF, d, "sparse", PhaseTimer())
        for pairs in (10, 20):
            exchange.sum(np.arange(pairs) * 7, np.ones(pairs), 0.0, 1, None)
            sent[d, pairs] = exchange.last_bytes
    assert sent[1_000, 10] == sent[1 << 22, 10] < sent[1_000, 20] == sent[1 << 22, 20]


def test_auto_prefers_sparse_below_the_crossover_only():
    calibration = Calibration(AlphaBeta(1e-5, 1e-9), AlphaBeta(2e-5, 1e-9), 1e-8, 1e-9, 0.0)
    d = 100_000  # dense on 4 ranks: 2e-5 + 1e-9 * 1.5 * 8e5 + 1e-9 * 1e5 = 1.32 ms
    # sparse: 4e-5 + 1e-9 * 0.75 * 12 pairs + 1e-8 pairs, equal at 67,368 pairs
    assert sparse_is_cheaper(calibration, 4, 12 * 67_300, 67_300, d)
    assert not sparse_is_cheaper(calibration, 4, 12 * 67_400, 67_400, d)
    local = Calibration(AlphaBeta(0.0, 0.0), AlphaBeta(0.0, 0.0), 1e-8, 1e-9, 0.0)
    assert sparse_is_cheaper(local, 1, 12 * 9_999, 9_999, d)  # one rank: local work only
    assert not sparse_is_cheaper(local, 1, 12 * 10_001, 10_001, d)
    free = Calibration(AlphaBeta(0.0, 0.0), AlphaBeta(0.0, 0.0), 0.0, 0.0, 0.0)
    assert sparse_is_cheaper(free, 1, 8 * d - 1, d, d)  # a tie: the smaller message
    assert not sparse_is_cheaper(free, 1, 8 * d, d, d)


def test_calibration_on_one_rank_measures_the_local_work_only():
    scratch = np.zeros(5000)
    calibration = calibrate(MPI.COMM_SELF, scratch, np.int32)
    assert calibration.allreduce == calibration.allgather == AlphaBeta(0.0, 0.0)
    assert calibration.pair_s > 0 and calibration.coordinate_s > 0
    assert 0 < calibration.seconds < 1.0 and not scratch.any()


def test_dense_rows_and_everything_touching_models_stay_dense():
    X, y = csr_problem()
    assert not objective_of("logreg", X.toarray(), y).sparse
    model = SimpleNamespace(n_params=5, reg_mask=np.ones(5), touched_params=lambda f: np.arange(5))
    objective = LocalObjective(model, X, y, None, 0.0, PhaseTimer())
    assert not objective.sparse


def test_batch_features_are_the_sorted_unique_columns_of_the_rows():
    X, _ = csr_problem(n_rows=30, d=50, density=0.2)
    for rows in (np.array([4, 4, 17, 0]), np.arange(0), None):
        dense = X.toarray() if rows is None else X.toarray()[rows]
        expected = np.flatnonzero(dense.any(axis=0))
        features = batch_features(X, rows)
        assert features.dtype == np.int64
        np.testing.assert_array_equal(features, expected)
