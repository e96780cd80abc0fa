"""Tests of :mod:`kernels`: gradients against finite differences, the ``numba`` backend
against the ``numpy`` (reference) backend, numerical stability, argument checks and the factory."""

import math

import numpy as np
import pytest

from kernels import fused, get_backend, gpu_unavailable_reason, reference

LOSSES = reference.LINEAR_LOSSES
BACKENDS = ("numba", "numpy")
# Enough rows for several softmax blocks and a partial last block, and n % 4 != 0.
SOFTMAX_ROWS = 2 * fused.SOFTMAX_BLOCK_ROWS + 37


def linear_problem(loss, n=43, d=6, dtype=np.float64, seed=0):
    """Random ``X``, targets (values or 0/1 labels), weights and ``[w, b]``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n) if loss == "squared" else (rng.random(n) < 0.5).astype(float)
    return X, y, rng.uniform(0.5, 2.0, n), rng.standard_normal(d + 1)


def softmax_problem(n=SOFTMAX_ROWS, d=5, n_classes=4, dtype=np.float64, seed=1):
    """Random ``X``, class ids, weights and ``[W, b]``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, n_classes, n)
    return X, y, rng.uniform(0.5, 2.0, n), rng.standard_normal(n_classes * (d + 1))


def away_from_kinks(X, y, params, loss):
    """Drop the rows whose hinge margin ``t z`` is within 0.05 of the kink at 1."""
    if loss not in ("hinge", "squared_hinge"):
        return X, y
    t_z = (2.0 * y - 1.0) * reference.linear_decision(X, params)
    keep = np.abs(1.0 - t_z) > 0.05
    return np.ascontiguousarray(X[keep]), y[keep]


def finite_difference_gradient(loss_of, params, h=1e-6):
    """Central differences of the scalar function ``loss_of`` at ``params``."""
    grad = np.empty_like(params)
    for k in range(params.size):
        step = np.zeros_like(params)
        step[k] = h
        grad[k] = (loss_of(params + step) - loss_of(params - step)) / (2.0 * h)
    return grad


