"""The training objective on one rank's rows, as sums ready to be combined across ranks.

Objective (docs/architecture.md): f(θ) = (1/n) Σ_i s_i ℓ_i(θ) + (l2/2) ||w||², the mean over the n
rows of a batch (all training rows for full batch, on all ranks) with per-row weights
s_i (1, or the balanced class weights), the intercepts not regularised.

One rank contributes a *packed* vector ``[Σ s_i ∇ℓ_i (n_params) | Σ s_i ℓ_i | n_local]``;
a strategy sums the packed vectors of all ranks in one collective (so gradient, loss
and row count travel together and uneven shares still give the exact global mean), and
:meth:`LocalObjective.finish` turns the global sums into f and ∇f.

On sparse (CSR) rows a mini-batch's gradient is zero outside the flat indices its
features touch; :meth:`LocalObjective.sparse_sums` returns it at those indices only, in
O(nonzeros of the batch), for the sparse gradient exchange
(:mod:`mpigd.strategies.sparse_exchange`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpigd.features import batch_features
from mpigd.timing import PhaseTimer


class LocalObjective:
    """This rank's rows, the model and the L2 term.

    Parameters
    ----------
    model : a :class:`mpigd.models.Model`.
    X : (n_local, d) this rank's training rows.  y : their targets (``model.targets``).
    sample_weight : (n_local,) float64 or None.
    l2 : the L2 coefficient.  timer : where compute time is booked.
    accumulate : micro-batches per local batch (gradient accumulation).
    penalty_sum : sums this rank's share of the L2 term over the ranks that share the
        parameters (a split model's group); ``float`` (no-op) when each rank has all.
    """

    def __init__(
        self,
        model,
        X,
        y,
        sample_weight,
        l2: float,
        timer: PhaseTimer,
        accumulate: int = 1,
        penalty_sum=float,
    ) -> None:
        self.model = model
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self.l2 = l2
        self.reg_mask = model.reg_mask
        self._weights = np.empty(model.n_params)  # scratch of finish(): the penalised part
        self.timer = timer
        self.accumulate = accumulate
        self.n_params = model.n_params
        self.penalty_sum = penalty_sum
        #: Passes over all of this rank's rows so far (full-batch objective evaluations).
        self.full_passes = 0
        #: Whether the rows are host CSR and the model's gradient of a batch touches less
        #: than the whole vector: then a batch's gradient can travel sparse.
        self.sparse = sp.issparse(X) and (
            model.touched_params(np.zeros(0, dtype=np.int64)).size < model.n_params
        )
        #: (n_params,) zero outside :meth:`sparse_sums`, which adds a batch's gradient
        #: into it and zeroes the touched entries again (allocated on first use).
        self._scratch = None

    def packed_buffer(self) -> np.ndarray:
        """A fresh (n_params + 2,) float64 buffer for :meth:`local_sums`."""
        return np.zeros(self.n_params + 2)

    def warm_up(self, params: np.ndarray, test_X: np.ndarray | None = None) -> None:
        """Run every kernel training and evaluation will call, on one row or none.

        Compiled kernels (Numba) are built on first call, once per argument type; doing
        it here keeps compile time out of the first epoch's times. ``test_X``: a row of
        the test set, whose dtype may differ from the training rows'.
        """
        scratch = np.empty(self.n_params)
        head = slice(0, min(1, self.X.shape[0]))
        weights = None if self.sample_weight is None else self.sample_weight[head]
        self.model.loss_grad(self.X[head], self.y[head], weights, params, scratch)
        no_rows = np.zeros(0, dtype=np.int64)
        self.model.loss_grad(self.X, self.y, self.sample_weight, params, scratch, rows=no_rows)
        if self.sparse:  # the sparse exchange's sums (the kernels' accumulating variant)
            first = np.arange(head.stop, dtype=np.int64)
            self.sparse_sums(params, first, self.touched(first))
        for X in (self.X[head], test_X):  # evaluation: unweighted loss, predictions
            if X is not None and X.shape[0]:
                targets = np.zeros(X.shape[0], dtype=self.y.dtype)
                self.model.loss_grad(X, targets, None, params, scratch)
                self.model.predict(X, params)

    def local_sums(
        self, params: np.ndarray, rows: np.ndarray | None, packed: np.ndarray, on_ready=None
    ) -> None:
        """Fill ``packed`` with this rank's gradient sum, loss sum and row count.

        ``rows`` selects local row indices (a mini-batch); ``None`` means all local rows.
        With ``accumulate`` K > 1 the rows are processed in K micro-batches whose sums
        are added up (less memory for activations, the same sums). ``on_ready(lo, hi)``
        is passed to the model for the last micro-batch only: a gradient range is final
        once that micro-batch has produced it.
        """
        with self.timer.phase("compute"):
            grad_sum = packed[: self.n_params]
            micro_batches = self._micro_batches(rows)
            partial = np.empty(self.n_params) if len(micro_batches) > 1 else None
            loss_sum = 0.0
            for index, micro in enumerate(micro_batches):
                passed_on = on_ready if index == len(micro_batches) - 1 else None
                if index == 0:
                    target, ready = grad_sum, passed_on
                else:
                    target, ready = partial, self._adding(partial, grad_sum, passed_on)
                loss_sum += self.model.loss_grad(
                    self.X, self.y, self.sample_weight, params, target, rows=micro,
                    on_ready=ready,
                )  # fmt: skip
            packed[self.n_params] = loss_sum
            packed[self.n_params + 1] = self.X.shape[0] if rows is None else len(rows)
        self.full_passes += rows is None

    def touched(self, rows: np.ndarray | None) -> np.ndarray:
        """Sorted int64 flat indices where the gradient over ``rows`` (None: all this
        rank's rows) can be nonzero; O(nonzeros of the rows). Sparse rows only."""
        return self.model.touched_params(batch_features(self.X, rows))

    def sparse_sums(
        self, params: np.ndarray, rows: np.ndarray | None, touched: np.ndarray
    ) -> tuple[np.ndarray, float, int]:
        """This rank's gradient sum at ``touched`` (from :meth:`touched`), loss sum and
        row count over ``rows`` (None: all its rows), as :meth:`local_sums` computes
        them but in O(nonzeros of the rows) where the model's gradient is (the MLP's
        deeper layers are dense): the model adds the gradient (``accumulate=True``) into
        a scratch vector kept zero, which is read at ``touched`` and zeroed there.

        Reads ``params`` only where ``touched`` says. Returns ``(values, loss_sum,
        rows)``, ``values`` a new (len(touched),) float64 array.
        """
        if self._scratch is None:
            self._scratch = np.zeros(self.n_params)
        scratch = self._scratch
        with self.timer.phase("compute"):
            loss_sum = 0.0
            try:
                for micro in self._micro_batches(rows):
                    loss_sum += self.model.loss_grad(
                        self.X, self.y, self.sample_weight, params, scratch, rows=micro,
                        accumulate=True,
                    )  # fmt: skip
                values = scratch[touched]
            finally:
                scratch[touched] = 0.0
        self.full_passes += rows is None
        return values, loss_sum, self.X.shape[0] if rows is None else len(rows)

    @staticmethod
    def _adding(partial: np.ndarray, total: np.ndarray, on_ready):
        """An ``on_ready`` that adds each finished range of ``partial`` into ``total``
        (so every range is added exactly once) and then passes the news on."""

        def ready(lo: int, hi: int) -> None:
            total[lo:hi] += partial[lo:hi]
            if on_ready is not None:
                on_ready(lo, hi)

        return ready

    def _micro_batches(self, rows: np.ndarray | None) -> list:
        """The rows in ``accumulate`` nearly equal micro-batches (``[rows]`` if 1)."""
        if self.accumulate == 1:
            return [rows]
        everything = np.arange(self.X.shape[0]) if rows is None else rows
        return np.array_split(everything, self.accumulate)

    def finish(self, packed: np.ndarray, params: np.ndarray, grad_out: np.ndarray) -> float:
        """From global sums: write ∇f into ``grad_out`` and return f (both at ``params``).

        An empty global batch (count 0) gives f = L2 term and only its gradient.
        """
        # A diverging run may overflow here; the strategy reports it, numpy need not warn.
        with self.timer.phase("compute"), np.errstate(over="ignore", invalid="ignore"):
            count = packed[self.n_params + 1]
            scale = 1.0 / count if count > 0 else 0.0
            np.multiply(packed[: self.n_params], scale, out=grad_out)
            data_loss = float(packed[self.n_params] * scale)
            if not self.l2:
                return data_loss
            penalty, weights = self._penalty(params)
            weights *= self.l2
            grad_out += weights
            return data_loss + penalty

    def local_loss(self, params: np.ndarray) -> np.ndarray:
        """This rank's ``[loss sum, rows]`` over all its rows, without the gradient when
        the model can skip it (the MLP's backward pass): the epoch's ``train_loss``."""
        sums = np.zeros(2)
        with self.timer.phase("compute"):
            grad = None if self.model.loss_without_gradient else self._weights
            for micro in self._micro_batches(None):
                sums[0] += self.model.loss_grad(
                    self.X, self.y, self.sample_weight, params, grad, rows=micro
                )
            sums[1] = self.X.shape[0]
        self.full_passes += 1
        return sums

    def loss_value(self, sums: np.ndarray, params: np.ndarray) -> float:
        """f from the global ``[loss sum, rows]`` of :meth:`local_loss`, L2 term included."""
        with np.errstate(over="ignore", invalid="ignore"):
            data_loss = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
            if not self.l2:
                return data_loss
            return data_loss + self._penalty(params)[0]

    def _penalty(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """(l2/2)·||w||² summed over the ranks sharing the parameters, and w: the
        penalised entries of ``params`` (intercepts zeroed), in a scratch buffer."""
        weights = np.multiply(params, self.reg_mask, out=self._weights)
        return self.penalty_sum(l2_term(weights, self.l2)), weights


def l2_term(weights: np.ndarray, l2: float) -> float:
    """The objective's penalty (l2/2)·||w||² of the penalised entries ``weights``."""
    return 0.5 * l2 * float(weights @ weights)
