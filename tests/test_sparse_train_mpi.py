"""Training on sparse (CSR) datasets equals training on the same data stored dense.

Run by ``make test`` under ``mpirun -n P`` with P = 1..4: every model and strategy is
trained twice from the same rows, once from a CSR file and once from its densified
copy, and the two models must agree to 1e-10 relative in float64 (the sparse path adds
the same products in another order, and the lazy O(nnz) optimiser steps scale where the
dense ones subtract). The optima of L-BFGS on sparse data are checked against
scikit-learn (which accepts CSR) and the serial reference objective.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import write_csr_h5, write_h5
from mpi4py import MPI
from serial_reference import objective
from test_train_mpi import reference_optimum, run

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

SIZE = MPI.COMM_WORLD.size
TASK_OF = {
    "linreg": "regression",
    "logreg": "binary",
    "svm": "binary",
    "softmax": "multiclass",
    "mlp": "multiclass",
}


def sparse_problem(task, n_rows=203, d=40, density=0.15, n_classes=3, seed=0):
    """A random canonical CSR problem with a planted linear truth: (X, y, n_classes)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, d, density=density, format="csr", random_state=seed,
                  data_rvs=rng.standard_normal)  # fmt: skip
    X.sum_duplicates()
    X.sort_indices()
    if task == "regression":
        y = X @ rng.standard_normal(d) + 0.3 + 0.1 * rng.standard_normal(n_rows)
        return X, y, None
    if task == "binary":
        y = (X @ rng.standard_normal(d) + rng.logistic(size=n_rows) > 0).astype(np.int64)
        return X, y, 2
    Z = X @ rng.standard_normal((d, n_classes)) + rng.gumbel(size=(n_rows, n_classes))
    return X, np.argmax(Z, axis=1).astype(np.int64), n_classes


def shared_pair(tmp_path, task, **problem):
    """Rank 0 writes the problem twice, as uneven CSR shards and as dense shards; every
    rank gets the two directories and the rows."""
    X, y, n_classes = sparse_problem(task, **problem)
    if MPI.COMM_WORLD.rank == 0:
        bounds = [0, 90, 150, X.shape[0]]
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            name = f"part-{i:05d}.h5"
            write_csr_h5(tmp_path / "sparse" / name, X[lo:hi], y[lo:hi], task, n_classes)
            write_h5(tmp_path / "dense" / name, X[lo:hi].toarray(), y[lo:hi], task, n_classes)
    MPI.COMM_WORLD.Barrier()
    return str(tmp_path / "sparse"), str(tmp_path / "dense"), X, y, n_classes


#: (model, strategy options, fewest ranks, rank counts it needs to divide)
CASES = [
    ("linreg", {"optimizer": "gd", "lr": 0.2, "epochs": 8}, 1),
    ("logreg", {"optimizer": "sgd", "batch_size": 16, "l2": 0.01, "exchange": "sparse"}, 1),
    ("logreg", {"optimizer": "sgd", "batch_size": 16, "l2": 0.01, "exchange": "dense"}, 1),
    (
        "logreg",
        {
            "optimizer": "momentum",
            "batch_size": 16,
            "l2": 0.01,
            "lr_schedule": "cosine",
            "exchange": "auto",
        },
        1,
    ),  # fmt: skip
    ("svm", {"optimizer": "adam", "batch_size": 32, "lr": 0.01, "l2": 0.001}, 1),
    ("softmax", {"optimizer": "sgd", "batch_size": 16, "l2": 0.01}, 1),
    ("mlp", {"optimizer": "adam", "batch_size": 32, "lr": 0.01, "hidden": [8]}, 1),
    ("logreg", {"optimizer": "lbfgs", "epochs": 15, "l2": 0.01}, 1),
    (
        "logreg",
        {"strategy": "local-sgd", "optimizer": "sgd", "batch_size": 16, "sync_every": 2},
        1,
    ),  # fmt: skip
    ("logreg", {"strategy": "ps-sync", "optimizer": "sgd", "batch_size": 16, "l2": 0.01}, 2),
    (
        "softmax",
        {"strategy": "ps-sync", "servers": 2, "optimizer": "sgd", "batch_size": 16, "l2": 0.01},
        3,
    ),  # fmt: skip
    ("mlp", {"model_parallel": 2, "optimizer": "sgd", "batch_size": 32, "hidden": [8]}, 2),
]


