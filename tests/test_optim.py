"""Optimisers on flat vectors, checked on problems with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mpigd.errors import ConfigError
from mpigd.optim import Schedule, create_optimizer
from mpigd.optim.first_order import Adam, GradientDescent, Momentum
from mpigd.optim.lbfgs import LBFGS

A = np.diag([1.0, 10.0, 100.0])
B = np.array([1.0, -2.0, 3.0])
OPTIMUM = np.linalg.solve(A, B)


def quadratic(params, grad_out):
    """f = ½ pᵀAp − bᵀp, an ill-conditioned quadratic with optimum A⁻¹b."""
    grad_out[:] = A @ params - B
    return float(0.5 * params @ A @ params - B @ params)


def rosenbrock(params, grad_out):
    x, y = params
    grad_out[:] = [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]
    return float((1 - x) ** 2 + 100 * (y - x * x) ** 2)


def test_gradient_descent_step_is_minus_lr_times_gradient():
    optimizer = GradientDescent(3, Schedule(0.01))
    params = np.ones(3)
    loss = optimizer.step(params, quadratic)
    assert loss == pytest.approx(quadratic(np.ones(3), np.empty(3)))
    np.testing.assert_allclose(params, np.ones(3) - 0.01 * (A @ np.ones(3) - B))


def test_momentum_and_nesterov_follow_their_update_rules():
    grad = A @ np.ones(3) - B
    heavy = Momentum(3, Schedule(0.01), mu=0.9)
    nesterov = Momentum(3, Schedule(0.01), mu=0.9, nesterov=True)
    p_heavy, p_nesterov = np.ones(3), np.ones(3)
    heavy.step(p_heavy, quadratic)
    nesterov.step(p_nesterov, quadratic)
    np.testing.assert_allclose(p_heavy, 1 - 0.01 * grad)
    np.testing.assert_allclose(p_nesterov, 1 - 0.01 * (grad + 0.9 * grad))
    second_grad = A @ p_heavy - B
    heavy.step(p_heavy, quadratic)
    np.testing.assert_allclose(p_heavy, 1 - 0.01 * grad - 0.01 * (0.9 * grad + second_grad))


def test_adam_first_step_moves_each_coordinate_by_lr():
    params = np.ones(3)
    Adam(3, Schedule(0.05)).step(params, quadratic)
    np.testing.assert_allclose(params, 1 - 0.05 * np.sign(A @ np.ones(3) - B), rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer",
    [
        GradientDescent(3, Schedule(0.015)),
        Momentum(3, Schedule(0.005), nesterov=True),
        Adam(3, Schedule(0.05, "cosine", total_steps=3000)),
    ],
)
def test_first_order_optimizers_converge_on_a_quadratic(optimizer):
    params = np.zeros(3)
    for _ in range(3000):
        optimizer.step(params, quadratic)
    np.testing.assert_allclose(params, OPTIMUM, atol=1e-3)


def test_lbfgs_solves_rosenbrock_and_says_why_it_stopped():
    optimizer = LBFGS(2, tol=1e-10)
    params = np.array([-1.2, 1.0])
    for _ in range(200):
        optimizer.step(params, rosenbrock)
        if optimizer.stop_reason:
            break
    assert optimizer.stop_reason.startswith("converged")
    np.testing.assert_allclose(params, [1.0, 1.0], atol=1e-8)
    assert optimizer.evaluations < 150


def test_lbfgs_steps_satisfy_the_wolfe_conditions():
    optimizer = LBFGS(3, tol=0.0, c1=1e-4, c2=0.9)
    params = np.array([5.0, -3.0, 2.0])
    grad = np.empty(3)
    for _ in range(5):
        before = params.copy()
        f0 = quadratic(before, grad)
        g0 = grad.copy()
        optimizer.step(params, quadratic)
        step = params - before
        f1 = quadratic(params, grad)
        assert f1 <= f0 + 1e-4 * (g0 @ step)  # sufficient decrease (alpha folded into step)
        assert abs(grad @ step) <= 0.9 * abs(g0 @ step)  # strong curvature condition


def test_lbfgs_stops_at_the_tolerance_without_moving():
    optimizer = LBFGS(3, tol=1e-6)
    params = OPTIMUM.copy()
    optimizer.step(params, quadratic)
    assert optimizer.stop_reason.startswith("converged")
    np.testing.assert_array_equal(params, OPTIMUM)


@pytest.mark.parametrize(
    "kind, step, expected",
    [
        ("constant", 123, 0.1),
        ("step", 25, 0.1 * 0.5**2),
        ("cosine", 50, 0.05),
        ("cosine", 100, 0.0),
        ("invsqrt", 30, 0.1 / math.sqrt(4.0)),
    ],
)
def test_schedules(kind, step, expected):
    schedule = Schedule(0.1, kind, steps_per_epoch=10, total_steps=100, step_epochs=1, gamma=0.5)
    assert schedule.rate(step) == pytest.approx(expected, abs=1e-15)


def test_full_batch_only_optimizers_refuse_a_batch_size():
    config = SimpleNamespace(batch_size=32, tol=0.0, momentum=0.9, nesterov=False, lbfgs_memory=5)
    with pytest.raises(ConfigError, match="full-batch"):
        create_optimizer("lbfgs", 3, Schedule(0.1), config)
    assert isinstance(create_optimizer("sgd", 3, Schedule(0.1), config), GradientDescent)


def test_the_reported_rate_is_the_one_the_last_step_used():
    optimizer = GradientDescent(3, Schedule(0.4, "step", steps_per_epoch=1, step_epochs=1,
                                            gamma=0.5))  # fmt: skip
    params = np.zeros(3)
    reported = []
    for _ in range(3):
        optimizer.step(params, quadratic)
        reported.append(optimizer.epoch_fields()["lr"])
    assert reported == [0.4, 0.2, 0.1]
