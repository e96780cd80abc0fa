"""Single-pass Numba kernels on CSR rows, behind the ``numba`` backend (:mod:`kernels.cpu`).

The kernels take the three CSR arrays of ``X`` (``indptr``, ``indices`` int32 or int64,
``data`` float32 or float64; canonical, as :func:`kernels.reference.check_csr` requires)
and compute in float64. One pass per row: the row's entries are read from memory once,
for the dot product(s) ``z = x . w + b``, and again from L1 for the scatter-add
``g[j] += r x_j`` once the row's slope ``r`` is known. The per-row losses, slopes and
the softmax are :mod:`kernels.fused`'s own helpers, so both layouts compute the same
numbers. Nothing proportional to ``n`` or ``d`` is allocated; ``accumulate=True`` skips
the zeroing of ``grad_out``, so a call then touches only the entries of its rows'
columns (and the intercepts): O(nonzeros of the batch), however large ``d``.

Every column index is bounds-checked as the dot product reads it (one unsigned
comparison), and every row's ``indptr`` span as it is opened, so a corrupt matrix raises
``ValueError`` rather than reading or writing out of bounds. Positions are uint64 inside
the loops, which also spares Numba's negative-index wraparound code there: with signed
positions the gather loop took about 15 instructions per entry instead of 9 and was
several times slower (1.9x scipy's ``X @ w``, now 0.5x, in the same runs). "No weights"
and "all rows" are passed as values (:data:`NO_WEIGHTS`, a flag), not None, so one
compiled version per data and index dtype serves every call (each costs 2-4 s of CPU to
compile).

Measured on the 2-core AMD EPYC KVM guest this was written on (1 MB L2 per core, 32 MB
L3 shared with the other core's jobs, load average 2-3 throughout), 1 thread: logistic
loss+gradient, one full pass over 500,000 x 1,048,576 float64 CSR with 40 entries per
row (int32 indices), min of 11 (median). Uniform random columns: 397 ms (608), against
423 ms (606) for scipy's ``X @ w`` and ``X.T @ r`` and 24 ms (27) for one streaming read
of ``data`` and ``indices`` (a Numba loop summing both; ``data.sum() + indices.sum()``:
29 ms); 17x the floor, not the 2x aimed at. Columns by Zipf's law (exponent 1, as ``data
synth --sparse`` draws them; 18.6M entries after duplicates merge): 308 ms (343), scipy
411 ms (478), floor 23 ms: 13x. The floor is the wrong model at this ``d``: each entry
costs one random read of ``w`` and one random read-modify-write of the gradient, each
8 MB, about 10 ns apiece, against 1.2 ns per entry for the stream. Alone, the gather
(all the dot products) took 71-112 ms and the scatter (all the adds) 63-145 ms on
the same matrix; together they need 16 MB of cache at once where each of scipy's passes
needs 8 MB, and aliasing the gradient onto ``w`` (an 8 MB working set, same code) ran
in 315 instead of 587 ms, so scipy's second read of the stream costs less than the
fused pass's larger working set saves. What helped at ``d >= 2**19``
(:data:`PREFETCH_MIN_FEATURES`): blocks of :data:`BLOCK_ROWS` rows, their dot products
then their scatter-adds (the block's entries still in L1), each row's scatter
prefetching the lines of ``w`` and the gradient for the row one block ahead: 397 ms
against 658 ms (710) row by row without prefetching (Zipf: 308 against 493 ms). Tried
and slower: a prefetch cursor one entry ahead per entry read (+10-25%), prefetching a
whole row at once, blocks of 32 or 256 rows (8 were no faster than 16). Below ``2**19``
features the row-by-row loop is kept: with ``w`` and the gradient cached, prefetches
only cost instructions (at ``d = 2**17`` they made the pass 25% slower) and blocking did
not pay (``d = 4096``: 61 ms row by row, 73 ms in blocks of 16; scipy 86 ms; floor
26 ms). Mini-batches: 512 random rows
(~20,000 entries) take 0.36 ms with ``accumulate=True`` and 0.75 ms without, the
difference being the zeroing of the 8 MB gradient that ``accumulate`` leaves to the
caller. Softmax on CSR (C dot products and C scatter-adds per row, row by row) is not
tuned or measured here.

Numba's on-disk cache checks only the timestamp of the file holding a compiled function:
after editing the helpers this module imports from :mod:`kernels.fused`, touch this file
too (or clear ``kernels/__pycache__``), or the cached sparse kernels keep the old ones.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.fused import (  # the per-row helpers, shared with the dense kernels
    _COMPILE,
    _loss_slope,
    _row_index,
    _softmax_row,
)

#: ``rows`` and ``sample_weight`` of a call that has none (see :func:`linear_loss_grad`).
NO_ROWS = np.empty(0, dtype=np.int64)
NO_WEIGHTS = np.empty(0)

#: Rows per block of the linear kernel: their dot products, then their scatter-adds, the
#: block's entries (~8 KB at 40 per row) still in L1 for the second read.
BLOCK_ROWS = 16
#: The linear kernel prefetches from this many features on: below, ``w`` and the gradient
#: (2 x 8 d bytes) stay in cache and the prefetches only cost instructions (measured; see
#: the module docstring).
PREFETCH_MIN_FEATURES = 1 << 19


def _prefetch_codegen(for_writing):
    """LLVM for ``prefetch(array, index)``: ``llvm.prefetch`` of the address of
    ``array[index]``, for reading or for writing, into all cache levels."""

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        array_struct = context.make_array(array_type)(context, builder, args[0])
        position = context.cast(builder, args[1], index_type, types.intp)
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_struct,
                                           [position], wraparound=False)  # fmt: skip
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, int32, int32, int32])
        llvm_prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer.type],
                                                         function_type)  # fmt: skip
        builder.call(llvm_prefetch, [byte_pointer, int32(int(for_writing)), int32(3), int32(1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line of ``array[index]`` in, for writing. A hint: it
    never faults and never changes a result."""
    del typingctx
    return types.void(array, index), _prefetch_codegen(for_writing=True)


