"""Tests of the kernels on CSR rows (:mod:`kernels.sparse` behind ``numba``, scipy.sparse in
the ``numpy`` reference, cuSPARSE in ``cupy``): each against the scipy reference and the
dense kernel on ``X.toarray()``, gradients against finite differences, ``accumulate``
touching only the batch's columns, empty rows and selections, and the CSR checks.

The matrices are small; most cases use int32 indices so that the compiled kernels are
built for few signatures (Numba compile time, not the arithmetic, is what these cost).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from test_gpu import require_gpu

from kernels import get_backend, reference, sparse

LOSSES = reference.LINEAR_LOSSES
numba_backend = get_backend("numba")


def sparse_rows(n=41, d=17, dtype=np.float64, index_dtype=np.int32, seed=0):
    """A canonical CSR ``X`` (n, d) of density ~0.3 whose rows 3 and 10 and columns 1 and
    5 are empty."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.3)
    dense[[3, 10]] = 0.0
    dense[:, [1, 5]] = 0.0
    X = sp.csr_matrix(dense.astype(dtype))
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    assert X.has_canonical_format
    return X


def linear_targets(loss, n, seed=1):
    """Values for ``squared``, 0/1 labels otherwise; per-row weights."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n) if loss == "squared" else (rng.random(n) < 0.5).astype(float)
    return y, rng.uniform(0.5, 2.0, n)


def selection(name, n):
    """``rows=``: all rows, or a shuffled subset with repeats that includes an empty row."""
    if name == "all":
        return None
    rows = np.random.default_rng(2).permutation(n)[: n // 2]
    return np.concatenate((rows, [3, 7, 7, 7, rows[0]])).astype(np.int64)


def touched(X, rows, n_params):
    """Boolean mask of the flat entries a batch may change: in each of the ``n_params //
    (d + 1)`` weight blocks (1 linear, C softmax) its columns, and the intercepts."""
    X = X if rows is None else X[rows]
    d = X.shape[1]
    n_blocks = n_params // (d + 1)
    mask = np.zeros(n_params, dtype=bool)
    for c in range(n_blocks):
        mask[c * d + X.indices] = True
    mask[n_blocks * d :] = True
    return mask


def assert_close(actual, expected, rtol=1e-12):
    """Equal up to ``rtol`` relative to the largest entry (entries may cancel to ~0)."""
    expected = np.asarray(expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def finite_difference_gradient(loss_of, params, h=1e-6):
    """Central differences of the scalar function ``loss_of`` at ``params``."""
    grad = np.empty_like(params)
    for k in range(params.size):
        step = np.zeros_like(params)
        step[k] = h
        grad[k] = (loss_of(params + step) - loss_of(params - step)) / (2.0 * h)
    return grad


# -- numba against the scipy reference and the dense kernel -----------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rows_name", ["all", "repeats"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_linear_matches_reference_and_dense(loss, dtype, weighted, rows_name, accumulate):
    X = sparse_rows(dtype=dtype)
    n, d = X.shape
    y, weight = linear_targets(loss, n)
    weight = weight if weighted else None
    rows = selection(rows_name, n)
    params = np.random.default_rng(3).standard_normal(d + 1)
    start = np.random.default_rng(4).standard_normal(d + 1) if accumulate else np.zeros(d + 1)
    results = {}
    for label, backend, data in (
        ("sparse", numba_backend, X),
        ("reference", reference, X),
        ("dense", numba_backend, X.toarray()),
    ):
        grad = start.copy() if accumulate else np.full(d + 1, np.nan)
        value = backend.linear_loss_grad(
            loss, data, y, weight, params, grad, rows=rows, accumulate=accumulate
        )
        results[label] = value, grad
    value, grad = results["sparse"]
    for label in ("reference", "dense"):
        assert value == pytest.approx(results[label][0], rel=1e-12)
        assert_close(grad, results[label][1])
    if accumulate:  # the entries of columns the batch does not use are left exactly alone
        untouched = ~touched(X, rows, d + 1)
        assert untouched.any()
        np.testing.assert_array_equal(grad[untouched], start[untouched])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rows_name", ["all", "repeats"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_softmax_matches_reference_and_dense(dtype, weighted, rows_name, accumulate):
    X = sparse_rows(dtype=dtype)
    n, d = X.shape
    C = 4
    rng = np.random.default_rng(5)
    y, weight = rng.integers(0, C, n), rng.uniform(0.5, 2.0, n) if weighted else None
    rows = selection(rows_name, n)
    params = rng.standard_normal(C * (d + 1))
    start = rng.standard_normal(params.size) if accumulate else np.zeros(params.size)
    results = {}
    for label, backend, data in (
        ("sparse", numba_backend, X),
        ("reference", reference, X),
        ("dense", numba_backend, X.toarray()),
    ):
        grad = start.copy() if accumulate else np.full(params.size, np.nan)
        value = backend.softmax_loss_grad(
            data, y, weight, params, grad, rows=rows, accumulate=accumulate
        )
        results[label] = value, grad
    value, grad = results["sparse"]
    for label in ("reference", "dense"):
        assert value == pytest.approx(results[label][0], rel=1e-12)
        assert_close(grad, results[label][1])
    if accumulate:
        untouched = ~touched(X, rows, params.size)
        assert untouched.any()
        np.testing.assert_array_equal(grad[untouched], start[untouched])


@pytest.mark.parametrize("loss", ["logistic", "hinge"])  # hinge: rows that add nothing
@pytest.mark.parametrize("rows_name", ["all", "repeats"])
def test_wide_rows_take_the_prefetching_path(loss, rows_name):
    """From ``PREFETCH_MIN_FEATURES`` columns on, the linear kernel works in blocks of rows
    and prefetches a block ahead (empty rows, a last partial block): the same sums."""
    d = sparse.PREFETCH_MIN_FEATURES
    rng = np.random.default_rng(17)
    lengths = rng.integers(0, 9, 41)
    lengths[[3, 10, 11, 12]] = 0
    indices = np.concatenate([np.sort(rng.choice(d, k, replace=False)) for k in lengths])
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    X = sp.csr_matrix((rng.standard_normal(indices.size), indices.astype(np.int32),
                       indptr.astype(np.int32)), shape=(41, d))  # fmt: skip
    y, weight = linear_targets(loss, 41)
    rows = selection(rows_name, 41)
    params = rng.standard_normal(d + 1)
    expected, grad = np.empty(d + 1), np.full(d + 1, np.nan)
    value = reference.linear_loss_grad(loss, X, y, weight, params, expected, rows=rows)
    assert numba_backend.linear_loss_grad(loss, X, y, weight, params, grad,
                                          rows=rows) == pytest.approx(value, rel=1e-12)  # fmt: skip
    assert_close(grad, expected)
    with pytest.raises(IndexError):  # a bad row far ahead is still reported
        numba_backend.linear_loss_grad("logistic", X, y, None, params, grad,
                                       rows=np.array([0, 1, 2, 3, 4, 5, 6, 41]))  # fmt: skip


def test_int64_indices_give_the_same_sums():
    X32, X64 = sparse_rows(), sparse_rows(index_dtype=np.int64)
    assert X64.indices.dtype == np.int64 and X64.indptr.dtype == np.int64
    n, d = X32.shape
    y, _ = linear_targets("logistic", n)
    rows = selection("repeats", n)
    params = np.random.default_rng(6).standard_normal(d + 1)
    sums = []
    for X in (X32, X64):
        grad = np.empty(d + 1)
        value = numba_backend.linear_loss_grad("logistic", X, y, None, params, grad, rows=rows)
        sums.append((value, grad))
    assert sums[0][0] == sums[1][0]
    np.testing.assert_array_equal(sums[0][1], sums[1][1])
    labels = np.random.default_rng(7).integers(0, 3, n)
    params = np.random.default_rng(8).standard_normal(3 * (d + 1))
    expected = reference.softmax_decision(X32, params)
    assert_close(numba_backend.softmax_decision(X64, params), expected)
    grads = [np.empty(params.size) for _ in range(2)]
    values = [numba_backend.softmax_loss_grad(X, labels, None, params, g, rows=rows)
              for X, g in zip((X32, X64), grads, strict=True)]  # fmt: skip
    assert values[0] == values[1]
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_decisions_match_reference_and_dense(dtype):
    X = sparse_rows(dtype=dtype)
    d = X.shape[1]
    rng = np.random.default_rng(9)
    params = rng.standard_normal(d + 1)
    z = numba_backend.linear_decision(X, params)
    assert z.shape == (X.shape[0],) and z.dtype == np.float64
    assert_close(z, reference.linear_decision(X, params))
    assert_close(z, numba_backend.linear_decision(X.toarray(), params))
    assert z[3] == params[-1]  # an empty row: the intercept
    params = rng.standard_normal(5 * (d + 1))
    Z = numba_backend.softmax_decision(X, params)
    assert Z.shape == (X.shape[0], 5) and Z.dtype == np.float64
    assert_close(Z, reference.softmax_decision(X, params))
    assert_close(Z, numba_backend.softmax_decision(X.toarray(), params))


# -- gradients against finite differences ------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_linear_gradient_matches_finite_differences(loss):
    X = sparse_rows(n=23, d=6, seed=10)
    y, weight = linear_targets(loss, X.shape[0], seed=11)
    params = np.random.default_rng(12).standard_normal(X.shape[1] + 1)
    if loss in ("hinge", "squared_hinge"):  # keep rows off the kink t z = 1
        t_z = (2.0 * y - 1.0) * reference.linear_decision(X, params)
        keep = np.flatnonzero(np.abs(1.0 - t_z) > 0.05)
        X, y, weight = X[keep], y[keep], weight[keep]

    def loss_of(p):
        return numba_backend.linear_loss_grad(loss, X, y, weight, p, np.empty_like(p))

    grad = np.empty_like(params)
    numba_backend.linear_loss_grad(loss, X, y, weight, params, grad)
    assert_close(grad, finite_difference_gradient(loss_of, params), rtol=1e-6)


def test_softmax_gradient_matches_finite_differences():
    X = sparse_rows(n=23, d=6, seed=13)
    rng = np.random.default_rng(14)
    y, weight = rng.integers(0, 3, X.shape[0]), rng.uniform(0.5, 2.0, X.shape[0])
    params = rng.standard_normal(3 * (X.shape[1] + 1))

    def loss_of(p):
        return numba_backend.softmax_loss_grad(X, y, weight, p, np.empty_like(p))

    grad = np.empty_like(params)
    numba_backend.softmax_loss_grad(X, y, weight, params, grad)
    assert_close(grad, finite_difference_gradient(loss_of, params), rtol=1e-6)


# -- empty rows and empty selections -----------------------------------------------------------


@pytest.mark.parametrize("backend", [numba_backend, reference], ids=["numba", "numpy"])
def test_empty_selections_and_matrices(backend):
    X = sparse_rows()
    n, d = X.shape
    y, _ = linear_targets("logistic", n)
    params = np.random.default_rng(15).standard_normal(d + 1)
    none = np.zeros(0, dtype=np.int64)
    grad = np.full(d + 1, np.nan)
    assert backend.linear_loss_grad("logistic", X, y, None, params, grad, rows=none) == 0.0
    assert not grad.any()
    grad = np.ones(d + 1)
    backend.linear_loss_grad("logistic", X, y, None, params, grad, rows=none, accumulate=True)
    assert (grad == 1.0).all()
    # rows without entries: z = b, so only the intercept has a gradient
    empty = sp.csr_matrix((5, d))
    grad = np.full(d + 1, np.nan)
    value = backend.linear_loss_grad("squared", empty, np.ones(5), None, params, grad)
    assert value == pytest.approx(5 * 0.5 * (params[-1] - 1.0) ** 2, rel=1e-14)
    assert not grad[:-1].any() and grad[-1] == pytest.approx(5 * (params[-1] - 1.0), rel=1e-14)
    no_rows = sp.csr_matrix((0, d))
    assert backend.linear_decision(no_rows, params).shape == (0,)
    softmax_params = np.zeros(2 * (d + 1))
    grad = np.full(softmax_params.size, np.nan)
    labels = np.zeros(0, dtype=np.int64)
    assert backend.softmax_loss_grad(no_rows, labels, None, softmax_params, grad) == 0.0
    assert not grad.any()


# -- argument checks ---------------------------------------------------------------------------


def unsorted_rows(X):
    """``X`` with the first two entries of its first long row swapped (not canonical)."""
    X = X.copy()
    row = int(np.flatnonzero(np.diff(X.indptr) >= 2)[0])
    k = X.indptr[row]
    X.indices[k : k + 2] = X.indices[k : k + 2][::-1].copy()
    X.data[k : k + 2] = X.data[k : k + 2][::-1].copy()
    X.has_sorted_indices = False
    return X


def with_indices(X, indices):
    """A CSR matrix of ``X``'s shape, data and indptr, but these column indices."""
    return sp.csr_matrix((X.data, indices, X.indptr), shape=X.shape)


