"""Distributed training equals a serial reference, under mpirun with 1..4 ranks.

Run by ``make test`` as ``mpirun -n P python -m pytest --with-mpi -m mpi``; each test
runs collectively on every rank and reads back the model that rank 0 wrote.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import make_problem, write_sharded
from mpi4py import MPI
from scipy.optimize import minimize
from serial_reference import gradient_descent, objective

from mpigd.comm import world
from mpigd.config import TrainConfig
from mpigd.run import train

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

TASK_OF = {"linreg": "regression", "logreg": "binary", "svm": "binary", "softmax": "multiclass"}


def shared_dataset(tmp_path, model, n_rows=1001, d=6, n_classes=None, seed=0):
    """Rank 0 writes an uneven three-shard dataset; every rank gets (path, X, y)."""
    task = TASK_OF[model]
    n_classes = n_classes or {"binary": 2, "multiclass": 3}.get(task)
    X, y = make_problem(task, n_rows=n_rows, d=d, n_classes=n_classes, seed=seed)
    if MPI.COMM_WORLD.rank == 0:
        write_sharded(tmp_path / "train", X, y, task, n_classes, sizes=(400, 350))
    MPI.COMM_WORLD.Barrier()
    return str(tmp_path / "train"), X, y, n_classes


def trained_params(run_dir) -> np.ndarray:
    """Every rank reads the model rank 0 wrote; no rank goes on (and perhaps starts
    another run in the same directory) before all have read it."""
    MPI.COMM_WORLD.Barrier()
    with h5py.File(f"{run_dir}/model.h5", "r") as handle:
        params = handle["params"][()]
    MPI.COMM_WORLD.Barrier()
    return params


def run(data, out, hooks=(), **options) -> np.ndarray:
    config = TrainConfig(data=data, out=str(out), progress="quiet", **options)
    train(config, world(), hooks=hooks)
    return trained_params(out)


@pytest.mark.parametrize(
    "model, options",
    [
        ("linreg", {}),
        ("logreg", {"l2": 0.01}),
        ("logreg", {"class_weight": "balanced"}),
        ("softmax", {"l2": 0.01}),
        ("svm", {"l2": 0.01}),
        ("svm", {"svm_loss": "squared-hinge"}),
    ],
)
def test_full_batch_gd_matches_serial_numpy(mpi_tmp_path, model, options):
    data, X, y, n_classes = shared_dataset(mpi_tmp_path, model)
    params = run(
        data, mpi_tmp_path / "run", model=model, optimizer="gd", lr=0.5, epochs=25, **options
    )
    weights = None
    if options.get("class_weight") == "balanced":
        counts = np.bincount(y)
        weights = (len(y) / (len(counts) * counts))[y]
    reference = gradient_descent(
        model,
        X,
        y,
        0.5,
        25,
        options.get("l2", 0.0),
        n_classes,
        weights,
        options.get("svm_loss", "hinge"),
    )
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-12)


def reference_optimum(model, X, y, l2, svm_loss="hinge", n_classes=None):
    """The optimum by SciPy's BFGS on the serial objective (tight tolerance)."""
    d = X.shape[1]
    size = n_classes * (d + 1) if model == "softmax" else d + 1
    result = minimize(
        lambda p: objective(model, p, X, y, l2, None, svm_loss),
        np.zeros(size),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-11, "maxiter": 10000},
    )
    return result.x, result.fun


@pytest.mark.parametrize(
    "model, svm_loss",
    [("linreg", "hinge"), ("logreg", "hinge"), ("softmax", "hinge"), ("svm", "squared-hinge")],
)
def test_lbfgs_reaches_the_optimum_of_smooth_models(mpi_tmp_path, model, svm_loss):
    data, X, y, n_classes = shared_dataset(mpi_tmp_path, model, n_rows=300, d=5)
    l2 = 0.01
    params = run(
        data,
        mpi_tmp_path / "run",
        model=model,
        optimizer="lbfgs",
        epochs=200,
        tol=1e-9,
        l2=l2,
        svm_loss=svm_loss,
    )
    best, best_value = reference_optimum(model, X, y, l2, svm_loss, n_classes)
    value, grad = objective(model, params, X, y, l2, None, svm_loss)
    assert np.max(np.abs(grad)) <= 1e-8
    assert value == pytest.approx(best_value, rel=1e-10)
    np.testing.assert_allclose(params, best, rtol=1e-5, atol=1e-6)


