"""First-order optimisers on flat vectors: gd/sgd, momentum (heavy ball or Nesterov), Adam.

Update rules (g the closure's gradient, η the scheduled rate), as in PyTorch:

* ``gd`` / ``sgd``: θ ← θ − η g. The two differ only in the batch the closure covers.
* ``momentum``: v ← μ v + g; θ ← θ − η v, or with Nesterov θ ← θ − η (g + μ v).
* ``adam``: m ← β₁ m + (1−β₁) g; v ← β₂ v + (1−β₂) g²;
  θ ← θ − η m̂ / (sqrt(v̂) + ε), with bias-corrected m̂, v̂.

On sparse mini-batches the allreduce strategy takes ``sgd`` and ``momentum`` steps
(heavy ball and Nesterov) in O(nonzeros of the batch) through :meth:`lazy_stepper`
(:mod:`mpigd.optim.lazy`), the L2 term included; Adam's steps stay O(n_params).
"""

from __future__ import annotations

import numpy as np

from kernels.update import adam_update
from mpigd.optim import lazy
from mpigd.optim.base import Closure, Optimizer
from mpigd.optim.schedule import Schedule


class GradientDescent(Optimizer):
    """Plain (stochastic) gradient descent."""

    def __init__(self, n_params: int, schedule: Schedule, **kwargs) -> None:
        super().__init__(n_params, **kwargs)
        self.schedule = schedule

    def step(self, params: np.ndarray, closure: Closure) -> float:
        loss = closure(params, self.grad)
        if not self.converged(self.grad):
            self._update(params, self.schedule.rate(self.steps))
            self.steps += 1
        return loss

    def epoch_fields(self) -> dict:
        """``lr``: the rate the last step used."""
        return {"lr": self.schedule.rate(max(self.steps - 1, 0))}

    def _update(self, params: np.ndarray, lr: float) -> None:
        params -= lr * self.grad

    def lazy_stepper(self, params, reg_mask, l2):
        """Scaled-weight O(nnz) steps (:class:`~mpigd.optim.lazy.LazySGD`)."""
        return lazy.LazySGD(self, params, reg_mask, l2)


class Momentum(GradientDescent):
    """SGD with momentum ``mu``; Nesterov's variant when ``nesterov``."""

    STATE_ARRAYS = ("velocity",)

    def __init__(self, n_params, schedule, mu: float = 0.9, nesterov: bool = False, **kw):
        super().__init__(n_params, schedule, **kw)
        self.mu = mu
        self.nesterov = nesterov
        self.velocity = np.zeros(n_params)

    def _update(self, params: np.ndarray, lr: float) -> None:
        self.velocity *= self.mu
        self.velocity += self.grad
        if self.nesterov:
            params -= lr * (self.grad + self.mu * self.velocity)
        else:
            params -= lr * self.velocity

    def lazy_stepper(self, params, reg_mask, l2):
        """O(nnz) steps of heavy ball or Nesterov (:class:`~mpigd.optim.lazy.LazyMomentum`)."""
        return lazy.LazyMomentum(self, params, reg_mask, l2)


class Adam(GradientDescent):
    """Adam (Kingma & Ba) with bias correction."""

    STATE_ARRAYS = ("m", "v")

    def __init__(self, n_params, schedule, beta1=0.9, beta2=0.999, eps=1e-8, **kw):
        super().__init__(n_params, schedule, **kw)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros(n_params)
        self.v = np.zeros(n_params)

    def lazy_stepper(self, params, reg_mask, l2):
        """None: Adam's update is not linear in its state, so every step is O(n_params)."""
        del params, reg_mask, l2

    def _update(self, params: np.ndarray, lr: float) -> None:
        t = self.steps + 1
        adam_update(params, self.grad, self.m, self.v, self.beta1, self.beta2,
                    lr / (1.0 - self.beta1**t), np.sqrt(1.0 - self.beta2**t), self.eps)  # fmt: skip