@pytest.mark.parametrize("backend", [numba_backend, reference], ids=["numba", "numpy"])
def test_bad_csr_is_a_clear_error(backend):
    X = sparse_rows()
    n, d = X.shape
    y, _ = linear_targets("logistic", n)
    params, grad = np.zeros(d + 1), np.empty(d + 1)

    def call(matrix, **options):
        return backend.linear_loss_grad("logistic", matrix, y, None, params, grad, **options)

    with pytest.raises(ValueError, match="canonical CSR.*sum_duplicates"):
        call(unsorted_rows(X))
    duplicated = sp.csr_matrix((np.ones(2), np.array([1, 1]), np.array([0, 2] + [2] * (n - 1))),
                               shape=(n, d))  # fmt: skip
    with pytest.raises(ValueError, match="canonical CSR"):
        call(duplicated)
    with pytest.raises(ValueError, match="must be CSR, got CSC"):
        call(X.tocsc())
    with pytest.raises(ValueError, match="float32 or float64"):
        call(X.astype(np.int64))
    too_wide = X.indices.copy()
    too_wide[-1] = d  # still sorted: the last entry of the last non-empty row
    with pytest.raises(ValueError, match="column index outside 0 .. d-1"):
        call(with_indices(X, too_wide))
    with pytest.raises(ValueError, match="d \\+ 1"):
        backend.linear_loss_grad("logistic", X, y, None, params[:-1], grad[:-1])
    with pytest.raises(IndexError):
        call(X, rows=np.array([0, n]))
    labels = np.full(n, 4)
    with pytest.raises(ValueError, match="class ids"):
        backend.softmax_loss_grad(X, labels, None, np.zeros(3 * (d + 1)), np.empty(3 * (d + 1)))


