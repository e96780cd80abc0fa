"""L-BFGS with a diagonal initial inverse Hessian (``--lbfgs-precondition diagonal``).

Its claim (mpigd/optim/lbfgs.py) is exact: preconditioned L-BFGS on f(w) is plain
L-BFGS on g(u) = f(M^(1/2) u), step for step. And on badly scaled columns, the case
it is for, it needs far fewer iterations than plain L-BFGS.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpigd.optim.lbfgs import LBFGS


def badly_scaled_logistic(n=400, d=12, seed=0):
    """A logistic objective whose column scales span 1e-3 .. 1e2, and its diagonal."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-3, 2, d)
    X = rng.standard_normal((n, d)) * scales
    y = (X / scales @ rng.standard_normal(d) + rng.logistic(size=n) > 0).astype(float)
    l2 = 1e-4

    def objective(w, grad_out):
        z = X @ w[:-1] + w[-1]
        loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w[:-1] @ w[:-1]
        r = (0.5 * (1 + np.tanh(0.5 * z)) - y) / n
        grad_out[:-1] = X.T @ r + l2 * w[:-1]
        grad_out[-1] = r.sum()
        return loss

    diagonal = 1.0 / np.append(np.mean(X * X, axis=0) + l2, 1.0)
    return objective, diagonal, d + 1


def test_preconditioned_lbfgs_is_plain_lbfgs_in_scaled_variables():
    objective, diagonal, n_params = badly_scaled_logistic()
    root = np.sqrt(diagonal)

    def in_u(u, grad_out):  # g(u) = f(M^(1/2) u), grad g = M^(1/2) grad f
        loss = objective(root * u, grad_out)
        grad_out *= root
        return loss

    pre, plain = LBFGS(n_params, tol=0.0), LBFGS(n_params, tol=0.0)
    pre.precondition(diagonal)
    w, u = np.zeros(n_params), np.zeros(n_params)
    for _ in range(12):
        pre.step(w, objective)
        plain.step(u, in_u)
        np.testing.assert_allclose(w, root * u, rtol=1e-7, atol=1e-12)


def test_a_diagonal_preconditioner_needs_far_fewer_iterations_on_badly_scaled_columns():
    objective, diagonal, n_params = badly_scaled_logistic()

    def iterations(precondition: bool) -> int:
        optimizer = LBFGS(n_params, tol=1e-7)
        if precondition:
            optimizer.precondition(diagonal)
        w = np.zeros(n_params)
        for step in range(1, 3001):
            optimizer.step(w, objective)
            if optimizer.stop_reason is not None:
                return step
        return 3000

    assert 2 * iterations(True) < iterations(False)


@pytest.mark.parametrize("bad", [np.zeros(3), -np.ones(3), np.ones(2)])
def test_a_preconditioner_must_be_positive_and_of_the_parameters_length(bad):
    with pytest.raises(ValueError, match="positive"):
        LBFGS(3).precondition(bad)
