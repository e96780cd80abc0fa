"""The interface every model implements: a flat parameter layout and kernel calls."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Model(ABC):
    """A model whose parameters live in one contiguous float64 vector.

    Subclasses fix the layout of that vector (documented in their docstring and in
    :meth:`layout`) and say which kernel computes its loss and gradient. A model never
    communicates: every method works on the rows of one rank and returns *sums* over
    those rows, which a strategy adds up across ranks.

    Attributes
    ----------
    name : the ``--model`` name.
    tasks : dataset tasks the model can be trained on.
    n_params : length of the flat parameter vector.
    reg_mask : (n_params,) float64, 1.0 where the L2 penalty applies, 0.0 on intercepts.
    """

    name: str
    tasks: tuple[str, ...]
    #: Whether ``loss_grad`` accepts ``grad_out=None`` and then skips the gradient.
    loss_without_gradient = False

    def __init__(self, backend, n_features: int, n_classes: int | None) -> None:
        self.backend = backend
        self.n_features = n_features
        self.n_classes = n_classes

    @property
    @abstractmethod
    def n_params(self) -> int: ...

    @property
    @abstractmethod
    def reg_mask(self) -> np.ndarray: ...

    @abstractmethod
    def layout(self) -> dict:
        """JSON-able description of the flat vector: name -> [offset, shape]."""

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """Starting parameters (n_params,) float64. Convex models start at zero."""
        del rng
        return np.zeros(self.n_params)

    def targets(self, y: np.ndarray) -> np.ndarray:
        """The label array in the form this model's kernel reads (converted once at load)."""
        return y

    @abstractmethod
    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        """Sum over rows of (weighted) per-row loss; ``grad_out`` gets the summed gradient.

        X : (n, d) local rows, a dense array or a canonical CSR matrix (count its rows with
        ``X.shape[0]``); y : output of :meth:`targets`; sample_weight : (n,) or None;
        params, grad_out : (n_params,) float64; rows : optional int64 row indices.
        accumulate : add the gradient to ``grad_out`` instead of overwriting it. The linear
        models then touch only :meth:`touched_params` of the batch, so that a caller
        keeping ``grad_out`` zero elsewhere pays O(nonzeros of the batch), not O(d).
        ``grad_out`` None asks for the loss alone: models that can skip the backward
        pass then do (the MLP); the others need not accept None.
        on_ready : optional ``on_ready(lo, hi)``, called as soon as ``grad_out[lo:hi]`` is
        final; the ranges reported cover the vector exactly once (layered models report
        layer by layer, last layer first; the others once, at the end).
        train : False for evaluation passes (no dropout).
        """

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        """Sorted int64 indices of the flat vector where the gradient of a batch can be
        nonzero when its rows use only the columns ``features`` (sorted; see
        :func:`mpigd.features.batch_features`): the weights of those columns and every
        parameter that does not belong to a column (intercepts, deeper layers). A sparse
        exchange sends the gradient at these indices only. The default, every index,
        is always correct."""
        del features
        return np.arange(self.n_params, dtype=np.int64)

    def weights_of_columns(self, values: np.ndarray, fill: float) -> np.ndarray:
        """A flat (n_params,) vector holding ``values[j]`` ((d,) per input column) at
        every weight that multiplies column j and ``fill`` elsewhere (intercepts, deeper
        layers). The default has no per-column weights: ``fill`` everywhere."""
        del values
        return np.full(self.n_params, float(fill))

    @property
    def full_size(self) -> int:
        """Length of the whole model's flat vector (``n_params`` unless it is split)."""
        return self.n_params

    def layer_ranges(self) -> list[tuple[int, int]]:
        """``(lo, hi)`` of each layer's block of the flat vector, input layer first."""
        return [(0, self.n_params)]

    def rng_state(self) -> dict | None:
        """State of the model's own random generator (dropout), or None if it has none."""
        return None

    def saved_arrays(self) -> dict | None:
        """The arrays model.h5 and checkpoint.h5 keep besides the flat parameters (a tree
        ensemble's trees, :mod:`mpigd.trees.ensemble`), by name; None: the parameters
        are the whole model. Replicated: every rank returns the same."""
        return None

    def load_saved_arrays(self, arrays: dict | None) -> None:
        """Restore what :meth:`saved_arrays` returned (on resume: the checkpoint's)."""
        del arrays

    def set_rng_state(self, state: dict) -> None:
        """Restore what :meth:`rng_state` returned."""
        del state

    @abstractmethod
    def predict(self, X, params) -> np.ndarray:
        """Predictions for the rows of X: class ids (classification) or values (regression)."""

    def count_correct(self, X, y, params) -> int:
        """Number of rows whose predicted class equals the label (classification only)."""
        return int(np.count_nonzero(self.predict(X, params) == y))
