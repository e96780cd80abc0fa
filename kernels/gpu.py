"""The ``cupy`` backend: the interface of :mod:`kernels` on one NVIDIA GPU per rank.

Where the data lives. The trainer copies a rank's training rows ``X``, ``y`` (and sample
weights, test rows) to its GPU once, after loading (:func:`to_device`). The flat parameter
and gradient vectors stay host numpy float64: they are small for the linear models
(``d + 1`` values), the optimisers, L-BFGS and SciPy work on them, and MPI then always
reads host memory. Each call therefore copies ``params`` to the device (a few KB; the
784-512-512-10 MLP's 670,000 parameters are 5.4 MB), computes, and copies the gradient and
loss sums, reduced on the device, through a pinned host buffer into ``grad_out`` after
synchronising the stream (:func:`to_host`), so the MPI call that follows reads finished
data. Predictions and decision values come back as host arrays (evaluation is small).

Kernels (all arithmetic float64; ``X`` float32 or float64; see the ``.cu`` files for the
memory traffic of each):

=======================  ==================================================================
``linear_loss_grad``     one pass over ``X``: :file:`linear_grad.cu` (a RawModule), one warp
                         per row, dot product, loss and ``r = s dloss/dz``, ``g += r x``
                         in registers; one row of partial sums per block, summed by
                         ``cupy.sum``. Rows wider than the shared memory allows
                         (d > ~6000) take the two-GEMM path below.
``softmax_loss_grad``    in chunks of rows (~32 MiB of float64, widened from float32 or
                         gathered for ``rows=``): cuBLAS ``Z = Xc @ W.T``, the fused
                         :file:`softmax_rows.cu` kernel (stable softmax, loss,
                         ``R = s (P - onehot)`` in place), cuBLAS ``G += R.T @ Xc`` while
                         the chunk is still in L2.
``*_decision``           cuBLAS ``X @ w + b`` / ``X @ W.T + b`` by chunks; host result.
dense layers (MLP)       cuBLAS GEMMs (``cupy.matmul``) in the data's dtype; ReLU with the
                         dropout mask fused in ElementwiseKernels; softmax
                         cross-entropy with :file:`softmax_rows.cu`.
=======================  ==================================================================

A CSR ``X`` (``scipy.sparse``; :func:`to_device` makes it a ``cupyx.scipy.sparse``
``csr_matrix``) goes through cuSPARSE instead, by ``cupyx.scipy.sparse``'s products:
the selected rows (``X[rows]``, a device gather of their entries) are widened to float64
when stored as float32 (cuSPARSE multiplies in one dtype), then ``z = Xs @ w + b``
(SpMV), the loss and ``r`` by ``linear_rows``, ``g = Xs.T @ r`` (transposed SpMV); for
softmax ``Z = Xs @ W.T`` (SpMM; ``W.T`` of the row-major ``W`` is already the
column-major operand cuSPARSE wants), the fused softmax kernel, ``G = (Xs.T @ R).T``.
Two reads of the rows' entries instead of one, and an O(d) gradient vector on the device
and through the copy to the host even with ``accumulate``. The MLP's first layer on CSR
input is ``A @ W.T`` and ``(A.T @ dZ).T`` the same way, in the data's dtype.

Every function also accepts host arrays (it copies them to the device), so evaluation
code written for numpy works unchanged, at the cost of a copy per call. Results are
bitwise reproducible for a given GPU model and problem (no atomics: fixed reduction
orders), but not bitwise equal to the CPU backends' (other summation orders). The CSR
path is not promised reproducible: cuSPARSE's transposed products may sum in any order.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cupy
import cupyx
import cupyx.scipy.sparse
import numpy

from kernels.reference import (
    LINEAR_LOSSES,
    check_arrays,
    check_csr,
    check_linear_params,
    check_loss,
    is_sparse,
    n_classes,
)

name = "cupy"
xp = cupy

__all__ = [
    "LINEAR_LOSSES",
    "dense_backward",
    "dense_forward",
    "device_count",
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
    "use_device",
    "xp",
]

_SOURCES = Path(__file__).resolve().parent
_LOSS_CODES = {"squared": 0, "logistic": 1, "hinge": 2, "squared_hinge": 3}
#: Warps per block of the linear kernel (its ``__launch_bounds__`` allows 256 threads).
_MAX_WARPS = 8
#: Dynamic shared memory the linear kernel may ask for per block: (d + 2) doubles per warp.
_SHARED_BYTES = 48 * 1024
#: Warps per SM the linear kernel's register use allows (64 regs for K = 4, 128 for K = 8).
_RESIDENT_WARPS = {4: 32, 8: 16}
#: Rows per chunk of the GEMM paths: this many bytes of float64 rows (fits in L2).
_CHUNK_BYTES = 32 * 2**20
#: Threads per block of the one-thread-per-row kernels.
_ROW_THREADS = 256


# -- devices and transfers ------------------------------------------------------------------


def device_count() -> int:
    """Number of CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applied)."""
    return cupy.cuda.runtime.getDeviceCount()


def use_device(index: int) -> dict:
    """Make device ``index`` this process's current device; describe it (JSON-able)."""
    device = cupy.cuda.Device(index)
    device.use()
    properties = cupy.cuda.runtime.getDeviceProperties(index)
    label = properties["name"]
    return {
        "device": index,
        "name": label.decode() if isinstance(label, bytes) else str(label),
        "pci_bus_id": device.pci_bus_id,
        "memory_gib": round(properties["totalGlobalMem"] / 2**30, 1),
        "compute_capability": device.compute_capability,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
    }


