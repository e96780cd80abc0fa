"""The ``numpy`` (reference) backend: plain, vectorised numpy, written to be obviously correct.

Every function here is the specification the fast backends are tested against, and it is
also a usable backend (``--backend numpy``): it reads ``X`` twice per gradient (once
for ``X @ w``, once for ``X.T @ r``) and converts a float32 ``X`` to float64 with a full
temporary copy, so it is simple rather than fast. See :mod:`kernels` for the interface.

The argument checks (:func:`check_loss`, :func:`check_arrays`, :func:`n_classes`) live
here too and are shared by every backend, so all backends reject bad input alike.
"""

import numpy

from kernels.dense import (  # the MLP layer kernels, shared by the CPU backends
    dense_backward,
    dense_forward,
    half_squared_error,
    relu_backward,
    relu_forward,
    softmax_xent,
)

__all__ = [
    "LINEAR_LOSSES",
    "dense_backward",
    "dense_forward",
    "half_squared_error",
    "linear_decision",
    "linear_loss_grad",
    "name",
    "relu_backward",
    "relu_forward",
    "softmax_decision",
    "softmax_loss_grad",
    "softmax_xent",
    "to_device",
    "to_host",
    "xp",
]

name = "numpy"
xp = numpy

LINEAR_LOSSES = ("squared", "logistic", "hinge", "squared_hinge")


def to_device(array):
    """The array in this backend's memory: host memory, so ``array`` itself."""
    return array


def to_host(array, out=None):
    """``array`` as a host numpy array (itself), or copied into ``out`` when given."""
    if out is None:
        return numpy.asarray(array)
    out[...] = array
    return out


def check_loss(loss):
    """Raise ``ValueError`` unless ``loss`` is one of :data:`LINEAR_LOSSES`."""
    if loss not in LINEAR_LOSSES:
        raise ValueError(f"unknown linear loss {loss!r}; choose one of {', '.join(LINEAR_LOSSES)}")


def check_arrays(X, params, grad_out=None):
    """Check the shapes and dtypes every kernel relies on.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
    params : ndarray, shape (p,), float64
    grad_out : ndarray, shape (p,), float64, or None

    Raises
    ------
    ValueError
        On a wrong rank, dtype, layout or length. The compiled kernels do no bounds
        checking of their own, so these checks guard memory safety, not only style.
    """
    if X.ndim != 2 or X.dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"X must be 2-D float32 or float64, got {X.ndim}-D {X.dtype}")
    if not X.flags.c_contiguous:
        raise ValueError("X must be C-contiguous (row-major)")
    if params.ndim != 1 or params.dtype != numpy.float64:
        raise ValueError(f"params must be 1-D float64, got {params.ndim}-D {params.dtype}")
    if grad_out is not None and (grad_out.shape != params.shape or grad_out.dtype != numpy.float64):
        raise ValueError(
            f"grad_out must be float64 of shape {params.shape}, "
            f"got {grad_out.dtype} of shape {grad_out.shape}"
        )


def n_classes(params, n_features):
    """Number of classes C of a softmax parameter vector of length ``C * (d + 1)``."""
    n_classes, rest = divmod(params.shape[0], n_features + 1)
    if rest or n_classes < 1:
        raise ValueError(
            f"softmax params of length {params.shape[0]} do not split into C * (d + 1) "
            f"with d = {n_features}"
        )
    return n_classes


def check_linear_params(X, params):
    """Raise ``ValueError`` unless ``params`` has length ``d + 1``."""
    if params.shape[0] != X.shape[1] + 1:
        raise ValueError(f"linear params must have length d + 1 = {X.shape[1] + 1}")


