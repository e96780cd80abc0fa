"""The MLP on one process: gradients, dtypes, dropout, accumulation, bucket plans."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_problem

import kernels
from mpigd.models import create_model
from mpigd.models.mlp_split import SplitMLP
from mpigd.objective import LocalObjective
from mpigd.strategies.buckets import plan_buckets
from mpigd.timing import PhaseTimer


def mlp(task="multiclass", n_classes=3, hidden=(7, 5), dropout=0.0, seed=(0,), backend="numba"):
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
@pytest.mark.parametrize("backend", ["numba", "numpy"])
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_buffers_reused_across_passes_give_a_fresh_models_results(dtype, monkeypatch):
    # Passes of two batch sizes in turn, a pass too large to keep its buffers, a
    # prediction and an accumulating pass in between: each pass's loss, gradient and
    # predictions are bit for bit those of a model that never ran a pass before.
    X, y = make_problem("multiclass", n_rows=60, d=4, n_classes=3, seed=2)
    X = X.astype(dtype)
    model = mlp()
    # 4 + 3 (7 + 5) + 2 * 3 = 46 values a row: passes of up to 20 float64 rows keep buffers
    monkeypatch.setattr(model, "WORKSPACE_BYTES", 20 * 46 * 8)
    params = model.init_params(np.random.default_rng(0))
    targets = model.targets(y)

    def passes(model, rows, accumulate=False):
        grad = np.full(model.n_params, 0.5)
        loss = model.loss_grad(X, targets, None, params, grad, rows=rows,
                               accumulate=accumulate)  # fmt: skip
        return loss, grad, model.predict(X[: len(rows)], params)

    batches = [np.arange(0, 16), np.arange(16, 26), np.arange(26, 42), np.arange(60),
               np.arange(42, 52), np.arange(5, 21)]  # fmt: skip
    for step, rows in enumerate(batches):
        params += 0.01  # the optimiser's update between two steps
        accumulate = step == 4
        loss, grad, predicted = passes(model, rows, accumulate)
        fresh_loss, fresh_grad, fresh_predicted = passes(mlp(), rows, accumulate)
        assert loss == fresh_loss
        np.testing.assert_array_equal(grad, fresh_grad)
        np.testing.assert_array_equal(predicted, fresh_predicted)
    assert 0 < len(model._workspaces) <= model.WORKSPACES
    assert all(n_rows < 60 for n_rows, _ in model._workspaces)


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


class OneRankGroup:
    """The collectives of a model group of one rank (``parts=1``): each is the identity."""

    def sum(self, array):
        return array

    def gather_columns(self, block, widths):
        assert widths == [block.shape[1]]
        return block


def same_nested(a, b):
    """Whether two nestings of tuples/lists of arrays (or None) have the same shape and values."""
    if isinstance(a, tuple | list):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same_nested(x, z) for x, z in zip(a, b, strict=True)))  # fmt: skip
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and np.array_equal(a, b)


def full_pass(model, X, y, weights, params, rows):
    """Loss and gradient, the reported ranges, and the loss of a loss-only pass."""
    grad, seen = np.full(model.n_params, np.nan), []
    loss = model.loss_grad(X, y, weights, params, grad, rows, lambda *r: seen.append(r))
    return loss, model.loss_grad(X, y, weights, params, None, rows), grad, seen


@pytest.mark.parametrize("task, dropout", [("multiclass", 0.0), ("multiclass", 0.5),
                                           ("regression", 0.0)])  # fmt: skip
@pytest.mark.parametrize("backend", [name for name in kernels.BACKENDS if name != "cupy"])
def test_a_split_mlp_of_one_part_is_substitutable_for_the_mlp(task, dropout, backend):
    """SplitMLP(parts=1) gives exactly MLP's loss, gradient (through ``index``), reported
    ranges and predictions, on all rows, on a batch and on an empty batch; its ``_forward``
    returns the same tuple as MLP's."""
    X, y = make_problem(task, n_rows=40, d=4, n_classes=3, seed=1)
    whole = mlp(task, hidden=(7, 5), dropout=dropout, seed=(0, 1), backend=backend)
    split = SplitMLP(whole.backend, 4, whole.n_classes, (7, 5), dropout, (0, 1), 1, 0,
                     OneRankGroup())  # fmt: skip
    assert split.full_size == whole.n_params
    assert split.layer_ranges() == whole.layer_ranges()
    np.testing.assert_array_equal(split.reg_mask, whole.reg_mask[split.index])
    full = whole.init_params(np.random.default_rng(2))
    np.testing.assert_array_equal(split.init_params(np.random.default_rng(2)), full[split.index])
    full[whole.reg_mask == 0] = 0.1
    params = full[split.index]
    targets, weights = whole.targets(y), np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    for rows in (None, np.arange(3, 31), np.array([], dtype=np.int64)):
        loss, loss_only, grad, seen = full_pass(whole, X, targets, weights, full, rows)
        split_loss, split_loss_only, split_grad, split_seen = full_pass(
            split, X, targets, weights, params, rows
        )
        assert (split_loss, split_loss_only, split_seen) == (loss, loss_only, seen)
        full_grad = np.full(split.full_size, np.nan)
        full_grad[split.index] = split_grad
        np.testing.assert_array_equal(full_grad, grad)
    assert seen == [(0, whole.n_params)] and not grad.any()  # the empty batch
    np.testing.assert_array_equal(split.predict(X, params), whole.predict(X, full))
    forward = whole._forward(X, whole._weights(full, X.dtype), train=False)
    split_forward = split._forward(X, split._weights(params, X.dtype), train=False)
    assert len(forward) == 3 and same_nested(split_forward, forward)
