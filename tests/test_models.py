"""Each model's full objective (kernels + L2 + weights) against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_problem

import kernels
from mpigd.errors import ConfigError
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.timing import PhaseTimer

CASES = [
    ("linreg", "regression", None, "hinge"),
    ("logreg", "binary", 2, "hinge"),
    ("svm", "binary", 2, "hinge"),
    ("svm", "binary", 2, "squared-hinge"),
    ("softmax", "multiclass", 4, "hinge"),
]


def objective_for(name, task, n_classes, svm_loss, backend="numba"):
    X, y = make_problem(task, n_rows=60, d=5, n_classes=n_classes, seed=4)
    model = create_model(name, kernels.get_backend(backend), 5, task, n_classes, svm_loss)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    return model, LocalObjective(model, X, model.targets(y), weights, 0.3, PhaseTimer())


def value_and_grad(objective, params):
    packed = objective.packed_buffer()
    objective.local_sums(params, None, packed)
    grad = np.empty_like(params)
    return objective.finish(packed, params, grad), grad


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name, task, n_classes, svm_loss", CASES)
def test_objective_gradient_matches_finite_differences(name, task, n_classes, svm_loss, backend):
    model, objective = objective_for(name, task, n_classes, svm_loss, backend)
    params = np.random.default_rng(2).normal(scale=0.3, size=model.n_params)
    _, grad = value_and_grad(objective, params)
    step = 1e-6
    numeric = np.empty_like(params)
    for i in range(params.size):
        shifted = params.copy()
        shifted[i] += step
        up, _ = value_and_grad(objective, shifted)
        shifted[i] -= 2 * step
        down, _ = value_and_grad(objective, shifted)
        numeric[i] = (up - down) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, task, n_classes, svm_loss", CASES)
def test_intercepts_are_not_regularised(name, task, n_classes, svm_loss):
    model, _ = objective_for(name, task, n_classes, svm_loss)
    mask = model.reg_mask
    n_bias = n_classes if name == "softmax" else 1
    assert mask[-n_bias:].sum() == 0 and mask[:-n_bias].min() == 1


def test_model_and_task_must_match():
    with pytest.raises(ConfigError, match="regression"):
        create_model("linreg", kernels.get_backend("numba"), 3, "binary", 2)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("tree", kernels.get_backend("numba"), 3, "binary", 2)