def _select(X, y, sample_weight, rows):
    """The rows the call uses: all of them, or copies of ``X[rows]`` etc."""
    if rows is None:
        return X, y, sample_weight
    rows = numpy.asarray(rows, dtype=numpy.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
        raise IndexError("rows holds an index outside 0 .. n-1")
    weight = None if sample_weight is None else sample_weight[rows]
    return X[rows], y[rows], weight


def _weighted_sum(values, sample_weight):
    """``sum_i s_i * values_i`` along axis 0, with ``s = 1`` when ``sample_weight`` is None."""
    if sample_weight is None:
        return values.sum(axis=0)
    return sample_weight @ values


def linear_decision(X, params):
    """Linear model output ``z = X @ w + b``.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64
    params : ndarray, shape (d + 1,), float64, ``[w, b]``

    Returns
    -------
    ndarray, shape (n,), float64
    """
    check_arrays(X, params)
    check_linear_params(X, params)
    return X @ params[:-1] + params[-1]


def linear_losses(loss, z, y):
    """Per-row loss and its derivative with respect to ``z``.

    Parameters
    ----------
    loss : str
        One of :data:`LINEAR_LOSSES`.
    z : ndarray, shape (n,), float64
        Model outputs.
    y : ndarray, shape (n,), float64
        Targets: values for ``squared``, 0/1 labels otherwise (``t = 2y - 1`` for the hinges).

    Returns
    -------
    loss_i, slope_i : ndarray, shape (n,), float64
        ``loss_i(z_i)`` and ``d loss_i / d z_i`` (for the hinge, the subgradient that is 0
        on the kink ``t z = 1``).
    """
    check_loss(loss)
    if loss == "squared":
        residual = z - y
        return 0.5 * residual**2, residual
    if loss == "logistic":
        log1p_exp = numpy.logaddexp(0.0, z)  # log(1 + e^z) without overflow
        return log1p_exp - y * z, numpy.exp(z - log1p_exp) - y  # sigmoid(z) - y
    t = 2.0 * y - 1.0
    margin = numpy.maximum(0.0, 1.0 - t * z)
    if loss == "hinge":
        return margin, numpy.where(margin > 0.0, -t, 0.0)
    return margin**2, -2.0 * t * margin


def linear_loss_grad(loss, X, y, sample_weight, params, grad_out, rows=None):
    """Weighted loss sum of a linear model and its gradient.

    Parameters
    ----------
    loss : str
        One of :data:`LINEAR_LOSSES`.
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
    y : ndarray, shape (n,), float64
    sample_weight : ndarray, shape (n,), float64, or None for all ones
    params : ndarray, shape (d + 1,), float64, ``[w, b]``
    grad_out : ndarray, shape (d + 1,), float64
        Overwritten with ``sum_i s_i * d loss_i / d params``.
    rows : ndarray of int64, optional
        Only these rows (repeats allowed) are used.

    Returns
    -------
    float
        ``sum_i s_i * loss_i``: not averaged, no regularisation (the caller adds both).
    """
    check_arrays(X, params, grad_out)
    check_linear_params(X, params)
    X, y, sample_weight = _select(X, y, sample_weight, rows)
    loss_i, slope = linear_losses(loss, linear_decision(X, params), y)
    r = slope if sample_weight is None else sample_weight * slope
    grad_out[:-1] = X.T @ r
    grad_out[-1] = r.sum()
    return float(_weighted_sum(loss_i, sample_weight))


def softmax_decision(X, params):
    """Softmax model logits ``Z = X @ W.T + b``.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64
    params : ndarray, shape (C * d + C,), float64
        ``W`` of shape (C, d) row-major, then ``b`` of shape (C,).

    Returns
    -------
    ndarray, shape (n, C), float64
    """
    check_arrays(X, params)
    n_features = X.shape[1]
    C = n_classes(params, n_features)
    W = params[: C * n_features].reshape(C, n_features)
    return X @ W.T + params[C * n_features :]


def softmax_loss_grad(X, y, sample_weight, params, grad_out, rows=None):
    """Weighted cross-entropy sum of a softmax model and its gradient.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
    y : ndarray, shape (n,), int64
        Class ids ``0 .. C-1``.
    sample_weight : ndarray, shape (n,), float64, or None for all ones
    params : ndarray, shape (C * d + C,), float64, ``[W (C, d) row-major, b (C,)]``
    grad_out : ndarray, shape (C * d + C,), float64
        Overwritten with ``sum_i s_i * d loss_i / d params`` in the same layout.
    rows : ndarray of int64, optional
        Only these rows (repeats allowed) are used.

    Returns
    -------
    float
        ``sum_i s_i * (-log softmax(z_i)[y_i])``, computed stably (row max subtracted).
    """
    check_arrays(X, params, grad_out)
    X, y, sample_weight = _select(X, y, sample_weight, rows)
    if y.size and (y.min() < 0 or y.max() >= n_classes(params, X.shape[1])):
        raise ValueError("softmax class ids must lie in 0 .. C-1")
    Z = softmax_decision(X, params)
    Z -= Z.max(axis=1, keepdims=True)
    log_norm = numpy.log(numpy.exp(Z).sum(axis=1))
    picked = numpy.arange(y.shape[0]), y
    loss_i = log_norm - Z[picked]
    R = numpy.exp(Z - log_norm[:, None])  # probabilities P
    R[picked] -= 1.0  # P - onehot(y)
    if sample_weight is not None:
        R *= sample_weight[:, None]
    C = R.shape[1]
    grad_out[: C * X.shape[1]] = (R.T @ X).ravel()
    grad_out[C * X.shape[1] :] = R.sum(axis=0)
    return float(_weighted_sum(loss_i, sample_weight))