@intrinsic
def _prefetch_read(typingctx, array, index):
    """:func:`_prefetch`, for reading."""
    del typingctx
    return types.void(array, index), _prefetch_codegen(for_writing=False)


@njit(**_COMPILE)
def _selected_row(n_rows, rows, all_rows, q):
    """Index of the ``q``-th selected row: ``q`` itself with ``all_rows``, else ``rows[q]``,
    bounds-checked by :func:`kernels.fused._row_index`."""
    return q if all_rows else _row_index(n_rows, rows, q)


@njit(**_COMPILE)
def _row_weight(sample_weight, i):
    """Weight of row ``i``; 1 when ``sample_weight`` is empty (:data:`NO_WEIGHTS`)."""
    return 1.0 if sample_weight.shape[0] == 0 else sample_weight[i]


@njit(**_COMPILE)
def _row_span(indptr, nnz, i):
    """``(start, stop)`` of row ``i``'s entries in ``indices``/``data``, checked, as uint64."""
    start, stop = indptr[i], indptr[i + 1]
    if start < 0 or start > stop or stop > nnz:
        raise ValueError("CSR indptr is not non-decreasing within 0 .. nnz")
    return uint64(start), uint64(stop)


@njit(**_COMPILE)
def _sparse_dot(indices, data, start, stop, w, offset, d, z):
    """``z + sum_k data[k] * w[offset + indices[k]]`` over ``start <= k < stop``.

    Each column index is checked to lie in ``0 .. d-1`` before it is used: the kernels
    read a row here first, so the scatter that follows needs no check. All positions are
    uint64 (a negative int32 index wraps to a huge one, so one comparison checks both
    ends), which also spares Numba's negative-index wraparound code in the loop.
    """
    for k in range(start, stop):
        j = uint64(indices[k])
        if j >= d:
            raise ValueError("CSR column index outside 0 .. d-1")
        z += data[k] * w[offset + j]
    return z


