"""O(nnz) optimiser steps on sparse mini-batches: ``sgd`` and ``momentum``, L2 included.

A mini-batch of sparse rows has a data gradient that is zero outside the flat indices
its features touch (:meth:`mpigd.models.Model.touched_params`). The L2 term still moves
every penalised coordinate each step, so a plain step costs O(d). The steppers here
defer that work: a coordinate the batch does not touch follows a *linear* recurrence
that is the same for all of them, so one scalar (sgd) or one 2x2 matrix per step
(momentum) records it for all, and a coordinate is brought up to date only when a batch
touches it, or when the parameters are read (:meth:`flush`). Touched coordinates take
the dense optimiser's own formula, so the result equals the dense optimiser's to
rounding (the tests hold it to 1e-10 relative over many steps).

* :class:`LazySGD`: Bottou's scaled weights. Penalised coordinates are stored as
  ``v`` with ``w = a v``; the L2 shrink ``w <- (1 - lr l2) w`` of the untouched ones is
  ``a <- a (1 - lr l2)``. When ``a`` leaves ``[1/window, window]`` every coordinate is
  materialised and ``a`` reset to 1 (O(d), once in ~``log(window) / (lr l2)`` steps).
* :class:`LazyMomentum`: heavy ball or Nesterov. An untouched coordinate's state
  ``(w, v)`` moves by a 2x2 matrix ``M_t`` (fixed by lr, l2, mu and whether the
  coordinate is penalised). Each coordinate keeps the step ``k`` at which it was last
  brought up to date; the stepper keeps, for every ``k`` since the last reset, the
  product ``M_{t-1} ... M_k`` (forward products only: no inverse of an ill-conditioned
  matrix, so no loss of precision as ``mu^t`` shrinks). That costs O(steps since the
  reset) per step; every ``horizon`` steps all coordinates are materialised and the
  products restart (O(d) amortised over ``horizon`` ~ sqrt(2 d) steps).

Intercepts (``reg_mask`` 0) are not penalised and never shrink. Adam and L-BFGS have
no such recurrence (Adam's step is not linear in its state) and stay O(d) per step.

While a stepper is attached, ``params`` and the optimiser's state arrays hold the
deferred representation: read them only after :meth:`flush` (the optimiser's
``state_dict`` flushes first; the allreduce strategy flushes at the end of every
epoch and before the loop reads the parameters for a checkpoint).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

#: Materialising every coordinate goes in slices of this many (bounded temporaries).
_CHUNK = 1 << 16


class _Stepper:
    """What both steppers share: the true parameters at a batch's indices while the batch
    reads them, and detaching. A subclass says whether work is deferred
    (:attr:`deferring`), gives the true values (:meth:`values`) and materialises all of
    them (:meth:`flush`)."""

    optimizer: object
    params: np.ndarray

    @property
    def deferring(self) -> bool:
        """Whether any stored value differs from the true one."""
        raise NotImplementedError

    def values(self, indices: np.ndarray) -> np.ndarray:
        """The true parameters at ``indices`` (O(len))."""
        raise NotImplementedError

    def flush(self) -> None:
        """Materialise every coordinate (O(d)); a no-op when nothing is deferred."""
        raise NotImplementedError

    @contextmanager
    def materialised(self, indices: np.ndarray):
        """``params[indices]`` holds the true values inside the block (a batch's loss and
        gradient read nothing else), the deferred ones again after it."""
        if not self.deferring:  # stored and true values agree
            yield
            return
        stored = self.params[indices]
        self.params[indices] = self.values(indices)
        try:
            yield
        finally:
            self.params[indices] = stored

    def detach(self) -> None:
        """Flush, and leave the optimiser and the parameters to the dense steps."""
        self.flush()
        self.optimizer.deferred = None


class LazySGD(_Stepper):
    """O(nnz) steps of :class:`~mpigd.optim.first_order.GradientDescent` (mini-batches).

    Parameters
    ----------
    optimizer : the GradientDescent whose schedule and step count it uses.
    params : (n_params,) the flat parameters, updated in place (deferred while attached).
    reg_mask : (n_params,) 1.0 where the L2 term applies, 0.0 on intercepts.
    l2 : the L2 coefficient.
    window : ``a`` is kept within ``[1/window, window]``.
    """

    def __init__(self, optimizer, params, reg_mask, l2: float, window: float = 2.0**128) -> None:
        self.optimizer, self.params, self.l2 = optimizer, params, float(l2)
        self.reg_mask = reg_mask
        self.penalised = reg_mask != 0
        self.window = window
        #: The scale of the penalised coordinates: w = scale * params there.
        self.scale = 1.0
        #: Times every coordinate was materialised (flushes that had work to do).
        self.flushes = 0
        optimizer.deferred = self

    @property
    def deferring(self) -> bool:
        return self.scale != 1.0

    def values(self, indices: np.ndarray) -> np.ndarray:
        return self.params[indices] * np.where(self.penalised[indices], self.scale, 1.0)

    def step(self, indices: np.ndarray, grad: np.ndarray) -> None:
        """One step: ``grad`` is the mean data gradient (no L2) at the sorted unique
        ``indices``, zero elsewhere. Advances the optimiser's step count."""
        optimizer = self.optimizer
        lr = optimizer.schedule.rate(optimizer.steps)
        shrink = 1.0 - lr * self.l2
        if not self._inside(self.scale * shrink):
            self.flush()
            if not self._inside(shrink):  # lr l2 near 1 or above 2: no deferral possible
                self._dense_step(indices, grad, lr)
                return
        penalised = self.penalised[indices]
        w = self.params[indices] * np.where(penalised, self.scale, 1.0)
        w -= lr * (grad + (w * self.reg_mask[indices]) * self.l2)  # the dense formula
        self.scale *= shrink
        self.params[indices] = w / np.where(penalised, self.scale, 1.0)
        optimizer.steps += 1

    def _inside(self, scale: float) -> bool:
        return 1.0 / self.window <= abs(scale) <= self.window

    def _dense_step(self, indices, grad, lr) -> None:
        """The step of every coordinate at once, as the dense optimiser takes it."""
        full = np.zeros_like(self.params)
        full[indices] = grad
        full += (self.params * self.reg_mask) * self.l2
        self.params -= lr * full
        self.optimizer.steps += 1

    def flush(self) -> None:
        if not self.deferring:
            return
        for lo in range(0, self.params.size, _CHUNK):
            part = slice(lo, lo + _CHUNK)
            self.params[part] *= np.where(self.penalised[part], self.scale, 1.0)
        self.scale = 1.0
        self.flushes += 1