def test_lbfgs_matches_scikit_learn_logistic_regression(mpi_tmp_path):
    from sklearn.linear_model import LogisticRegression

    data, X, y, _ = shared_dataset(mpi_tmp_path, "logreg", n_rows=500, d=5)
    l2 = 0.02
    params = run(
        data,
        mpi_tmp_path / "run",
        model="logreg",
        optimizer="lbfgs",
        epochs=100,
        tol=1e-10,
        l2=l2,
        class_weight="balanced",
    )
    sk = LogisticRegression(
        C=1.0 / (len(y) * l2), tol=1e-12, max_iter=10000, class_weight="balanced"
    ).fit(X, y)
    np.testing.assert_allclose(params[:-1], sk.coef_[0], rtol=1e-5, atol=1e-6)
    assert params[-1] == pytest.approx(sk.intercept_[0], rel=1e-5, abs=1e-6)


def test_hinge_svm_approaches_the_qp_optimum(mpi_tmp_path):
    """Hinge SVM: compare the objective with the exact QP solution (SLSQP)."""
    data, X, y, _ = shared_dataset(mpi_tmp_path, "svm", n_rows=120, d=3)
    l2 = 0.05
    params = run(data, mpi_tmp_path / "run", model="svm", optimizer="lbfgs", epochs=300, l2=l2)
    n, d = X.shape
    t = 2.0 * y - 1.0
    # Variables [w (d), b, xi (n)]: min l2/2 |w|^2 + mean(xi), xi >= 1 - t(Xw+b), xi >= 0.
    qp = minimize(
        lambda v: 0.5 * l2 * v[:d] @ v[:d] + v[d + 1 :].mean(),
        np.concatenate([np.zeros(d + 1), np.ones(n)]),
        jac=lambda v: np.concatenate([l2 * v[:d], [0.0], np.full(n, 1.0 / n)]),
        constraints=[
            {
                "type": "ineq",
                "fun": lambda v: v[d + 1 :] - 1.0 + t * (X @ v[:d] + v[d]),
                "jac": lambda v: np.hstack([(t[:, None] * X), t[:, None], np.eye(n)]),
            }
        ],
        bounds=[(None, None)] * (d + 1) + [(0, None)] * n,
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    value, _ = objective("svm", params, X, y, l2)
    assert qp.success
    assert value == pytest.approx(qp.fun, rel=1e-3)
    assert value >= qp.fun - 1e-9


def test_mini_batch_sgd_matches_a_serial_replay_of_the_same_global_batches(mpi_tmp_path):
    """Each step's global batch is the union of every rank's share; SGD on P ranks must
    equal serial SGD over those unions, whatever P is."""
    from mpigd.data import row_range
    from mpigd.run.batching import epoch_batches

    size = MPI.COMM_WORLD.size
    data, X, y, _ = shared_dataset(mpi_tmp_path, "logreg")
    params = run(
        data,
        mpi_tmp_path / "run",
        model="logreg",
        optimizer="sgd",
        lr=0.5,
        batch_size=64,
        epochs=2,
        l2=0.01,
        seed=3,
    )
    reference = np.zeros_like(params)
    for epoch in (1, 2):
        shares = []
        for rank in range(size):
            start, stop = row_range(len(X), rank, size)
            batches = epoch_batches(stop - start, rank, size, len(X), 64, seed=3, epoch=epoch)
            shares.append([start + batch for batch in batches])
        for step_rows in zip(*shares, strict=True):
            rows = np.concatenate(step_rows)
            _, grad = objective("logreg", reference, X[rows], y[rows], 0.01)
            reference -= 0.5 * grad
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-12)
