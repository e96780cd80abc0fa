"""Multinomial logistic (softmax) regression.

Flat parameter layout (n_params = C d + C): ``W`` of shape (C, d) row-major, then the
intercepts ``b`` of shape (C,). Per-row loss: cross-entropy −log softmax(W x + b)_y.
"""

from __future__ import annotations

import numpy as np

from mpigd.models.base import Model


class Softmax(Model):
    """Softmax regression over ``n_classes`` classes (``--model softmax``)."""

    name = "softmax"
    tasks = ("binary", "multiclass")

    @property
    def n_params(self) -> int:
        return self.n_classes * (self.n_features + 1)

    @property
    def reg_mask(self) -> np.ndarray:
        mask = np.ones(self.n_params)
        mask[self.n_classes * self.n_features :] = 0.0
        return mask

    def layout(self) -> dict:
        c, d = self.n_classes, self.n_features
        return {"W": [0, [c, d]], "b": [c * d, [c]]}

    def targets(self, y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=np.int64)

    def weights_of_columns(self, values: np.ndarray, fill: float) -> np.ndarray:
        weights = np.tile(np.asarray(values, dtype=np.float64), self.n_classes)
        return np.concatenate((weights, np.full(self.n_classes, float(fill))))

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        c, d = self.n_classes, self.n_features
        weights = (np.arange(c, dtype=np.int64)[:, None] * d + features).ravel()
        return np.concatenate((weights, np.arange(c * d, c * (d + 1), dtype=np.int64)))

    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        loss = self.backend.softmax_loss_grad(
            X, y, sample_weight, params, grad_out, rows=rows, accumulate=accumulate
        )
        if on_ready is not None:
            on_ready(0, self.n_params)
        return loss

    def predict(self, X, params) -> np.ndarray:
        return np.argmax(self.backend.softmax_decision(X, params), axis=1)
