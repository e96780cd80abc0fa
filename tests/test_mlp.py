"""The MLP on one process: gradients, dtypes, dropout, accumulation, bucket plans."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_problem

import kernels
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.strategies.buckets import plan_buckets
from mpigd.timing import PhaseTimer


def mlp(task="multiclass", n_classes=3, hidden=(7, 5), dropout=0.0, seed=(0,), backend="numpy"):
    return create_model("mlp", kernels.get_backend(backend), 4, task,
                        None if task == "regression" else n_classes, hidden=hidden,
                        dropout=dropout, dropout_seed=seed)  # fmt: skip


def objective(model, X, y, weights=None, accumulate=1):
    return LocalObjective(model, X, model.targets(y), weights, 0.1, PhaseTimer(), accumulate)


def value_and_grad(obj, params, rows=None):
    packed = obj.packed_buffer()
    obj.local_sums(params, rows, packed)
    grad = np.empty_like(params)
    return obj.finish(packed, params, grad), grad


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("backend", ["numpy", "reference"])
def test_mlp_gradient_matches_finite_differences(task, backend):
    X, y = make_problem(task, n_rows=40, d=4, n_classes=3, seed=1)
    model = mlp(task, backend=backend)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    obj = objective(model, X, y, weights)
    params = model.init_params(np.random.default_rng(2))
    params[model.reg_mask == 0] = 0.1  # biases away from zero exercise their gradient
    _, grad = value_and_grad(obj, params)
    numeric = np.empty_like(params)
    for i in range(params.size):
        step = np.zeros_like(params)
        step[i] = 1e-6
        numeric[i] = (value_and_grad(obj, params + step)[0]
                      - value_and_grad(obj, params - step)[0]) / 2e-6  # fmt: skip
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_float32_data_computes_in_float32_close_to_float64():
    X, y = make_problem("multiclass", n_rows=64, d=4, n_classes=3)
    model = mlp()
    params = model.init_params(np.random.default_rng(0))
    loss64, grad64 = value_and_grad(objective(model, X, y), params)
    loss32, grad32 = value_and_grad(objective(model, X.astype(np.float32), y), params)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-5)


def test_accumulated_micro_batches_give_the_same_sums():
    X, y = make_problem("multiclass", n_rows=50, d=4, n_classes=3)
    model = mlp()
    params = model.init_params(np.random.default_rng(0))
    rows = np.arange(3, 41)
    whole = value_and_grad(objective(model, X, y), params, rows)
    split = value_and_grad(objective(model, X, y, accumulate=4), params, rows)
    assert split[0] == pytest.approx(whole[0], rel=1e-13)
    np.testing.assert_allclose(split[1], whole[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_gradient_ranges_are_reported_once_each_last_layer_first(accumulate):
    X, y = make_problem("multiclass", n_rows=30, d=4, n_classes=3)
    model = mlp(hidden=(6, 5, 4))
    obj = objective(model, X, y, accumulate=accumulate)
    seen = []
    obj.local_sums(model.init_params(np.random.default_rng(0)), None, obj.packed_buffer(),
                   lambda lo, hi: seen.append((lo, hi)))  # fmt: skip
    assert seen == list(reversed(model.layer_ranges()))


def test_dropout_is_seeded_per_rank_and_off_in_evaluation():
    X, y = make_problem("multiclass", n_rows=30, d=4, n_classes=3)
    params = mlp().init_params(np.random.default_rng(0))

    def training_loss(seed):
        return value_and_grad(objective(mlp(dropout=0.5, seed=seed), X, y), params)[0]

    assert training_loss((0, 1)) == training_loss((0, 1))
    assert training_loss((0, 1)) != training_loss((0, 2))
    with_dropout = mlp(dropout=0.5, seed=(0, 1))
    np.testing.assert_array_equal(with_dropout.predict(X, params), mlp().predict(X, params))


def test_he_initialisation_scales_with_fan_in():
    model = mlp(hidden=(400,))
    params = model.init_params(np.random.default_rng(0))
    first = params[: 400 * 4]
    assert np.std(first) == pytest.approx(np.sqrt(2 / 4), rel=0.05)
    assert np.all(params[model.reg_mask == 0] == 0)


def test_buckets_follow_layers_backwards_and_cover_the_gradient():
    layers = [(0, 100), (100, 130), (130, 200), (200, 210)]
    assert plan_buckets(layers, 8 * 50) == [(130, 210), (0, 130)]
    assert plan_buckets(layers, 1) == [(200, 210), (130, 200), (100, 130), (0, 100)]
    assert plan_buckets(layers, 8 * 10**6) == [(0, 210)]


@pytest.mark.parametrize("accumulate", [1, 3])
def test_the_loss_only_pass_equals_the_loss_of_the_full_pass(accumulate):
    X, y = make_problem("multiclass", n_rows=40, d=4, n_classes=3)
    model = mlp()
    obj = objective(model, X, y, np.linspace(0.5, 1.5, len(y)), accumulate)
    params = model.init_params(np.random.default_rng(0))
    value, _ = value_and_grad(obj, params)
    assert obj.loss_value(obj.local_loss(params), params) == pytest.approx(value, rel=1e-13)