@njit(**_COMPILE)
def _prefetch_selected_rows(indptr, indices, data, rows, all_rows, m, q):
    """With ``rows``, whose entries lie anywhere in memory, prefetch for later blocks what
    :func:`_sparse_axpy_prefetching` will read there: the ``indptr`` entries of the row 2
    :data:`BLOCK_ROWS` positions after ``q``, and the ``indices`` and ``data`` lines of
    the row one block after (its ``indptr`` now cached). Invalid positions are
    skipped here; the loops that read them raise. Nothing to do with ``all_rows``: the
    entries are then read in order and the hardware prefetches them."""
    if all_rows:
        return
    n_rows, nnz = indptr.shape[0] - 1, data.shape[0]
    ahead = q + 2 * BLOCK_ROWS
    if ahead < m and 0 <= rows[ahead] < n_rows:
        _prefetch_read(indptr, rows[ahead])
    ahead = q + BLOCK_ROWS
    if ahead < m and 0 <= rows[ahead] < n_rows:
        start, stop = indptr[rows[ahead]], indptr[rows[ahead] + 1]
        if 0 <= start <= stop <= nnz:
            for k in range(start, stop, 8):  # one per 64 bytes of data (a hint: the ends may miss)
                _prefetch_read(indices, k)
                _prefetch_read(data, k)


@njit(**_COMPILE)
def _sparse_axpy(r, indices, data, start, stop, g, offset):
    """``g[offset + indices[k]] += r * data[k]`` over ``start <= k < stop`` (checked by
    :func:`_sparse_dot`)."""
    for k in range(start, stop):
        g[offset + uint64(indices[k])] += r * data[k]


@njit(**_COMPILE)
def _sparse_axpy_prefetching(r, indices, data, start, stop, g, w, d, ahead, ahead_stop):
    """:func:`_sparse_axpy` (``offset`` 0) that also prefetches the lines of ``w`` and ``g``
    of the entries ``ahead <= k < ahead_stop`` (a row of the next block): one per entry it
    adds, the rest after."""
    for k in range(start, stop):
        if ahead < ahead_stop:
            j = uint64(indices[ahead])
            if j < d:
                _prefetch(w, j)
                _prefetch(g, j)
            ahead += uint64(1)
        g[uint64(indices[k])] += r * data[k]
    for k in range(ahead, ahead_stop):
        j = uint64(indices[k])
        if j < d:
            _prefetch(w, j)
            _prefetch(g, j)


@njit(**_COMPILE)
def linear_loss_grad(loss_code, indptr, indices, data, y, sample_weight, params, grad_out,
                     rows, all_rows, accumulate):  # fmt: skip
    """Fused loss sum and gradient of a linear model on CSR rows, one read of each row.

    Below :data:`PREFETCH_MIN_FEATURES` features, row by row (:func:`_linear_rows`); from
    there on, blocks of rows with prefetching (:func:`_linear_blocks`).

    Parameters
    ----------
    loss_code : int
        :data:`kernels.fused.SQUARED`, ``LOGISTIC``, ``HINGE`` or ``SQUARED_HINGE``.
    indptr, indices, data : ndarray
        The CSR arrays of ``X`` (n, d): ``indptr`` (n + 1,) and ``indices`` (nnz,) int32 or
        int64, ``data`` (nnz,) float32 or float64.
    y : ndarray, shape (n,), float64
    sample_weight : ndarray, shape (n,), float64, or :data:`NO_WEIGHTS` (empty) for none
    params : ndarray, shape (d + 1,), float64
    grad_out : ndarray, shape (d + 1,), float64
        Overwritten, or with ``accumulate`` added to (then only the entries of the
        selected rows' columns and the intercept are touched).
    rows : ndarray of int64
        The selected rows (repeats allowed); ignored with ``all_rows`` (pass
        :data:`NO_ROWS`).
    all_rows : bool
    accumulate : bool

    "No weights" and "all rows" are values, not None as in :mod:`kernels.fused`, so that
    one compiled version serves all four combinations (fewer signatures to compile).

    Returns
    -------
    float
        ``sum_i s_i loss_i``; ``grad_out`` holds (or gained) ``sum_i s_i d loss_i / d params``.
    """
    if not accumulate:
        grad_out[:] = 0.0
    if params.shape[0] - 1 >= PREFETCH_MIN_FEATURES:
        total, grad_b = _linear_blocks(loss_code, indptr, indices, data, y, sample_weight,
                                       params, grad_out, rows, all_rows)  # fmt: skip
    else:
        total, grad_b = _linear_rows(loss_code, indptr, indices, data, y, sample_weight,
                                     params, grad_out, rows, all_rows)  # fmt: skip
    grad_out[-1] += grad_b
    return total