@pytest.mark.parametrize("model, options, fewest", CASES)
def test_sparse_training_equals_the_dense_run(mpi_tmp_path, model, options, fewest):
    if SIZE < fewest or SIZE % options.get("model_parallel", 1):
        pytest.skip(f"needs at least {fewest} ranks (and a multiple of --model-parallel)")
    options = {"epochs": 2, "lr": 0.1, "seed": 3, **options}
    sparse, dense, *_ = shared_pair(mpi_tmp_path, TASK_OF[model])
    from_sparse = run(sparse, mpi_tmp_path / "from-sparse", model=model, **options)
    from_dense = run(dense, mpi_tmp_path / "from-dense", model=model, **options)
    np.testing.assert_allclose(from_sparse, from_dense, rtol=1e-10, atol=1e-13)


def test_async_server_on_sparse_data_equals_the_dense_run(mpi_tmp_path):
    """ps-async with one worker applies its gradients in a fixed order."""
    if SIZE != 2:
        pytest.skip("one worker (two ranks) makes the asynchronous order deterministic")
    sparse, dense, *_ = shared_pair(mpi_tmp_path, "binary")
    options = {"model": "logreg", "strategy": "ps-async", "optimizer": "sgd", "lr": 0.1,
               "batch_size": 16, "l2": 0.01, "epochs": 2}  # fmt: skip
    from_sparse = run(sparse, mpi_tmp_path / "from-sparse", **options)
    from_dense = run(dense, mpi_tmp_path / "from-dense", **options)
    np.testing.assert_allclose(from_sparse, from_dense, rtol=1e-10, atol=1e-13)


def test_lbfgs_on_sparse_data_reaches_scikit_learns_logistic_optimum(mpi_tmp_path):
    from sklearn.linear_model import LogisticRegression

    sparse, _, X, y, _ = shared_pair(mpi_tmp_path, "binary", n_rows=300, d=25, density=0.3)
    l2 = 1e-3
    params = run(sparse, mpi_tmp_path / "run", model="logreg", optimizer="lbfgs", epochs=150,
                 tol=1e-8, l2=l2)  # fmt: skip
    sk = LogisticRegression(C=1.0 / (X.shape[0] * l2), tol=1e-12, max_iter=10000).fit(X, y)
    best = np.append(sk.coef_[0], sk.intercept_[0])
    ours, _ = objective("logreg", params, X.toarray(), y, l2)
    theirs, _ = objective("logreg", best, X.toarray(), y, l2)
    assert ours <= theirs + 1e-6
    assert ours == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("model, svm_loss", [("linreg", "hinge"), ("svm", "squared-hinge")])
def test_lbfgs_on_sparse_data_reaches_the_reference_optimum(mpi_tmp_path, model, svm_loss):
    sparse, _, X, y, _ = shared_pair(mpi_tmp_path, TASK_OF[model], n_rows=200, d=15, density=0.3)
    l2 = 0.01
    params = run(sparse, mpi_tmp_path / "run", model=model, optimizer="lbfgs", epochs=150,
                 tol=1e-9, l2=l2, svm_loss=svm_loss)  # fmt: skip
    dense = X.toarray()
    _, best_value = reference_optimum(model, dense, y, l2, svm_loss)
    value, _ = objective(model, params, dense, y, l2, None, svm_loss)
    assert value == pytest.approx(best_value, rel=1e-9, abs=1e-10)
