"""Linear models with one output: linreg, logreg and the linear SVM.

Flat parameter layout (n_params = d + 1): ``[w_0, ..., w_{d-1}, b]``, weights then the
intercept ``b``. Per-row losses with ``z = x.w + b`` (docs/architecture.md, "Objective"):

========  ============================  =========================
model     loss                          labels
========  ============================  =========================
linreg    ½ (z − y)²                    real y (regression)
logreg    log(1 + e^z) − y z            y in {0, 1}
svm       max(0, 1 − t z)   (hinge)     y in {0, 1}, t = 2y − 1
svm       max(0, 1 − t z)²  (squared)   with ``--svm-loss squared-hinge``
========  ============================  =========================

The hinge is the default SVM loss, as in Spark MLlib's ``LinearSVC``; it is not
differentiable at t z = 1, where the kernel takes the subgradient 0. The squared
hinge is smooth and suits L-BFGS better.
"""

from __future__ import annotations

import numpy as np

from mpigd.models.base import Model


class LinearModel(Model):
    """One linear output ``z = X w + b`` under the per-row loss named by ``loss``."""

    def __init__(self, backend, n_features: int, n_classes: int | None, loss: str) -> None:
        super().__init__(backend, n_features, n_classes)
        self.loss = loss

    @property
    def n_params(self) -> int:
        return self.n_features + 1

    @property
    def reg_mask(self) -> np.ndarray:
        mask = np.ones(self.n_params)
        mask[-1] = 0.0
        return mask

    def layout(self) -> dict:
        return {"w": [0, [self.n_features]], "b": [self.n_features, []]}

    def targets(self, y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=np.float64)

    def weights_of_columns(self, values: np.ndarray, fill: float) -> np.ndarray:
        return np.append(np.asarray(values, dtype=np.float64), float(fill))

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        return np.append(np.asarray(features, dtype=np.int64), self.n_features)

    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        loss = self.backend.linear_loss_grad(
            self.loss, X, y, sample_weight, params, grad_out, rows=rows, accumulate=accumulate
        )
        if on_ready is not None:
            on_ready(0, self.n_params)
        return loss

    def predict(self, X, params) -> np.ndarray:
        z = self.backend.linear_decision(X, params)
        if self.loss == "squared":
            return z
        return (z > 0).astype(np.int64)


class LinReg(LinearModel):
    """Least-squares linear regression (``--model linreg``)."""

    name = "linreg"
    tasks = ("regression",)

    def __init__(self, backend, n_features, n_classes=None) -> None:
        super().__init__(backend, n_features, n_classes, "squared")


class LogReg(LinearModel):
    """Binary logistic regression (``--model logreg``)."""

    name = "logreg"
    tasks = ("binary",)

    def __init__(self, backend, n_features, n_classes=2) -> None:
        super().__init__(backend, n_features, n_classes, "logistic")


class LinearSVM(LinearModel):
    """Linear SVM, hinge (default) or squared hinge loss (``--model svm``)."""

    name = "svm"
    tasks = ("binary",)
    LOSSES = {"hinge": "hinge", "squared-hinge": "squared_hinge"}

    def __init__(self, backend, n_features, n_classes=2, svm_loss: str = "hinge") -> None:
        super().__init__(backend, n_features, n_classes, self.LOSSES[svm_loss])