def test_every_cpu_backend_takes_accumulate():
    X, params = np.ones((2, 3)), np.zeros(4)
    for backend in (numba_backend, reference):
        grad = np.ones(4)
        backend.linear_loss_grad("squared", X, np.zeros(2), None, params, grad, accumulate=True)
        assert (grad == 1.0).all()  # zero residuals: nothing added
        grad = np.ones(8)
        backend.softmax_loss_grad(X, np.zeros(2, dtype=np.int64), None, np.zeros(8), grad,
                                  accumulate=True)  # fmt: skip
        np.testing.assert_allclose(grad[-2:], [1.0 + 2 * (0.5 - 1.0), 1.0 + 2 * 0.5])


# -- cupy: the same through cupyx.scipy.sparse --------------------------------------------------


@pytest.mark.parametrize("rows_name", ["all", "repeats"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_sparse_kernels_match_reference(rows_name, dtype):
    require_gpu()
    gpu = get_backend("cupy")
    X = sparse_rows(dtype=dtype)
    n, d = X.shape
    X_device = gpu.to_device(X)
    rows = selection(rows_name, n)
    rng = np.random.default_rng(16)
    weight = rng.uniform(0.5, 2.0, n)
    for loss in LOSSES:
        y, _ = linear_targets(loss, n)
        params = rng.standard_normal(d + 1)
        start = rng.standard_normal(d + 1)
        expected = start.copy()
        value = reference.linear_loss_grad(loss, X, y, weight, params, expected, rows=rows,
                                           accumulate=True)  # fmt: skip
        grad = start.copy()
        assert gpu.linear_loss_grad(loss, X_device, gpu.to_device(y), gpu.to_device(weight),
                                    params, grad, rows=rows, accumulate=True) == pytest.approx(
            value, rel=1e-12)  # fmt: skip
        assert_close(grad, expected)
        assert_close(gpu.linear_decision(X_device, params), reference.linear_decision(X, params))
    labels = rng.integers(0, 4, n)
    params = rng.standard_normal(4 * (d + 1))
    expected, grad = np.empty(params.size), np.full(params.size, np.nan)
    value = reference.softmax_loss_grad(X, labels, weight, params, expected, rows=rows)
    assert gpu.softmax_loss_grad(X_device, gpu.to_device(labels), gpu.to_device(weight), params,
                                 grad, rows=rows) == pytest.approx(value, rel=1e-12)  # fmt: skip
    assert_close(grad, expected)
    assert_close(gpu.softmax_decision(X_device, params), reference.softmax_decision(X, params))
    with pytest.raises(ValueError, match="canonical CSR"):
        gpu.to_device(unsorted_rows(X))