@njit(**_COMPILE)
def _linear_rows(loss_code, indptr, indices, data, y, sample_weight, params, grad_out, rows,
                 all_rows):  # fmt: skip
    """The loss sum and the intercept's gradient of :func:`linear_loss_grad`; the weights'
    gradient added to ``grad_out``. Row by row: the dot product, the slope ``r``, the
    scatter-add, the row's entries still in L1."""
    n_rows, nnz = indptr.shape[0] - 1, data.shape[0]
    d = uint64(params.shape[0] - 1)
    total = 0.0
    grad_b = 0.0
    for q in range(n_rows if all_rows else rows.shape[0]):
        i = _selected_row(n_rows, rows, all_rows, q)
        start, stop = _row_span(indptr, nnz, i)
        z = _sparse_dot(indices, data, start, stop, params, uint64(0), d, params[-1])
        loss, slope = _loss_slope(loss_code, z, y[i])
        s = _row_weight(sample_weight, i)
        r = s * slope
        if r != 0.0:  # hinges: rows past the margin add nothing
            _sparse_axpy(r, indices, data, start, stop, grad_out, uint64(0))
        total += s * loss
        grad_b += r
    return total, grad_b


@njit(**_COMPILE)
def _linear_blocks(loss_code, indptr, indices, data, y, sample_weight, params, grad_out,
                   rows, all_rows):  # fmt: skip
    """:func:`_linear_rows` by blocks of :data:`BLOCK_ROWS` selected rows, for large ``d``:
    the block's dot products and slopes, then its scatter-adds, the block's entries still
    in L1. The scatter-adds of row ``q`` prefetch the lines of ``w`` and the gradient that
    row ``q + BLOCK_ROWS`` will use, and with ``rows`` the dot products prefetch the next
    blocks' entries (:func:`_prefetch_selected_rows`)."""
    n_rows, nnz = indptr.shape[0] - 1, data.shape[0]
    d = uint64(params.shape[0] - 1)
    m = n_rows if all_rows else rows.shape[0]
    slopes = np.empty(BLOCK_ROWS)
    starts, stops = np.empty(BLOCK_ROWS, np.uint64), np.empty(BLOCK_ROWS, np.uint64)
    total = 0.0
    grad_b = 0.0
    for q0 in range(0, m, BLOCK_ROWS):
        q1 = min(q0 + BLOCK_ROWS, m)
        for q in range(q0, q1):
            _prefetch_selected_rows(indptr, indices, data, rows, all_rows, m, q)
            i = _selected_row(n_rows, rows, all_rows, q)
            start, stop = _row_span(indptr, nnz, i)
            z = _sparse_dot(indices, data, start, stop, params, uint64(0), d, params[-1])
            loss, slope = _loss_slope(loss_code, z, y[i])
            s = _row_weight(sample_weight, i)
            slopes[q - q0], starts[q - q0], stops[q - q0] = s * slope, start, stop
            total += s * loss
            grad_b += s * slope
        for q in range(q0, q1):
            r, start, stop = slopes[q - q0], starts[q - q0], stops[q - q0]
            if r == 0.0:  # hinges: rows past the margin add nothing (but prefetch ahead)
                start = stop
            ahead, ahead_stop = uint64(0), uint64(0)
            if q + BLOCK_ROWS < m:
                ahead, ahead_stop = _row_span(
                    indptr, nnz, _selected_row(n_rows, rows, all_rows, q + BLOCK_ROWS)
                )
            _sparse_axpy_prefetching(r, indices, data, start, stop, grad_out, params, d,
                                     ahead, ahead_stop)  # fmt: skip
    return total, grad_b


