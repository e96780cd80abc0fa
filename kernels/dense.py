"""Dense-layer kernels for the MLP: forward and backward of one layer, the output losses.

All arrays share one compute dtype (the data's: float32 or float64); the GEMMs go to the
backend's BLAS through ``numpy.matmul(..., out=)``, so no kernel allocates a result the
caller gave a buffer for. Shapes: ``A`` (n, i) layer input, ``W`` (o, i) weights (one
row per output unit, the flat-vector layout), ``b`` (o,), ``Z``/``dZ`` (n, o).

================================================  ===========================================
``dense_forward(A, W, b, out)``                   ``out = A @ W.T + b``
``relu_forward(Z, mask, out)``                    ``out = max(Z, 0) * mask`` (mask: dropout,
                                                  0 or 1/(1-p) per unit, or None)
``relu_backward(dA, Z, mask, out)``               ``out = dA * (Z > 0) * mask``
``dense_backward(dZ, A, W, gW, gb, dA=None)``     ``gW = dZ.T @ A``, ``gb = Σ_rows dZ``,
                                                  ``dA = dZ @ W`` (skipped for the input)
``softmax_xent(Z, y, s, dZ) -> float``            Σ s_i (−log softmax(Z_i)_{y_i}); ``dZ`` =
                                                  s_i (softmax(Z_i) − onehot(y_i))
``half_squared_error(Z, y, s, dZ) -> float``      Σ s_i ½ (Z_i − y_i)²; ``dZ = s_i (Z_i − y_i)``
================================================  ===========================================

The two losses read ``Z`` and write ``dZ``, which may be ``Z`` itself (to save a buffer);
they return float64 sums, neither averaged nor regularised, like the linear kernels.

The first layer's input ``A`` may be a canonical CSR matrix (``scipy.sparse``, data in the
compute dtype): ``dense_forward`` is then scipy's sparse-times-dense product ``A @ W.T``
and ``dense_backward`` computes ``gW`` as ``(A.T @ dZ).T``, both over the nonzeros of
``A``, which is never densified. scipy wants the dense operand row-major, so the forward
copies ``W.T`` (o x i values) once per call; the backward's ``(i, o)`` product is written
transposed into ``gW``. Both are of the order of the layer's gradient, which the backward
writes anyway. ``dA`` is never asked of the input layer.
"""

import numpy as np
import scipy.sparse


def dense_forward(A, W, b, out):
    """``out = A @ W.T + b`` (one GEMM, or scipy's CSR product, then a broadcast add)."""
    if scipy.sparse.issparse(A):
        out[...] = A @ W.T
    else:
        np.matmul(A, W.T, out=out)
    if b is not None:
        out += b
    return out


def relu_forward(Z, mask, out):
    """``out = max(Z, 0) * mask``; ``out`` may be ``Z``."""
    np.maximum(Z, 0, out=out)
    if mask is not None:
        out *= mask
    return out


def relu_backward(dA, Z, mask, out):
    """``out = dA * (Z > 0) * mask``; ``out`` may be ``dA``."""
    np.multiply(dA, Z > 0, out=out)
    if mask is not None:
        out *= mask
    return out


def dense_backward(dZ, A, W, gW, gb, dA=None):
    """Weight and bias gradients of one layer, and the gradient of its input."""
    if scipy.sparse.issparse(A):
        gW[...] = (A.T @ dZ).T
    else:
        np.matmul(dZ.T, A, out=gW)
    np.sum(dZ, axis=0, out=gb)
    if dA is not None:
        np.matmul(dZ, W, out=dA)


def softmax_xent(Z, y, sample_weight, dZ):
    """Cross-entropy sum of the softmax of ``Z`` against class ids ``y``; ``dZ`` its gradient."""
    n = Z.shape[0]
    if n == 0:
        return 0.0
    rows = np.arange(n)
    np.subtract(Z, Z.max(axis=1, keepdims=True), out=dZ)
    true_logit = dZ[rows, y].astype(np.float64)  # shifted: <= 0
    np.exp(dZ, out=dZ)
    total = dZ.sum(axis=1, keepdims=True)
    losses = np.log(total[:, 0].astype(np.float64)) - true_logit  # log-sum-exp, no underflow
    dZ /= total
    dZ[rows, y] -= 1
    if sample_weight is not None:
        dZ *= sample_weight[:, None].astype(dZ.dtype)
        return float(losses @ sample_weight)
    return float(losses.sum())


def half_squared_error(Z, y, sample_weight, dZ):
    """½ Σ s_i (Z_i − y_i)² for a one-column ``Z``; ``dZ = s_i (Z_i − y_i)``."""
    np.subtract(Z[:, 0], y, out=dZ[:, 0])
    residual = dZ[:, 0].astype(np.float64)
    if sample_weight is not None:
        dZ[:, 0] *= sample_weight
        return float(0.5 * (residual * residual) @ sample_weight)
    return float(0.5 * residual @ residual)
