"""The ``numba`` backend: the interface of :mod:`kernels`, computed by :mod:`kernels.fused`
for a dense ``X`` and by :mod:`kernels.sparse` for a CSR one.

This module only checks arguments (the compiled kernels do no bounds checking of their
own, except the CSR kernels' column indices) and maps loss names to the kernels' integer
codes; the work, one read of ``X`` per call, is in those two modules, whose docstrings
give the design and the measurements behind it. The MLP layers (:mod:`kernels.dense`)
take a CSR first-layer input through scipy.
"""

import numpy

from kernels import fused, sparse
from kernels.dense import (  # the MLP layer kernels, shared by the CPU backends
    dense_backward,
    dense_forward,
    half_squared_error,
    relu_backward,
    relu_forward,
    softmax_xent,
)
from kernels.reference import (
    LINEAR_LOSSES,
    check_arrays,
    check_linear_params,
    check_loss,
    is_sparse,
    n_classes,
    to_device,
    to_host,
)

name = "numba"
xp = numpy

__all__ = [
    "dense_backward",
    "dense_forward",
    "half_squared_error",
    "relu_backward",
    "relu_forward",
    "softmax_xent",
    "LINEAR_LOSSES",
    "linear_decision",
    "linear_loss_grad",
    "name",
    "softmax_decision",
    "softmax_loss_grad",
    "to_device",
    "to_host",
    "xp",
]

_LOSS_CODES = {
    "squared": fused.SQUARED,
    "logistic": fused.LOGISTIC,
    "hinge": fused.HINGE,
    "squared_hinge": fused.SQUARED_HINGE,
}


def _as_rows(rows):
    """``rows`` as an int64 array (no copy when it already is one), or None."""
    return None if rows is None else numpy.asarray(rows, dtype=numpy.int64)


def _as_weights(sample_weight, n_rows):
    """``sample_weight`` as a float64 array of length ``n_rows``, or None."""
    if sample_weight is None:
        return None
    sample_weight = numpy.asarray(sample_weight, dtype=numpy.float64)
    if sample_weight.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},)")
    return sample_weight


def _as_targets(y, n_rows, dtype):
    """``y`` as a contiguous array of ``dtype`` and length ``n_rows``."""
    y = numpy.ascontiguousarray(y, dtype=dtype)
    if y.shape != (n_rows,):
        raise ValueError(f"y must have shape ({n_rows},), got {y.shape}")
    return y


def linear_loss_grad(loss, X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted loss sum of a linear model and its gradient, one read of ``X``.

    Same contract as :func:`kernels.reference.linear_loss_grad`.
    """
    check_loss(loss)
    check_arrays(X, params, grad_out)
    check_linear_params(X, params)
    n_rows = X.shape[0]
    y = _as_targets(y, n_rows, numpy.float64)
    sample_weight, rows = _as_weights(sample_weight, n_rows), _as_rows(rows)
    if is_sparse(X):
        value = sparse.linear_loss_grad(
            _LOSS_CODES[loss],
            X.indptr,
            X.indices,
            X.data,
            y,
            sparse.NO_WEIGHTS if sample_weight is None else sample_weight,
            params,
            grad_out,
            sparse.NO_ROWS if rows is None else rows,
            rows is None,
            accumulate,
        )
    else:
        value = fused.linear_loss_grad(
            _LOSS_CODES[loss], X, y, sample_weight, params, grad_out, rows, accumulate
        )
    return float(value)


def softmax_loss_grad(X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted cross-entropy sum of a softmax model and its gradient, one read of ``X``.

    Same contract as :func:`kernels.reference.softmax_loss_grad`.
    """
    check_arrays(X, params, grad_out)
    n_classes(params, X.shape[1])
    n_rows = X.shape[0]
    y = _as_targets(y, n_rows, numpy.int64)
    sample_weight, rows = _as_weights(sample_weight, n_rows), _as_rows(rows)
    if is_sparse(X):
        value = sparse.softmax_loss_grad(
            X.indptr,
            X.indices,
            X.data,
            y,
            sparse.NO_WEIGHTS if sample_weight is None else sample_weight,
            params,
            grad_out,
            sparse.NO_ROWS if rows is None else rows,
            rows is None,
            accumulate,
            X.shape[1],
        )
    else:
        value = fused.softmax_loss_grad(X, y, sample_weight, params, grad_out, rows, accumulate)
    return float(value)


def linear_decision(X, params):
    """``X @ w + b``, shape (n,), float64. Same contract as the reference."""
    check_arrays(X, params)
    check_linear_params(X, params)
    out = numpy.empty(X.shape[0])
    if is_sparse(X):
        sparse.linear_decision(X.indptr, X.indices, X.data, params, out)
    else:
        fused.linear_decision(X, params, out)
    return out


def softmax_decision(X, params):
    """``X @ W.T + b``, shape (n, C), float64. Same contract as the reference."""
    check_arrays(X, params)
    out = numpy.empty((X.shape[0], n_classes(params, X.shape[1])))
    if is_sparse(X):
        sparse.softmax_decision(X.indptr, X.indices, X.data, params, X.shape[1], out)
    else:
        fused.softmax_decision(X, params, out)
    return out