@njit(**_COMPILE)
def softmax_loss_grad(indptr, indices, data, y, sample_weight, params, grad_out, rows,
                      all_rows, accumulate, n_features):  # fmt: skip
    """Fused cross-entropy sum and gradient of a softmax model on CSR rows.

    Per row: the C dot products with the rows of ``W`` (the row's entries read from
    memory once, then from L1), the residuals ``s (softmax - onehot)`` by
    :func:`kernels.fused._softmax_row`, and the C scatter-adds into ``G``.

    Parameters
    ----------
    indptr, indices, data : ndarray
        The CSR arrays of ``X`` (n, d), as in :func:`linear_loss_grad`.
    y : ndarray, shape (n,), int64, class ids ``0 .. C-1``
    sample_weight, rows, all_rows, accumulate : as in :func:`linear_loss_grad`
    params : ndarray, shape (C * d + C,), float64, ``[W (C, d) row-major, b (C,)]``
    grad_out : ndarray, shape (C * d + C,), float64
        Overwritten, or with ``accumulate`` added to (same layout).
    n_features : int
        ``d``.

    Returns
    -------
    float
        ``sum_i s_i * (-log softmax(z_i)[y_i])``.
    """
    n_rows = indptr.shape[0] - 1
    nnz = data.shape[0]
    C = params.shape[0] // (n_features + 1)
    d = uint64(n_features)
    b, grad_b = params[C * n_features :], grad_out[C * n_features :]
    if not accumulate:
        grad_out[:] = 0.0
    z = np.empty(C)
    total = 0.0
    for q in range(n_rows if all_rows else rows.shape[0]):
        i = _selected_row(n_rows, rows, all_rows, q)
        start, stop = _row_span(indptr, nnz, i)
        for c in range(C):
            z[c] = _sparse_dot(indices, data, start, stop, params, uint64(c) * d, d, b[c])
        total += _softmax_row(z, y[i], _row_weight(sample_weight, i))
        for c in range(C):
            grad_b[c] += z[c]
            if z[c] != 0.0:
                _sparse_axpy(z[c], indices, data, start, stop, grad_out, uint64(c) * d)
    return total


@njit(**_COMPILE)
def linear_decision(indptr, indices, data, params, out):
    """``out = X @ w + b`` for CSR ``X`` (n, d); ``params`` (d + 1,), ``out`` (n,) float64."""
    nnz = data.shape[0]
    d = uint64(params.shape[0] - 1)
    for i in range(indptr.shape[0] - 1):
        start, stop = _row_span(indptr, nnz, i)
        out[i] = _sparse_dot(indices, data, start, stop, params, uint64(0), d, params[-1])


@njit(**_COMPILE)
def softmax_decision(indptr, indices, data, params, n_features, out):
    """``out = X @ W.T + b`` for CSR ``X`` (n, d); ``out`` (n, C) float64."""
    nnz = data.shape[0]
    C = out.shape[1]
    d = uint64(n_features)
    b = params[C * n_features :]
    for i in range(indptr.shape[0] - 1):
        start, stop = _row_span(indptr, nnz, i)
        for c in range(C):
            out[i, c] = _sparse_dot(indices, data, start, stop, params, uint64(c) * d, d, b[c])
