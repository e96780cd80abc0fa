"""kernels.boosting against its numpy specification: the losses' derivatives and row
losses (mpigd.trees.losses, TreeEnsemble.row_losses), exact.round_to_grid, and the leaf
values a prediction pass would add; bad arguments raise ValueError."""

import numpy as np
import pytest

from kernels import boosting
from mpigd.trees import exact, losses
from mpigd.trees.ensemble import TreeEnsemble

TASKS = [("regression", 1), ("binary", 1), ("multiclass", 4)]


def problem(task, width, n=3000, seed=0):
    """Raw outputs spanning large margins, targets or labels, weights, a subsample."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(scale=6.0, size=(n, width))
    raw[:5] = [[40.0] * width, [-40.0] * width, [0.0] * width, [700.0] * width, [-700.0] * width]
    if task == "regression":
        y = rng.normal(size=n)
    else:
        y = rng.integers(0, max(width, 2), size=n)
    weight = rng.uniform(0.5, 2.0, size=n)
    taking_part = (rng.random(n) < 0.7).astype(np.float64)
    return raw, y, weight, taking_part


@pytest.mark.parametrize("task, width", TASKS)
def test_gradient_stats_equal_the_numpy_derivatives_and_losses(task, width):
    raw, y, weight, taking_part = problem(task, width)
    stats, abs_sums, loss_sum, weight_sum = boosting.gradient_stats(
        task, raw, y, weight, taking_part
    )
    g, h = losses.derivatives(task, raw, y)
    wp = weight * taking_part
    for k in range(width):
        np.testing.assert_array_equal(stats[k, :, 0], taking_part)
        np.testing.assert_allclose(stats[k, :, 1], wp * g[:, k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(stats[k, :, 2], wp * h[:, k], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(abs_sums, np.abs(stats).sum(axis=1), rtol=1e-13)
    row_losses = TreeEnsemble("gbt", raw.shape[1], task, max(width, 2)).row_losses(raw, y)
    np.testing.assert_allclose(loss_sum, np.sum(weight * row_losses), rtol=1e-12)
    assert weight_sum == pytest.approx(weight.sum(), rel=1e-14)
    assert np.isfinite(stats).all()


@pytest.mark.parametrize("task, width", TASKS)
def test_rounding_equals_exact_round_to_grid_and_totals_are_exact(task, width):
    raw, y, weight, taking_part = problem(task, width, seed=1)
    stats, abs_sums, _, _ = boosting.gradient_stats(task, raw, y, weight, taking_part)
    q = exact.exponents(abs_sums.max(axis=0))
    expected = [exact.round_to_grid(stats[k].copy(), q) for k in range(width)]
    totals = boosting.round_to_grid(stats, q)
    for k in range(width):
        np.testing.assert_array_equal(stats[k], expected[k])
        shuffled = expected[k][np.random.default_rng(k).permutation(len(expected[k]))]
        np.testing.assert_array_equal(totals[k], shuffled.sum(axis=0))  # exact: any order


def test_add_leaf_values_adds_each_leaf_to_its_rows():
    rng = np.random.default_rng(2)
    n = 500
    order = rng.permutation(n)[:400].astype(np.int64)
    # a root (0:400) split into 0:150 and 150:400, the latter into 150:300 and 300:400
    segments = np.array([[0, 400], [0, 150], [150, 400], [150, 300], [300, 400]])
    leaf = np.array([False, True, False, True, True])
    value = np.array([9.0, 0.5, 9.0, -1.25, 2.0])
    raw = rng.normal(size=(n, 3))
    expected = raw.copy()
    for node in np.flatnonzero(leaf):
        expected[order[segments[node, 0] : segments[node, 1]], 2] += value[node]
    boosting.add_leaf_values(raw, 2, order, segments, leaf, value)
    np.testing.assert_array_equal(raw, expected)


def test_bad_arguments_raise_value_error():
    raw, y, weight, taking_part = problem("multiclass", 4, n=50)
    with pytest.raises(ValueError, match="shape"):
        boosting.gradient_stats("multiclass", raw, y[:-1], weight, taking_part)
    with pytest.raises(ValueError, match="labels"):
        boosting.gradient_stats("multiclass", raw, y + 4, weight, taking_part)
    with pytest.raises(ValueError, match="one output column"):
        boosting.gradient_stats("binary", raw, y % 2, weight, taking_part)
    with pytest.raises(ValueError, match="q"):
        boosting.round_to_grid(np.zeros((1, 5, 3)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="3"):
        boosting.round_to_grid(np.zeros((1, 5, 4)), np.zeros(4, np.int64))
    order = np.arange(10, dtype=np.int64)
    order[3] = 99
    with pytest.raises(ValueError, match="row id"):
        boosting.add_leaf_values(np.zeros((10, 1)), 0, order, [[0, 10]], [True], [1.0])
    with pytest.raises(ValueError, match="column"):
        boosting.add_leaf_values(np.zeros((10, 1)), 1, np.arange(10), [[0, 10]], [True], [1.0])
    with pytest.raises(ValueError, match="segments"):
        boosting.add_leaf_values(np.zeros((10, 1)), 0, np.arange(10), [[0, 11]], [True], [1.0])


def test_add_leaf_values_adds_a_row_of_values_from_its_column():
    order = np.array([3, 0, 2, 1], dtype=np.int64)
    segments = np.array([[0, 4], [0, 1], [1, 4]])
    leaf = np.array([False, True, True])
    value = np.array([[9.0, 9.0], [1.0, 2.0], [-0.5, 0.25]])  # a forest leaf's class shares
    raw = np.zeros((4, 3))
    boosting.add_leaf_values(raw, 1, order, segments, leaf, value)
    np.testing.assert_array_equal(raw[:, 1:], [[-0.5, 0.25], [-0.5, 0.25], [-0.5, 0.25], [1, 2]])
    assert not raw[:, 0].any()
    with pytest.raises(ValueError, match="column"):
        boosting.add_leaf_values(raw, 2, order, segments, leaf, value)


def test_gradient_stats_write_into_a_given_buffer():
    raw, y, weight, taking_part = problem("multiclass", 4, n=100)
    expected = boosting.gradient_stats("multiclass", raw, y, weight, taking_part)[0]
    out = np.full((4, 100, 3), np.nan)
    stats = boosting.gradient_stats("multiclass", raw, y, weight, taking_part, out=out)[0]
    assert stats is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out"):
        boosting.gradient_stats("multiclass", raw, y, weight, taking_part, out=out[:3])
