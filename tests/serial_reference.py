"""Independent serial numpy implementations of every model's objective, for the tests.

Written from the objective's definitions (docs/architecture.md) without using
``kernels`` or ``mpigd.models``, so the distributed code is checked against a second,
plain implementation. Parameter layouts match the documented flat vectors: linear
``[w, b]``; softmax ``[W (C,d), b (C)]``.
"""

from __future__ import annotations

import numpy as np


def unpack(model: str, params: np.ndarray, d: int):
    """(weights, bias) views: (d,), () for linear models; (C, d), (C,) for softmax."""
    if model == "softmax":
        c = params.size // (d + 1)
        return params[: c * d].reshape(c, d), params[c * d :]
    return params[:d], params[d]


def objective(model, params, X, y, l2=0.0, sample_weight=None, svm_loss="hinge"):
    """f(θ) = (1/n) Σ s_i ℓ_i + (l2/2)||w||² and its gradient, in float64."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    s = np.ones(n) if sample_weight is None else sample_weight
    W, b = unpack(model, params, d)
    grad = np.zeros_like(params)
    gW, gb = unpack(model, grad, d)
    if model == "softmax":
        Z = X @ W.T + b
        Z -= Z.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(Z).sum(axis=1))
        losses = logsum - Z[np.arange(n), y]
        R = np.exp(Z - logsum[:, None])
        R[np.arange(n), y] -= 1.0
        R *= s[:, None]
        gW[:] = R.T @ X
        gb[:] = R.sum(axis=0)
    else:
        z = X @ W + b
        if model == "linreg":
            losses, r = 0.5 * (z - y) ** 2, z - y
        elif model == "logreg":
            losses = np.logaddexp(0.0, z) - y * z
            r = 1.0 / (1.0 + np.exp(-z)) - y
        else:
            t = 2.0 * y - 1.0
            margin = np.maximum(0.0, 1.0 - t * z)
            if svm_loss == "hinge":
                losses, r = margin, np.where(margin > 0, -t, 0.0)
            else:
                losses, r = margin**2, -2.0 * t * margin
        r = r * s
        grad[:d] = X.T @ r
        grad[d] = r.sum()
    value = float((s * losses).sum() / n)
    grad /= n
    value += 0.5 * l2 * float((W * W).sum())
    gW += l2 * W
    return value, grad


def gradient_descent(
    model, X, y, lr, steps, l2=0.0, n_classes=None, sample_weight=None, svm_loss="hinge"
):
    """Plain full-batch GD from zero: the serial reference for distributed runs."""
    d = X.shape[1]
    params = np.zeros((n_classes * (d + 1)) if model == "softmax" else d + 1)
    for _ in range(steps):
        _, grad = objective(model, params, X, y, l2, sample_weight, svm_loss)
        params -= lr * grad
    return params