def to_device(array):
    """``array`` as a C-contiguous array on the current device (no copy if it is one).

    ``None`` stays ``None``; a canonical CSR matrix (``scipy.sparse``) becomes a
    ``cupyx.scipy.sparse.csr_matrix`` (one already on the device is returned as is). The
    trainer calls this once per array after loading.
    """
    if array is None:
        return None
    if is_sparse(array):
        return _csr_to_device(array)
    return cupy.ascontiguousarray(cupy.asarray(array))


def _csr_to_device(X):
    """A canonical CSR matrix as a ``cupyx.scipy.sparse.csr_matrix`` on the current device."""
    if isinstance(X, cupyx.scipy.sparse.spmatrix):
        return X
    check_csr(X)
    device = cupyx.scipy.sparse.csr_matrix(X)
    device.has_canonical_format = True  # checked on the host: spares a device scan
    return device


def _selected_csr(X, rows):
    """The selected rows of the device CSR ``X`` (all when ``rows`` is None), as float64.

    cuSPARSE multiplies in one dtype, so float32 entries are widened (a copy of the
    selected entries); a row selection gathers the rows' entries (``X[rows]``). Rows of
    a canonical matrix are canonical: the flag is set, so no product rescans them. The
    column indices are range-checked (one reduction): cuSPARSE does not check them.
    """
    selected = X if rows is None else X[rows]
    if selected.dtype != numpy.float64:
        selected = selected.astype(numpy.float64)
    if selected.nnz:
        low, high = cupy.stack((selected.indices.min(), selected.indices.max())).get().tolist()
        if low < 0 or high >= X.shape[1]:
            raise ValueError("CSR column index outside 0 .. d-1")
    selected.has_canonical_format = True
    return selected


def to_host(array, out=None):
    """``array`` as a host numpy array; with ``out`` (float64), copied into ``out``.

    The copy into ``out`` goes through a pinned staging buffer and waits for the stream,
    so ``out`` holds finished data when this returns (an MPI call may read it at once).
    """
    if out is None:
        return cupy.asnumpy(array)
    values = cupy.asarray(array)
    if out.dtype != numpy.float64 or values.size != out.size:
        out[...] = cupy.asnumpy(values).reshape(out.shape)
        return out
    _fetch(cupy.ascontiguousarray(values.astype(numpy.float64, copy=False).ravel()), out)
    return out


def _device_id() -> int:
    return cupy.cuda.Device().id


_pinned: dict[int, numpy.ndarray] = {}


def _staging(size: int) -> numpy.ndarray:
    """The first ``size`` entries of this device's pinned float64 staging buffer."""
    device = _device_id()
    buffer = _pinned.get(device)
    if buffer is None or buffer.size < size:
        # Grown only between calls, when no copy into the old buffer is in flight.
        buffer = cupyx.empty_pinned(max(size, 2 * (0 if buffer is None else buffer.size), 1024))
        _pinned[device] = buffer
    return buffer[:size]


def _fetch(values, out: numpy.ndarray) -> None:
    """Copy the contiguous device float64 vector ``values`` into host ``out``.

    Asynchronous copy into pinned memory on the current stream, then a stream
    synchronisation, then a host copy: ``out`` is final when this returns.
    """
    stream = cupy.cuda.get_current_stream()
    staging = _staging(values.size)
    values.get(stream=stream, out=staging, blocking=False)
    stream.synchronize()
    out[...] = staging.reshape(out.shape)


