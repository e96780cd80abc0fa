"""The ``numpy`` (reference) backend: plain, vectorised numpy, written to be obviously correct.

Every function here is the specification the fast backends are tested against, and it is
also a usable backend (``--backend numpy``): it reads ``X`` twice per gradient (once
for ``X @ w``, once for ``X.T @ r``) and converts a float32 ``X`` to float64 with a full
temporary copy, so it is simple rather than fast. See :mod:`kernels` for the interface.

A CSR ``X`` (``scipy.sparse``) goes through the same two products, which scipy computes
on the nonzeros (``X @ w`` and ``X.T @ r``; for softmax ``X @ W.T`` and ``X.T @ R``); a
``rows=`` selection is gathered with ``X[rows]``, which stays sparse.

The argument checks (:func:`check_loss`, :func:`check_arrays`, :func:`n_classes`) live
here too and are shared by every backend, so all backends reject bad input alike.
"""

import numpy
import scipy.sparse

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


def is_sparse(X) -> bool:
    """Whether ``X`` is a sparse matrix: ``scipy.sparse`` on the host, ``cupyx.scipy.sparse``
    on a GPU (recognised by its module, so this needs no CuPy)."""
    return scipy.sparse.issparse(X) or type(X).__module__.startswith("cupyx.scipy.sparse")


def check_csr(X):
    """Check a sparse ``X`` the way :func:`check_arrays` checks a dense one.

    ``X`` must be canonical CSR: format ``csr``, data float32 or float64, indices and
    indptr int32 or int64 of matching lengths, column indices sorted within each row and
    no duplicates. Canonical form costs one O(nnz) scan per matrix, which scipy caches
    (``has_canonical_format``); it also guarantees a non-decreasing ``indptr``. Column
    indices are not range-checked here (that would be O(nnz) per call): the compiled
    kernels check each one as they read it, the reference the rows it multiplies.

    Raises
    ------
    ValueError
        Naming what is wrong, and for a non-canonical matrix, how to make it canonical.
    """
    if X.format != "csr":
        raise ValueError(
            f"a sparse X must be CSR, got {X.format.upper()}: convert it with X.tocsr()"
        )
    if len(X.shape) != 2 or X.dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"X must be 2-D float32 or float64, got {len(X.shape)}-D {X.dtype}")
    for label, array in (("indices", X.indices), ("indptr", X.indptr)):
        if array.ndim != 1 or array.dtype not in (numpy.int32, numpy.int64):
            raise ValueError(f"CSR {label} must be 1-D int32 or int64, got {array.dtype}")
    if X.indptr.shape[0] != X.shape[0] + 1 or X.indices.shape != X.data.shape:
        raise ValueError(
            f"CSR arrays do not match a ({X.shape[0]}, {X.shape[1]}) matrix: indptr has "
            f"{X.indptr.shape[0]} entries, indices {X.indices.shape[0]}, data {X.data.shape[0]}"
        )
    if X.shape[0] and (int(X.indptr[0]) != 0 or int(X.indptr[-1]) != X.data.shape[0]):
        raise ValueError("CSR indptr must start at 0 and end at the number of stored entries")
    if not X.has_canonical_format:
        raise ValueError(
            "X must be canonical CSR (column indices sorted within each row, no duplicates); "
            "X.sum_duplicates() makes it so"
        )


def check_arrays(X, params, grad_out=None):
    """Check the shapes and dtypes every kernel relies on.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous; or canonical CSR
        (see :func:`check_csr`)
    params : ndarray, shape (p,), float64
    grad_out : ndarray, shape (p,), float64, or None

    Raises
    ------
    ValueError
        On a wrong rank, dtype, layout or length. The compiled kernels do no bounds
        checking of their own, so these checks guard memory safety, not only style.
    """
    if is_sparse(X):
        check_csr(X)
    elif X.ndim != 2 or X.dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"X must be 2-D float32 or float64, got {X.ndim}-D {X.dtype}")
    elif not X.flags.c_contiguous:
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
    """The rows the call uses: all of them, or copies of ``X[rows]`` etc. (CSR stays CSR,
    its column indices checked: scipy's products would read out of bounds)."""
    if rows is not None:
        rows = numpy.asarray(rows, dtype=numpy.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
            raise IndexError("rows holds an index outside 0 .. n-1")
        X, y = X[rows], y[rows]
        sample_weight = None if sample_weight is None else sample_weight[rows]
    _check_columns(X)
    return X, y, sample_weight


def _check_columns(X):
    """Raise ``ValueError`` when a CSR ``X`` names a column outside ``0 .. d-1``: scipy's
    products do not check, and would read out of bounds. O(nnz); dense X passes."""
    if is_sparse(X) and X.nnz and (X.indices.min() < 0 or X.indices.max() >= X.shape[1]):
        raise ValueError("CSR column index outside 0 .. d-1")


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
    _check_columns(X)
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


def linear_loss_grad(loss, X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted loss sum of a linear model and its gradient.

    Parameters
    ----------
    loss : str
        One of :data:`LINEAR_LOSSES`.
    X : ndarray, shape (n, d), float32 or float64, C-contiguous; or canonical CSR
    y : ndarray, shape (n,), float64
    sample_weight : ndarray, shape (n,), float64, or None for all ones
    params : ndarray, shape (d + 1,), float64, ``[w, b]``
    grad_out : ndarray, shape (d + 1,), float64
        Overwritten with ``sum_i s_i * d loss_i / d params``.
    rows : ndarray of int64, optional
        Only these rows (repeats allowed) are used.
    accumulate : bool
        Add the gradient to ``grad_out`` instead of overwriting it.

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
    if not accumulate:
        grad_out[:] = 0.0
    grad_out[:-1] += X.T @ r
    grad_out[-1] += r.sum()
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
    _check_columns(X)
    n_features = X.shape[1]
    C = n_classes(params, n_features)
    W = params[: C * n_features].reshape(C, n_features)
    return X @ W.T + params[C * n_features :]


def softmax_loss_grad(X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted cross-entropy sum of a softmax model and its gradient.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous; or canonical CSR
    y : ndarray, shape (n,), int64
        Class ids ``0 .. C-1``.
    sample_weight : ndarray, shape (n,), float64, or None for all ones
    params : ndarray, shape (C * d + C,), float64, ``[W (C, d) row-major, b (C,)]``
    grad_out : ndarray, shape (C * d + C,), float64
        Overwritten with ``sum_i s_i * d loss_i / d params`` in the same layout.
    rows : ndarray of int64, optional
        Only these rows (repeats allowed) are used.
    accumulate : bool
        Add the gradient to ``grad_out`` instead of overwriting it.

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
    C, d = R.shape[1], X.shape[1]
    if not accumulate:
        grad_out[:] = 0.0
    G = grad_out[: C * d].reshape(C, d)
    G += (X.T @ R).T if is_sparse(X) else R.T @ X
    grad_out[C * d :] += R.sum(axis=0)
    return float(_weighted_sum(loss_i, sample_weight))
