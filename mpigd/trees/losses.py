"""The losses boosting fits, by their first and second derivatives per row.

The task decides the loss (as LightGBM's and scikit-learn's defaults do): squared error
for regression, the logistic loss for binary labels, softmax cross-entropy for several
classes. ``raw`` is the ensemble's raw output (n, width) (:mod:`mpigd.trees.ensemble`);
:func:`derivatives` gives the gradient and Hessian of the per-row loss with respect to
each output column, the statistics a boosting round's trees are grown from:

=============  ========================  ======================  =====================
loss           per-row loss              gradient ``g``          Hessian ``h``
=============  ========================  ======================  =====================
squared        (z - y)^2 / 2             z - y                   1
logistic       log(1 + e^z) - y z        p - y, p = sigmoid(z)   p (1 - p)
softmax        -log softmax(z)_y         p_k - [y = k]           p_k (1 - p_k)
=============  ========================  ======================  =====================

(The softmax Hessian is the diagonal one, as scikit-learn's HistGradientBoosting uses.)
The starting raw output (``base_score``) is the loss's best constant: the mean target,
the log-odds of the positive rate, the log of each class's share (a share of 0 is
floored at :data:`SHARE_FLOOR`).
"""

from __future__ import annotations

import numpy as np

#: Smallest class share whose logarithm a starting score takes.
SHARE_FLOOR = 1e-15


def loss_of(task: str) -> str:
    """The loss boosting fits for a dataset of ``task``."""
    return {"regression": "squared", "binary": "logistic", "multiclass": "softmax"}[task]


def base_score(task: str, target_sums: np.ndarray) -> np.ndarray:
    """The starting raw output (width,) from the global weighted sums ``target_sums``:
    ``[sum w, sum w y]`` for regression, the weighted class counts otherwise."""
    if task == "regression":
        return np.array([target_sums[1] / target_sums[0]])
    shares = np.maximum(target_sums / target_sums.sum(), SHARE_FLOOR)
    if task == "binary":
        return np.array([np.log(shares[1]) - np.log(shares[0])])
    return np.log(shares)


def derivatives(task: str, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(g, h)``, each (n, width) float64: the derivatives of the per-row loss with
    respect to each output column of ``raw`` (n, width), at labels or targets ``y``."""
    if task == "regression":
        return raw - y[:, None], np.ones_like(raw)
    if task == "binary":
        p = 1.0 / (1.0 + np.exp(-raw))
        return p - y[:, None], p * (1.0 - p)
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return p - (y[:, None] == np.arange(raw.shape[1])), p * (1.0 - p)