def _fetch_new(values) -> numpy.ndarray:
    """``values`` (device float64 vector) as a new host array, through the pinned buffer."""
    out = numpy.empty(values.size)
    _fetch(values, out)
    return out


@functools.cache
def _module(filename: str, device: int):
    """``kernels/<filename>`` as a RawModule (NVRTC compiles it on first use), per device."""
    del device  # part of the cache key: each device loads its own module
    return cupy.RawModule(code=(_SOURCES / filename).read_text())


@functools.cache
def _function(filename: str, kernel: str, device: int):
    """Kernel ``kernel`` of ``kernels/<filename>`` on ``device``."""
    return _module(filename, device).get_function(kernel)


@functools.cache
def _multiprocessors(device: int) -> int:
    return cupy.cuda.Device(device).attributes["MultiProcessorCount"]


def _row_grid(n: int) -> int:
    """Blocks for a one-thread-per-row kernel over ``n`` rows (grid-stride beyond that)."""
    return max(1, min(-(-n // _ROW_THREADS), 8 * _multiprocessors(_device_id())))


# -- argument handling -----------------------------------------------------------------------


def _vector(values, n_rows: int, dtype, label: str):
    """``values`` as a contiguous device vector of ``dtype`` and length ``n_rows``."""
    values = cupy.ascontiguousarray(cupy.asarray(values, dtype=dtype))
    if values.shape != (n_rows,):
        raise ValueError(f"{label} must have shape ({n_rows},), got {values.shape}")
    return values


def _weights(sample_weight, n_rows: int):
    return None if sample_weight is None else _vector(sample_weight, n_rows, numpy.float64,
                                                      "sample_weight")  # fmt: skip


def _rows(rows, n_rows: int):
    """``rows`` as a device int64 vector (bounds-checked), or None."""
    if rows is None:
        return None
    module = cupy if isinstance(rows, cupy.ndarray) else numpy
    rows = module.ascontiguousarray(rows, dtype=numpy.int64).reshape(-1)
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n_rows):
        raise IndexError("rows holds an index outside 0 .. n-1")
    return cupy.asarray(rows)


def _float64_chunks(X, rows):
    """``(lo, hi, Xc)``: the selected rows ``lo:hi`` of ``X`` as float64 (n, d) blocks.

    A float64 ``X`` without ``rows`` is returned as views; otherwise rows are gathered
    and/or widened into a buffer of about :data:`_CHUNK_BYTES`, reused for each chunk
    (stream order makes that safe: a chunk's GEMMs run before the next chunk's copy).
    """
    m = X.shape[0] if rows is None else rows.size
    d = X.shape[1]
    step = max(1, _CHUNK_BYTES // (8 * max(d, 1)))
    buffer = None
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        if rows is None and X.dtype == numpy.float64:
            yield lo, hi, X[lo:hi]
            continue
        if buffer is None:
            buffer = cupy.empty((min(step, m), d))
        block = buffer[: hi - lo]
        block[...] = X[lo:hi] if rows is None else X[rows[lo:hi]]
        yield lo, hi, block


# -- linear models ---------------------------------------------------------------------------


def linear_loss_grad(loss, X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted loss sum of a linear model and its gradient, one read of ``X``.

    Same contract as :func:`kernels.reference.linear_loss_grad`; ``X`` (and ``y``,
    ``sample_weight``, ``rows``) on the device, ``params`` and ``grad_out`` on the host.
    A CSR ``X`` takes the cuSPARSE path (module docstring).
    """
    check_loss(loss)
    check_arrays(X, params, grad_out)
    check_linear_params(X, params)
    n_rows, d = X.shape
    X = to_device(X)
    y = _vector(y, n_rows, numpy.float64, "y")
    weight = _weights(sample_weight, n_rows)
    rows = _rows(rows, n_rows)
    m = n_rows if rows is None else rows.size
    if m == 0:
        if not accumulate:
            grad_out[:] = 0.0
        return 0.0
    device_params = cupy.asarray(params)
    warps = min(_MAX_WARPS, _SHARED_BYTES // (8 * (d + 2)))
    if is_sparse(X):
        sums = _linear_sparse(loss, X, y, weight, rows, device_params)
    elif warps >= 1:
        sums = _linear_single_pass(loss, X, y, weight, rows, device_params, m, warps)
    else:
        sums = _linear_two_gemms(loss, X, y, weight, rows, device_params)
    host = _fetch_new(sums)
    _store(host[: d + 1], grad_out, accumulate)
    return float(host[d + 1])


def _store(values, grad_out, accumulate):
    """``grad_out := values``, or ``grad_out += values`` with ``accumulate`` (host arrays)."""
    if accumulate:
        grad_out += values
    else:
        grad_out[:] = values


def _linear_single_pass(loss, X, y, weight, rows, params, m, warps):
    """``[gradient of w | of b | loss]`` (d + 2,) on the device, by linear_grad.cu."""
    d = X.shape[1]
    registers = 4 if d <= 128 else 8
    dtype = "f32" if X.dtype == numpy.float32 else "f64"
    device = _device_id()
    kernel = _function("linear_grad.cu", f"linear_grad_{dtype}_k{registers}", device)
    per_sm = max(1, _RESIDENT_WARPS[registers] // warps)
    grid = max(1, min(-(-m // warps), per_sm * _multiprocessors(device)))
    partials = cupy.empty((grid, d + 2))
    kernel(
        (grid,),
        (32 * warps,),
        (
            X,
            y,
            y if weight is None else weight,  # not read without weights
            y if rows is None else rows,  # not read without rows
            params,
            partials,
            numpy.int64(m),
            numpy.int32(d),
            numpy.int32(_LOSS_CODES[loss]),
            numpy.int32(weight is not None),
            numpy.int32(rows is not None),
        ),
        shared_mem=8 * warps * (d + 2),
    )
    return partials.sum(axis=0)


def _linear_two_gemms(loss, X, y, weight, rows, params):
    """The same sums for rows too wide for shared memory: per chunk, cuBLAS ``z = Xc w``,
    linear_rows.cu for the loss and ``r``, cuBLAS ``g += Xc.T r`` (chunk still in L2)."""
    d = X.shape[1]
    w, b = params[:d], params[d]
    sums = cupy.zeros(d + 2)
    kernel = _function("linear_grad.cu", "linear_rows", _device_id())
    for lo, hi, block in _float64_chunks(X, rows):
        z = block @ w + b
        row_loss = cupy.empty(hi - lo)
        chunk_rows = None if rows is None else rows[lo:hi]
        y_chunk = y if rows is not None else y[lo:hi]
        weight_chunk = None if weight is None else (weight if rows is not None else weight[lo:hi])
        kernel(
            (_row_grid(hi - lo),),
            (_ROW_THREADS,),
            (
                z,
                row_loss,
                y_chunk,
                y_chunk if weight_chunk is None else weight_chunk,
                y_chunk if chunk_rows is None else chunk_rows,
                numpy.int64(hi - lo),
                numpy.int32(_LOSS_CODES[loss]),
                numpy.int32(weight is not None),
                numpy.int32(rows is not None),
            ),
        )
        sums[:d] += block.T @ z
        sums[d] += z.sum()
        sums[d + 1] += row_loss.sum()
    return sums


def _linear_sparse(loss, X, y, weight, rows, params):
    """``[gradient of w | of b | loss]`` (d + 2,) on the device for a CSR ``X``: cuSPARSE
    ``z = Xs @ w + b``, linear_rows.cu for the loss and ``r``, cuSPARSE ``Xs.T @ r``."""
    d = X.shape[1]
    selected = _selected_csr(X, rows)
    m = selected.shape[0]
    z = selected @ params[:d] if selected.nnz else cupy.zeros(m)
    z += params[d]
    row_loss = cupy.empty(m)
    kernel = _function("linear_grad.cu", "linear_rows", _device_id())
    kernel(
        (_row_grid(m),),
        (_ROW_THREADS,),
        (
            z,
            row_loss,
            y,
            y if weight is None else weight,  # not read without weights
            y if rows is None else rows,  # not read without rows
            numpy.int64(m),
            numpy.int32(_LOSS_CODES[loss]),
            numpy.int32(weight is not None),
            numpy.int32(rows is not None),
        ),
    )
    sums = cupy.zeros(d + 2)
    if selected.nnz:
        sums[:d] = selected.T @ z
    sums[d] = z.sum()
    sums[d + 1] = row_loss.sum()
    return sums


def linear_decision(X, params):
    """``X @ w + b``, shape (n,), float64, as a host array. Same contract as the reference."""
    check_arrays(X, params)
    check_linear_params(X, params)
    device_params = cupy.asarray(params)
    if is_sparse(X):
        selected = _selected_csr(to_device(X), None)
        z = selected @ device_params[:-1] if selected.nnz else cupy.zeros(X.shape[0])
        return cupy.asnumpy(z + device_params[-1])
    out = cupy.empty(X.shape[0])
    for lo, hi, block in _float64_chunks(to_device(X), None):
        out[lo:hi] = block @ device_params[:-1]
    out += device_params[-1]
    return cupy.asnumpy(out)


# -- softmax regression ----------------------------------------------------------------------


def softmax_loss_grad(X, y, sample_weight, params, grad_out, rows=None, accumulate=False):
    """Weighted cross-entropy sum of a softmax model and its gradient.

    Same contract as :func:`kernels.reference.softmax_loss_grad`; see the module
    docstring for the chunked GEMM + fused kernel + GEMM scheme, and for the cuSPARSE one
    of a CSR ``X`` (one chunk: all the selected rows).
    """
    check_arrays(X, params, grad_out)
    n_rows, d = X.shape
    C = n_classes(params, d)
    X = to_device(X)
    y = _vector(y, n_rows, numpy.int64, "y")
    weight = _weights(sample_weight, n_rows)
    rows = _rows(rows, n_rows)
    if rows is not None:  # the row kernel reads labels and weights by position
        y = y[rows]
        weight = None if weight is None else weight[rows]
    m = y.size
    if m == 0:
        if not accumulate:
            grad_out[:] = 0.0
        return 0.0
    device_params = cupy.asarray(params)
    W, b = device_params[: C * d].reshape(C, d), device_params[C * d :]
    # [G (C d) | gradient of b (C) | loss | bad-label flag]
    sums = cupy.zeros(C * d + C + 2)
    G, grad_b = sums[: C * d].reshape(C, d), sums[C * d : C * d + C]
    bad_label = cupy.zeros(1, dtype=numpy.int32)
    kernel = _function("softmax_rows.cu", "softmax_xent_rows_f64", _device_id())
    sparse_rows = _selected_csr(X, rows) if is_sparse(X) else None
    chunks = _float64_chunks(X, rows) if sparse_rows is None else [(0, m, sparse_rows)]
    for lo, hi, block in chunks:
        if sparse_rows is not None and not block.nnz:
            Z = cupy.zeros((hi - lo, C))
        else:
            Z = cupy.ascontiguousarray(block @ W.T)
        row_loss = cupy.empty(hi - lo)
        _softmax_rows(kernel, Z, Z, b, y[lo:hi], None if weight is None else weight[lo:hi],
                      row_loss, bad_label)  # fmt: skip
        grad_b += Z.sum(axis=0)
        if sparse_rows is None:
            G += Z.T @ block
        elif block.nnz:
            G += (block.T @ Z).T
        sums[C * d + C] += row_loss.sum()
    sums[C * d + C + 1] = bad_label[0]
    host = _fetch_new(sums)
    if host[-1]:
        raise ValueError("softmax class ids must lie in 0 .. C-1")
    _store(host[: C * d + C], grad_out, accumulate)
    return float(host[C * d + C])


def _softmax_rows(kernel, Z, dZ, bias, y, weight, row_loss, bad_label):
    """Launch softmax_rows.cu over the rows of ``Z`` (n, C); ``bias`` may be None."""
    n, C = Z.shape
    kernel(
        (_row_grid(n),),
        (_ROW_THREADS,),
        (
            Z,
            dZ,
            row_loss if bias is None else bias,  # not read without a bias
            y,
            row_loss if weight is None else weight,  # not read without weights
            row_loss,
            bad_label,
            numpy.int64(n),
            numpy.int32(C),
            numpy.int32(bias is not None),
            numpy.int32(weight is not None),
        ),
    )


def softmax_decision(X, params):
    """``X @ W.T + b``, shape (n, C), float64, as a host array. Same contract as the reference."""
    check_arrays(X, params)
    d = X.shape[1]
    C = n_classes(params, d)
    device_params = cupy.asarray(params)
    W = device_params[: C * d].reshape(C, d)
    if is_sparse(X):
        selected = _selected_csr(to_device(X), None)
        Z = selected @ W.T if selected.nnz else cupy.zeros((X.shape[0], C))
        return cupy.asnumpy(Z + device_params[C * d :])
    out = cupy.empty((X.shape[0], C))
    for lo, hi, block in _float64_chunks(to_device(X), None):
        out[lo:hi] = block @ W.T
    out += device_params[C * d :]
    return cupy.asnumpy(out)


# -- MLP layers (same contracts as kernels.dense) --------------------------------------------

_relu = cupy.ElementwiseKernel(
    "T z", "T out", "out = (z > (T)0 || z != z) ? z : (T)0", "mpigd_relu_forward"
)
_relu_masked = cupy.ElementwiseKernel(
    "T z, T mask", "T out", "out = ((z > (T)0 || z != z) ? z : (T)0) * mask",
    "mpigd_relu_forward_masked",
)  # fmt: skip
_relu_grad = cupy.ElementwiseKernel(
    "T grad, T z", "T out", "out = grad * (T)(z > (T)0)", "mpigd_relu_backward"
)
_relu_grad_masked = cupy.ElementwiseKernel(
    "T grad, T z, T mask", "T out", "out = grad * (T)(z > (T)0) * mask",
    "mpigd_relu_backward_masked",
)  # fmt: skip


def dense_forward(A, W, b, out):
    """``out = A @ W.T + b`` (one cuBLAS GEMM, or cuSPARSE SpMM for a CSR ``A``, then a
    broadcast add in place)."""
    if is_sparse(A):
        out[...] = _csr_to_device(A) @ W.T if A.nnz else 0
    else:
        cupy.matmul(A, W.T, out=out)
    if b is not None:
        out += b
    return out


def relu_forward(Z, mask, out):
    """``out = max(Z, 0) * mask`` in one elementwise kernel; ``out`` may be ``Z``."""
    if mask is None:
        return _relu(Z, out)
    return _relu_masked(Z, mask, out)


def relu_backward(dA, Z, mask, out):
    """``out = dA * (Z > 0) * mask`` in one elementwise kernel; ``out`` may be ``dA``."""
    if mask is None:
        return _relu_grad(dA, Z, out)
    return _relu_grad_masked(dA, Z, mask, out)


def dense_backward(dZ, A, W, gW, gb, dA=None):
    """``gW = dZ.T @ A``, ``gb = Σ_rows dZ``, ``dA = dZ @ W`` (cuBLAS; ``dA`` optional).

    For a CSR ``A`` (the first layer's input), ``gW = (A.T @ dZ).T`` by cuSPARSE.
    """
    if is_sparse(A):
        gW[...] = (_csr_to_device(A).T @ dZ).T if A.nnz else 0
    else:
        cupy.matmul(dZ.T, A, out=gW)
    cupy.sum(dZ, axis=0, out=gb)
    if dA is not None:
        cupy.matmul(dZ, W, out=dA)


def softmax_xent(Z, y, sample_weight, dZ):
    """Cross-entropy sum of the softmax of ``Z`` against class ids ``y``; ``dZ`` its gradient.

    One fused kernel (softmax_rows.cu) in float64, ``dZ`` rounded to ``Z``'s dtype.
    """
    n, C = Z.shape
    if n == 0:
        return 0.0
    if not (Z.flags.c_contiguous and dZ.flags.c_contiguous) or dZ.dtype != Z.dtype:
        raise ValueError("softmax_xent needs C-contiguous Z and dZ of one dtype")
    y = _vector(y, n, numpy.int64, "y")
    weight = _weights(sample_weight, n)
    dtype = "f32" if Z.dtype == numpy.float32 else "f64"
    kernel = _function("softmax_rows.cu", f"softmax_xent_rows_{dtype}", _device_id())
    row_loss = cupy.empty(n)
    bad_label = cupy.zeros(1, dtype=numpy.int32)
    _softmax_rows(kernel, Z, dZ, None, y, weight, row_loss, bad_label)
    sums = cupy.empty(2)
    sums[0] = row_loss.sum()
    sums[1] = bad_label[0]
    host = _fetch_new(sums)
    if host[1]:
        raise ValueError("softmax class ids must lie in 0 .. C-1")
    return float(host[0])


def half_squared_error(Z, y, sample_weight, dZ):
    """½ Σ s_i (Z_i − y_i)² for a one-column ``Z``; ``dZ = s_i (Z_i − y_i)``."""
    n = Z.shape[0]
    residual = Z[:, 0].astype(numpy.float64) - _vector(y, n, numpy.float64, "y")
    weight = _weights(sample_weight, n)
    if weight is None:
        dZ[:, 0] = residual
        loss = residual @ residual
    else:
        dZ[:, 0] = residual * weight
        loss = (residual * residual) @ weight
    return 0.5 * float(loss)
