"""The models on CSR rows: the MLP's first layer as a sparse-times-dense product (its loss,
gradient, reported ranges and predictions equal the dense path's on ``X.toarray()``, for
``rows=`` batches too and in float32), no densification anywhere, and ``accumulate``
through the models' ``loss_grad``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_gpu import require_gpu
from test_mlp import OneRankGroup

import kernels
from mpigd.models import create_model
from mpigd.models.mlp_split import SplitMLP

CPU_BACKENDS = ("numba", "numpy")


def sparse_problem(task, n=37, d=9, n_classes=3, dtype=np.float64, seed=0):
    """A canonical CSR ``X`` (density ~0.35, rows 2 and 5 empty) and targets for ``task``."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.35)
    dense[[2, 5]] = 0.0
    X = sp.csr_matrix(dense.astype(dtype))
    if task == "regression":
        y = rng.standard_normal(n)
    else:
        y = rng.integers(0, n_classes, n)
    return X, y


def make_mlp(backend, task, d, hidden=(6, 4), dropout=0.0):
    return create_model("mlp", kernels.get_backend(backend), d, task,
                        None if task == "regression" else 3, hidden=hidden, dropout=dropout,
                        dropout_seed=(1, 0))  # fmt: skip


def passes(model, X, y, weights, params, rows):
    """Loss, gradient and reported ranges of a full pass, and the loss of a loss-only pass."""
    grad, seen = np.full(model.n_params, np.nan), []
    loss = model.loss_grad(X, y, weights, params, grad, rows, lambda *r: seen.append(r))
    return loss, grad, seen, model.loss_grad(X, y, weights, params, None, rows, train=False)


def assert_close(actual, expected, rtol):
    """Equal up to ``rtol`` relative to the largest entry (entries may cancel to ~0)."""
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


ROWS = {"all": None, "repeats": np.array([4, 2, 2, 30, 11, 4, 0], dtype=np.int64),
        "empty": np.zeros(0, dtype=np.int64)}  # fmt: skip


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("task, hidden, dropout", [("multiclass", (6, 4), 0.3),
                                                   ("regression", (5,), 0.0),
                                                   ("multiclass", (), 0.0)])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mlp_on_csr_equals_the_dense_path(backend, task, hidden, dropout, dtype):
    X, y = sparse_problem(task, dtype=dtype)
    dense = X.toarray()
    sparse_model = make_mlp(backend, task, X.shape[1], hidden, dropout)
    dense_model = make_mlp(backend, task, X.shape[1], hidden, dropout)
    params = sparse_model.init_params(np.random.default_rng(2))
    params[sparse_model.reg_mask == 0] = 0.1
    targets = sparse_model.targets(y)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, X.shape[0])
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for rows in ROWS.values():  # the same dropout draws: both models' generators in step
        loss, grad, seen, loss_only = passes(sparse_model, X, targets, weights, params, rows)
        expected = passes(dense_model, dense, targets, weights, params, rows)
        assert loss == pytest.approx(expected[0], rel=rtol)
        assert_close(grad, expected[1], rtol)
        assert seen == expected[2]
        assert loss_only == pytest.approx(expected[3], rel=rtol)
    predictions = sparse_model.predict(X, params)
    if task == "regression":
        assert_close(predictions, dense_model.predict(dense, params), rtol)
    else:
        np.testing.assert_array_equal(predictions, dense_model.predict(dense, params))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_model_densifies_csr_rows(backend, monkeypatch):
    X, y = sparse_problem("multiclass")
    rows = ROWS["repeats"]
    specs = [("mlp", {"hidden": (5,)}), ("softmax", {}), ("logreg", {})]
    models = [create_model(name, kernels.get_backend(backend), X.shape[1],
                           "binary" if name == "logreg" else "multiclass",
                           2 if name == "logreg" else 3, **options)
              for name, options in specs]  # fmt: skip
    labels = {model.name: model.targets(y % 2 if model.name == "logreg" else y) for model in models}
    params = {model.name: model.init_params(np.random.default_rng(4)) + 0.1 for model in models}
    expected = {}
    for model in models:
        grad = np.empty(model.n_params)
        dense = X.toarray()
        expected[model.name] = model.loss_grad(dense, labels[model.name], None,
                                               params[model.name], grad, rows), grad  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("a CSR matrix was densified")

    for name in ("toarray", "todense"):
        monkeypatch.setattr(sp.csr_matrix, name, refuse)
    for model in models:
        grad = np.empty(model.n_params)
        loss = model.loss_grad(X, labels[model.name], None, params[model.name], grad, rows)
        assert loss == pytest.approx(expected[model.name][0], rel=1e-12)
        assert_close(grad, expected[model.name][1], 1e-12)
        model.predict(X, params[model.name])


@pytest.mark.parametrize("name", ["mlp", "softmax", "svm"])
def test_models_accumulate_into_grad_out(name):
    X, y = sparse_problem("multiclass")
    task, n_classes = ("binary", 2) if name == "svm" else ("multiclass", 3)
    options = {"hidden": (4,)} if name == "mlp" else {}
    model = create_model(name, kernels.get_backend("numba"), X.shape[1], task, n_classes,
                         **options)  # fmt: skip
    targets = model.targets(y % 2 if name == "svm" else y)
    params = model.init_params(np.random.default_rng(5)) + 0.1
    rows = ROWS["repeats"]
    plain = np.empty(model.n_params)
    loss = model.loss_grad(X, targets, None, params, plain, rows)
    start = np.random.default_rng(6).standard_normal(model.n_params)
    grad = start.copy()
    assert model.loss_grad(X, targets, None, params, grad, rows, accumulate=True) == loss
    assert_close(grad, start + plain, 1e-13)
    grad = start.copy()
    model.loss_grad(X, targets, None, params, grad, ROWS["empty"], accumulate=True)
    np.testing.assert_array_equal(grad, start)


def test_a_split_mlp_of_one_part_takes_csr_rows():
    X, y = sparse_problem("multiclass")
    whole = make_mlp("numba", "multiclass", X.shape[1], (6, 4))
    split = SplitMLP(whole.backend, X.shape[1], 3, (6, 4), 0.0, (1, 0), 1, 0, OneRankGroup())
    params = whole.init_params(np.random.default_rng(7))
    targets = whole.targets(y)
    for rows in (None, ROWS["repeats"]):
        grad, split_grad = np.empty(whole.n_params), np.empty(split.n_params)
        loss = whole.loss_grad(X, targets, None, params, grad, rows)
        assert split.loss_grad(X, targets, None, params[split.index], split_grad, rows) == loss
        np.testing.assert_array_equal(split_grad, grad[split.index])


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_mlp_on_csr_matches_the_reference(task, dtype):
    require_gpu()
    X, y = sparse_problem(task, dtype=dtype)
    gpu_model = make_mlp("cupy", task, X.shape[1])
    ref_model = make_mlp("numpy", task, X.shape[1])
    params = ref_model.init_params(np.random.default_rng(8)) + 0.05
    targets = ref_model.targets(y)
    weights = np.random.default_rng(9).uniform(0.5, 2.0, X.shape[0])
    to_device = gpu_model.backend.to_device
    rtol = 1e-11 if dtype == np.float64 else 1e-4
    for rows in ROWS.values():
        loss, grad, seen, _ = passes(gpu_model, to_device(X), to_device(targets),
                                     to_device(weights), params, rows)  # fmt: skip
        expected = passes(ref_model, X, targets, weights, params, rows)
        assert loss == pytest.approx(expected[0], rel=rtol)
        assert_close(grad, expected[1], rtol)
        assert seen == expected[2]