def assert_close(actual, expected, rtol=1e-12):
    """Equal up to ``rtol`` relative to the largest entry (entries may cancel to ~0)."""
    expected = np.asarray(expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def row_selections(n, seed=2):
    """``rows=`` arguments: all, a shuffled subset, empty, and repeated indices."""
    rng = np.random.default_rng(seed)
    return {
        "all": None,
        "subset": rng.permutation(n)[: n // 2 + 3],
        "empty": np.array([], dtype=np.int64),
        "repeated": np.array([5, 5, 5, 0, n - 1, 5, 7], dtype=np.int64),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_linear_gradient_matches_finite_differences(backend, loss, weighted):
    kernels = get_backend(backend)
    X, y, weight, params = linear_problem(loss)
    X, y = away_from_kinks(X, y, params, loss)
    weight = weight[: len(y)] if weighted else None
    grad = np.full_like(params, np.nan)

    def loss_of(p):
        return kernels.linear_loss_grad(loss, X, y, weight, p, np.empty_like(p))

    value = kernels.linear_loss_grad(loss, X, y, weight, params, grad)
    assert isinstance(value, float)
    assert_close(grad, finite_difference_gradient(loss_of, params), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_gradient_matches_finite_differences(backend, weighted):
    kernels = get_backend(backend)
    X, y, weight, params = softmax_problem(n=40)
    weight = weight if weighted else None
    grad = np.full_like(params, np.nan)

    def loss_of(p):
        return kernels.softmax_loss_grad(X, y, weight, p, np.empty_like(p))

    value = kernels.softmax_loss_grad(X, y, weight, params, grad)
    assert isinstance(value, float)
    assert_close(grad, finite_difference_gradient(loss_of, params), rtol=1e-6)


def assert_numba_matches_reference(loss, X, y, weight, params, rows):
    """The numba linear kernel's loss and gradient agree with the numpy reference's on
    ``rows``; returns the kernel's ``(loss, gradient)``."""
    expected_grad = np.empty_like(params)
    expected = reference.linear_loss_grad(loss, X, y, weight, params, expected_grad, rows=rows)
    grad = np.full_like(params, np.nan)
    value = get_backend("numba").linear_loss_grad(loss, X, y, weight, params, grad, rows=rows)
    assert_close(value, expected)
    assert_close(grad, expected_grad)
    return value, grad


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("selection", ["all", "subset", "empty", "repeated"])
def test_linear_numba_matches_reference(loss, dtype, weighted, selection):
    X, y, weight, params = linear_problem(loss, n=103, d=13, dtype=dtype)
    weight = weight if weighted else None
    rows = row_selections(len(y))[selection]
    value, grad = assert_numba_matches_reference(loss, X, y, weight, params, rows)
    if selection == "empty":
        assert value == 0.0 and not grad.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("selection", ["all", "subset", "empty", "repeated"])
def test_softmax_numba_matches_reference(dtype, weighted, selection):
    X, y, weight, params = softmax_problem(d=9, n_classes=5, dtype=dtype)
    weight = weight if weighted else None
    rows = row_selections(len(y))[selection]
    expected_grad = np.empty_like(params)
    expected = reference.softmax_loss_grad(X, y, weight, params, expected_grad, rows=rows)
    grad = np.full_like(params, np.nan)
    value = get_backend("numba").softmax_loss_grad(X, y, weight, params, grad, rows=rows)
    assert_close(value, expected)
    assert_close(grad, expected_grad)
    if selection == "empty":
        assert value == 0.0 and not grad.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_decisions_match_reference(dtype):
    numba_backend = get_backend("numba")
    X, _, _, params = linear_problem("squared", dtype=dtype)
    assert_close(numba_backend.linear_decision(X, params), reference.linear_decision(X, params))
    X, _, _, params = softmax_problem(dtype=dtype)
    Z = numba_backend.softmax_decision(X, params)
    assert Z.shape == (X.shape[0], 4) and Z.dtype == np.float64
    assert_close(Z, reference.softmax_decision(X, params))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_linear_huge_outputs_are_finite(backend, loss):
    z = np.array([1e3, -1e3, 1e3, -1e3, 700.0, -745.0])
    X = np.ascontiguousarray(z[:, None])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    params = np.array([1.0, 0.0])
    grad = np.empty(2)
    value = get_backend(backend).linear_loss_grad(loss, X, y, None, params, grad)
    assert np.isfinite(value) and np.isfinite(grad).all()
    if loss == "logistic":  # rows 0, 1, 4 and 5 cost |z|; rows 2 and 3 almost nothing
        assert value == pytest.approx(1e3 + 1e3 + 700.0 + 745.0, rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logistic_loss_is_accurate_for_confident_rows(backend):
    X = np.array([[-40.0], [40.0]])
    y = np.array([0.0, 1.0])
    value = get_backend(backend).linear_loss_grad(
        "logistic", X, y, None, np.array([1.0, 0.0]), np.empty(2)
    )
    assert value == pytest.approx(2 * math.log1p(math.exp(-40.0)), rel=1e-14)


def test_logistic_block_matches_the_scalar_logistic():
    """The vectorised exp/log of the linear kernel against the library-based row helper."""
    z = np.concatenate(
        [
            np.linspace(-60.0, 60.0, 4001),
            [0.0, -0.0, 1e-300, -1e-300, 5e-324, 36.7, -36.7, 709.0, -709.0, 744.0, -745.0],
            [-745.2, -746.0, -800.0, -801.0, 1e3, -1e3, 1e308, -1e308, np.inf, -np.inf, np.nan],
        ]
    )
    rng = np.random.default_rng(3)
    y = (rng.random(z.size) < 0.5).astype(float)
    s = rng.uniform(0.5, 2.0, z.size)
    loss, slope = np.empty_like(z), np.empty_like(z)
    fused._logistic_block(z, y, s, loss, slope, z.size)
    expected = np.array([fused._logistic(zk, yk) for zk, yk in zip(z, y, strict=True)])
    expected *= s[:, None]
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(expected[:, 0]))
    np.testing.assert_array_equal(np.isnan(slope), np.isnan(expected[:, 1]))
    finite = np.isfinite(expected[:, 0])
    np.testing.assert_allclose(loss[finite], expected[finite, 0], rtol=4e-15, atol=0.0)
    # sigmoid - y cancels when y = 1: a few ulp of y there, relative accuracy where y = 0
    finite = np.isfinite(expected[:, 1])
    np.testing.assert_allclose(slope[finite], expected[finite, 1], rtol=4e-15, atol=2e-15)
    zero = finite & (y == 0.0)
    np.testing.assert_allclose(slope[zero], expected[zero, 1], rtol=4e-15, atol=0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("selection", ["all", "subset"])
@pytest.mark.parametrize("d", [37, 1100])  # rows prefetched; rows too long to prefetch
def test_linear_numba_matches_reference_over_many_blocks(dtype, selection, d):
    """Several row blocks, rows prefetched past the end, and a last block of 8 k + 5 rows."""
    itemsize = np.dtype(dtype).itemsize
    assert (d * itemsize <= fused.LINEAR_PREFETCH_MAX_ROW_BYTES) == (d == 37)
    block = fused._linear_block_rows(d, itemsize)
    assert block % 8 == 0 and 8 <= block <= 256
    n = (3 + fused.LINEAR_PREFETCH_BLOCKS) * block + 13
    for loss in LOSSES:
        X, y, weight, params = linear_problem(loss, n=n, d=d, dtype=dtype, seed=4)
        assert_numba_matches_reference(loss, X, y, weight, params, row_selections(n)[selection])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_huge_logits_are_finite(backend):
    X = np.array([[1.0], [-1.0], [1.0]])
    y = np.array([0, 0, 2])
    params = np.array([1e3, 0.0, -1e3, 0.0, 0.0, 0.0])  # W = [1e3, 0, -1e3], b = 0
    grad = np.empty(6)
    value = get_backend(backend).softmax_loss_grad(X, y, None, params, grad)
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(4e3, rel=1e-15)  # z_max - z_y per row: 0, 2e3, 2e3


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_raise(backend):
    kernels = get_backend(backend)
    X, y, _, params = linear_problem("logistic")
    grad = np.empty_like(params)
    with pytest.raises(ValueError, match="unknown linear loss"):
        kernels.linear_loss_grad("cubic", X, y, None, params, grad)
    with pytest.raises(ValueError, match="d \\+ 1"):
        kernels.linear_loss_grad("logistic", X, y, None, params[:-1], grad[:-1])
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.linear_loss_grad("logistic", np.asfortranarray(X), y, None, params, grad)
    with pytest.raises(IndexError):
        kernels.linear_loss_grad("logistic", X, y, None, params, grad, rows=np.array([0, -1]))
    with pytest.raises(IndexError):
        kernels.linear_loss_grad("logistic", X, y, None, params, grad, rows=np.array([len(y)]))
    X, y, _, params = softmax_problem()
    with pytest.raises(ValueError, match="class ids"):
        kernels.softmax_loss_grad(X, y + 4, None, params, np.empty_like(params))
    with pytest.raises(ValueError, match="C \\* \\(d \\+ 1\\)"):
        kernels.softmax_decision(X, params[:-1])


def test_backends_expose_the_same_interface():
    names = ("name", "xp", "LINEAR_LOSSES", "linear_loss_grad", "softmax_loss_grad")
    names += ("linear_decision", "softmax_decision")
    for backend in BACKENDS:
        module = get_backend(backend)
        assert module.name == backend
        assert module.xp is np
        assert all(hasattr(module, attribute) for attribute in names)
        assert module.LINEAR_LOSSES == ("squared", "logistic", "hinge", "squared_hinge")


def test_get_backend_errors():
    if gpu_unavailable_reason() is not None:  # the cupy backend itself: tests/test_gpu.py
        with pytest.raises(ValueError, match="CuPy is not installed|no CUDA device"):
            get_backend("cupy")
    with pytest.raises(ValueError, match="numba, numpy, cupy"):
        get_backend("torch")