class LazyMomentum(_Stepper):
    """O(nnz) steps of :class:`~mpigd.optim.first_order.Momentum` (heavy ball, or
    Nesterov), mini-batches.

    Parameters as :class:`LazySGD`, plus ``horizon``: steps between two resets of the
    products (default ~ sqrt(2 n_params), between 16 and 4096).
    """

    def __init__(self, optimizer, params, reg_mask, l2: float, horizon: int | None = None):
        self.optimizer, self.params, self.l2 = optimizer, params, float(l2)
        self.velocity = optimizer.velocity
        self.reg_mask = reg_mask
        #: 1 on penalised coordinates, 0 on intercepts: which product applies.
        self.kind = (reg_mask != 0).astype(np.intp)
        n = params.size
        self.horizon = horizon or int(np.clip(np.sqrt(2.0 * n), 16, 4096))
        #: The step since the reset at which each coordinate's stored state is true.
        self.last = np.zeros(n, dtype=np.int32)
        #: ``products[c, k]`` = M_{t-1} ... M_k for the coordinates of kind c (k <= t).
        self.products = np.zeros((2, self.horizon + 1, 2, 2))
        self.products[:, 0] = np.eye(2)
        self.t = 0
        self.flushes = 0
        optimizer.deferred = self

    def _state(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The true ``(w, v)`` at ``indices`` (O(len))."""
        move = self.products[self.kind[indices], self.last[indices]]
        w, v = self.params[indices], self.velocity[indices]
        return move[:, 0, 0] * w + move[:, 0, 1] * v, move[:, 1, 0] * w + move[:, 1, 1] * v

    @property
    def deferring(self) -> bool:
        return self.t != 0

    def values(self, indices: np.ndarray) -> np.ndarray:
        return self._state(indices)[0]

    def _update(self, w, v, grad, mask, lr: float):
        """The dense optimiser's update of ``(w, v)`` for data gradient ``grad``."""
        optimizer = self.optimizer
        grad = grad + (w * mask) * self.l2
        v = v * optimizer.mu + grad
        if optimizer.nesterov:
            return w - lr * (grad + optimizer.mu * v), v
        return w - lr * v, v

    def step(self, indices: np.ndarray, grad: np.ndarray) -> None:
        """One step: ``grad`` is the mean data gradient (no L2) at the sorted unique
        ``indices``, zero elsewhere. Advances the optimiser's step count."""
        if self.t == self.horizon:
            self.flush()
        lr = self.optimizer.schedule.rate(self.optimizer.steps)
        w, v = self._update(*self._state(indices), grad, self.reg_mask[indices], lr)
        self.params[indices], self.velocity[indices] = w, v
        self.t += 1
        self.last[indices] = self.t
        for kind in (0, 1):  # the untouched coordinates' move, through the same update
            unit = np.eye(2)
            new_w, new_v = self._update(unit[0], unit[1], 0.0, float(kind), lr)
            move = np.array([new_w, new_v])
            stack = self.products[kind, : self.t]
            stack[:] = move @ stack
            self.products[kind, self.t] = np.eye(2)
        self.optimizer.steps += 1

    def flush(self) -> None:
        if not self.deferring:
            return
        for lo in range(0, self.params.size, _CHUNK):
            part = np.arange(lo, min(lo + _CHUNK, self.params.size))
            self.params[part], self.velocity[part] = self._state(part)
        self.last[:] = 0
        self.products[:, 0] = np.eye(2)
        self.t = 0
        self.flushes += 1
