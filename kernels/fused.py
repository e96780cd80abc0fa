"""Single-pass Numba kernels behind the ``numba`` backend (:mod:`kernels.cpu`).

The gradients are memory-bandwidth-bound, so each kernel reads ``X`` from memory once.
All arithmetic is float64; a float32 ``X`` is read as float32 (half the traffic) and
widened per element. No kernel allocates anything proportional to ``n``.

Linear losses (issue 16): blocks of selected rows, :data:`LINEAR_BLOCK_BYTES` of ``X``
each (32 rows of 100 float64, 64 of 100 float32: L1-sized), in three phases per block.
(1) The dot products, eight rows at a time (one load of ``w`` serves eight rows), read
the rows from memory into L1. (2) The block's losses and slopes ``r_i = s_i dloss_i/dz``
in one loop over the block; for the logistic loss that loop is branch-free and calls no
library function (:func:`_logistic_block`: ``exp`` and ``log1p`` as polynomials,
``2**n`` from bits, one division per row), so LLVM vectorises the transcendental work
that was a scalar ``exp``, ``log`` and division per row. (3) ``g += sum_k r_k x_k``,
eight rows at a time from L1 (one load and store of ``g`` per eight rows), summed as a
balanced tree added to ``g`` last. Throughout, the rows :data:`LINEAR_PREFETCH_BLOCKS`
blocks ahead are prefetched into L2, four rows per eight-row step, spread over phases
(1) and (3), unless a row is longer than :data:`LINEAR_PREFETCH_MAX_ROW_BYTES`. Only the
dot, axpy and sum helpers are compiled with ``fastmath={"reassoc", "contract"}``; the
loss loop gets ``contract`` only (its rounding trick must not be reassociated) and stays
within a few ulp of the library functions (:func:`_logistic`, kept for the per-row
callers, the sparse and boosting kernels). A float32 ``X`` is widened per element in
each of phases (1) and (3).

Measured on the 2-core Xeon (Sapphire Rapids, KVM, AVX-512, 1 thread, the other core
running another benchmark), logistic loss+gradient of 400,000 x 100, as the ratio to one
streaming read of the same ``X`` (OpenBLAS ``dot``, 1 thread) in back-to-back pairs,
median of 9 (``experiments/bench_kernels.py``), seven separate runs at load 1.8-2.4:
float64 1.28-1.31 in every run (about 22 ms against a 16-18 ms stream; the former
kernel, one pass four rows at a time, 1.65-1.75), float32 1.31, 1.36, 1.37, 1.55, 1.62,
1.36, 1.51 (about 12.5 ms against 8.2-9.2 ms; formerly 2.6-2.9): the float32 target of
1.5 is met in the median run, not in every run. Float32 is the fragile one: it is close
to compute-bound (in L2 the kernel takes 9.1 ms for the 400,000 rows against an 8.2 ms
stream from memory), so it slows whenever the sibling hardware thread is busy; on this
guest compute-bound timings are bimodal, so compare ratios from one run, not times
across runs. Other shapes against the former kernel, same pairs: 4,000,000 x 10 2.8-3.3x
faster, 40,000 x 1,000 and 8,000 x 5,000 as fast (0.9-1.0x the time); 512 random rows
(``rows=``) 2.3x faster at d = 10, 1.4-3x at d = 100, as fast at d = 1,000 and 5,000.

What mattered, each measured alone. The axpy's dependence through ``g``: a four-row axpy
chaining four FMAs through ``g`` took 6.5 ms in L1 for the 400,000 rows, eight rows as a
tree 2.6 ms. Software prefetching: without it float32 stays at ~2.3x (the dot phase
alone, from memory, ran at 1.9x the stream); in one burst per block it reached 1.75x;
spread over the block, four rows per eight-row step, 1.4-1.5x; all in phase (1) or all
in phase (3) 1.45-1.6x. For float64 a burst into L1 was slower than none (1.62 against
1.48) and prefetching into L2 (``prefetcht1``) beats L1 (1.36-1.42 against 1.47-1.52);
one prefetch per 128 bytes instead of 64 was much slower (1.65); rows over 4 KB were
slower prefetched (8,000 x 5,000: 1.94 against 1.22, the hardware prefetcher follows
long rows). Rows passed to the dot helper as eight separate row arrays ran 2.4x slower
in L1 for float32 than ``X`` and eight indices. Out of cache the logistic loop costs ~2
ms (1.1 ms alone in L1), against ~4 ms for the scalar ``exp``/``log``.

Tried and no faster: 12.8 or 51 KB blocks; prefetching 1 or 4 blocks ahead (1 is as
fast, 2 kept for margin); the float32 block widened once into a float64 L1 buffer (the
extra store and load cost more than the second widening: 1.9-2.2x); software-pipelining
the next block's dot products with this block's axpy (float64 1.71 against 1.54
without); OpenBLAS ``dgemv`` per block (10.4 ms in L2 against 9-10 ms here, and float32
needs the widened buffer); 512-bit vectors
(``NUMBA_CPU_FEATURES=<host>,-prefer-256-bit``; LLVM's default here is 256-bit): 4%
faster in L2 for float32, nothing measurable from memory, not worth a process-wide
setting; one division per row instead of two in the logistic loop (as fast; kept).
Intel's SVML is not an option: ``numba -s`` reports that the PyPI llvmlite is not built
with the SVML patch (``SVML Operational: False``), so ``intel-cmplr-lib-rt`` would
change nothing, and the polynomials need no dependency.

Softmax (C classes): blocks of :data:`SOFTMAX_BLOCK_ROWS` rows. Per block, a BLAS GEMM
``Z = Xb @ W.T`` reads the rows from memory into L2, a compiled loop turns ``Z`` into
``R = s * (softmax(Z) - onehot(y))`` in place (stable: row max subtracted) and sums the
loss, and a second GEMM ``G += R.T @ Xb`` reads the rows again from L2, not memory. The
whole loop runs in compiled code (Numba calls the same BLAS), so there is no per-block
Python overhead. Measured, 400,000 x 100, C = 10, 1 thread: blocks of 256 rows
95 ms float64 and 89 ms float32, against 190 ms and 330 ms for plain numpy (2.0x, 3.7x).
Alternatives, float64: blocks of 128 rows 97 ms, 512 98 ms, 1024 118 ms; the same
blocks driven from Python 120 ms; one pass per row in Numba (four rows at a time, C dot
products then C axpys, no BLAS) 114 ms; a vectorisable polynomial ``exp`` 92 ms (not
worth its code). At C = 10 the work is compute-bound: the two skinny GEMMs take 46 ms
even on cached data and the C exponentials per row about 30 ms, 5x the 18.5 ms stream
floor, which is why a tuned BLAS beats hand-written loops here. A float32 ``X`` block is
widened into a float64 buffer in L2 before the GEMMs; ``rows=`` gathers into the same
buffer.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: Row blocks of the softmax kernel: 256 x d float64 stays in L2 for d up to ~1000.
SOFTMAX_BLOCK_ROWS = 256
#: Row blocks of the linear kernel hold about this many bytes of ``X`` (32 rows of 100
#: float64, 64 of 100 float32), to stay in L1 between the dot products and the gradient
#: update; see :func:`_linear_block_rows`.
LINEAR_BLOCK_BYTES = 25_600
#: The linear kernel prefetches, into L2, the rows this many blocks ahead of its block ...
LINEAR_PREFETCH_BLOCKS = 2
#: ... when a row is at most this many bytes (longer rows are streams the hardware
#: prefetcher follows on its own).
LINEAR_PREFETCH_MAX_ROW_BYTES = 4096

#: Loss codes of :func:`linear_loss_grad`, indexed by name (order of ``LINEAR_LOSSES``).
SQUARED, LOGISTIC, HINGE, SQUARED_HINGE = range(4)

#: Every kernel: cached to disk, releases the GIL, and IEEE division (no zero checks).
_COMPILE = {"cache": True, "nogil": True, "error_model": "numpy"}
#: Only for the dot and axpy loops: reassociation lets LLVM vectorise the reduction.
_VECTORISE = {"reassoc", "contract"}

# exp(x) = 2**n exp(r), n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, fdlibm's split).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LOG2_E = 1.44269504088896338700e00
#: ``fl(x + 1.5 * 2**52)`` rounds ``x`` to an integer held in the low mantissa bits.
_ROUNDER = 6755399441055744.0
#: Below this, ``exp`` is 0 in float64; clamping keeps the exponent arithmetic in range.
_EXP_ARG_MIN = -800.0


@intrinsic
def _bits_of(typingctx, value):
    """The bits of a float64 as an int64 (a no-op for the CPU; LLVM vectorises it)."""
    del typingctx
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float_of(typingctx, bits):
    """The float64 whose bits are the int64 ``bits``."""
    del typingctx
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _prefetch_l2(typingctx, array, offset):
    """Ask the CPU to bring into L2, for reading, the cache line of the element ``offset``
    elements past the start of ``array``'s buffer (row-major). A hint: it never faults and
    never changes a result, so ``offset`` is not checked."""
    del typingctx

    def codegen(context, builder, signature, args):
        array_type, offset_type = signature.args
        array_struct = context.make_array(array_type)(context, builder, args[0])
        position = context.cast(builder, args[1], offset_type, types.intp)
        pointer = builder.gep(array_struct.data, [position])
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, int32, int32, int32])
        llvm_prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer.type],
                                                         function_type)  # fmt: skip
        # read, locality 2 (prefetcht1: into L2), data cache
        builder.call(llvm_prefetch, [byte_pointer, int32(0), int32(2), int32(1)])
        return context.get_dummy_value()

    return types.void(array, offset), codegen


@njit(**_COMPILE)
def _row_index(n_rows, rows, k):
    """Index in ``X`` of the ``k``-th selected row (bounds-checked when ``rows`` is given)."""
    if rows is None:
        return k
    i = rows[k]
    if i < 0 or i >= n_rows:
        raise IndexError("rows holds an index outside 0 .. n-1")
    return i


@njit(**_COMPILE)
def _n_selected(n_rows, rows):
    """Number of rows a call uses: ``n``, or ``len(rows)``."""
    if rows is None:
        return n_rows
    return rows.shape[0]


@njit(**_COMPILE)
def _weight(sample_weight, i):
    """Weight of row ``i``; 1 when there are no sample weights."""
    if sample_weight is None:
        return 1.0
    return sample_weight[i]


@njit(fastmath=_VECTORISE, **_COMPILE)
def _dot(x, w, b):
    """``x . w + b`` for one row ``x`` (float32 or float64) and float64 ``w``."""
    z = b
    for j in range(w.shape[0]):
        z += x[j] * w[j]
    return z


@njit(fastmath=_VECTORISE, **_COMPILE)
def _dot8(X, i0, i1, i2, i3, i4, i5, i6, i7, w, b):
    """Dot products ``X[i_k] . w + b`` of eight rows, sharing each load of ``w``.

    The rows are taken here from ``X`` and their indices: passed as eight separate row
    arrays, a float32 ``X`` ran 2.4x slower (measured in L1).
    """
    x0, x1, x2, x3, x4, x5, x6, x7 = X[i0], X[i1], X[i2], X[i3], X[i4], X[i5], X[i6], X[i7]
    z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = 0.0
    for j in range(w.shape[0]):
        wj = w[j]
        z0 += x0[j] * wj
        z1 += x1[j] * wj
        z2 += x2[j] * wj
        z3 += x3[j] * wj
        z4 += x4[j] * wj
        z5 += x5[j] * wj
        z6 += x6[j] * wj
        z7 += x7[j] * wj
    return z0 + b, z1 + b, z2 + b, z3 + b, z4 + b, z5 + b, z6 + b, z7 + b


@njit(fastmath=_VECTORISE, **_COMPILE)
def _axpy(r, x, g):
    """``g += r * x``."""
    for j in range(g.shape[0]):
        g[j] += r * x[j]


@njit(fastmath=_VECTORISE, **_COMPILE)
def _axpy8(r0, r1, r2, r3, r4, r5, r6, r7, X, i0, i1, i2, i3, i4, i5, i6, i7, g):
    """``g += r0 X[i0] + ... + r7 X[i7]`` with one load and store of ``g``.

    The sum is a balanced tree added to ``g`` last: ``g`` then carries one dependent add
    per call, not a chain of FMAs (that chain made the former 4-row version 2.5x slower).
    """
    x0, x1, x2, x3, x4, x5, x6, x7 = X[i0], X[i1], X[i2], X[i3], X[i4], X[i5], X[i6], X[i7]
    for j in range(g.shape[0]):
        g[j] += ((r0 * x0[j] + r1 * x1[j]) + (r2 * x2[j] + r3 * x3[j])) + (
            (r4 * x4[j] + r5 * x5[j]) + (r6 * x6[j] + r7 * x7[j])
        )


@njit(fastmath=_VECTORISE, **_COMPILE)
def _sum(values, count):
    """``values[:count].sum()``, vectorised."""
    total = 0.0
    for k in range(count):
        total += values[k]
    return total


@njit(**_COMPILE)
def _logistic(z, y):
    """Logistic loss ``log(1 + e^z) - y z`` and slope ``sigmoid(z) - y``, overflow-free.

    With ``e = exp(-|z|)`` in (0, 1] and ``u = fl(1 + e)``, ``log(1 + e)`` is ``log(u)``
    less the first-order correction ``(u - 1 - e) / u`` for the rounding of ``u`` (exact to
    ~1e-32, and equal to ``e`` when ``u`` rounds to 1): a ``log1p`` accurate for tiny ``e``
    at the cost of one ``log`` (glibc's ``log1p`` costs three) and one shared division.
    """
    e = np.exp(-abs(z))
    u = 1.0 + e
    inv_u = 1.0 / u
    log1p_e = np.log(u) - ((u - 1.0) - e) * inv_u
    sigmoid = (1.0 if z >= 0.0 else e) * inv_u
    return log1p_e + max(z, 0.0) - y * z, sigmoid - y


@njit(fastmath={"contract"}, **_COMPILE)
def _logistic_block(z, y, s, loss, slope, count):
    """:func:`_logistic` of ``count`` rows at once, weighted, in one vectorisable loop.

    ``loss[k] = s_k (log(1 + e^z_k) - y_k z_k)``, ``slope[k] = s_k (sigmoid(z_k) - y_k)``.
    No library call (glibc's scalar ``exp`` and ``log`` keep LLVM from vectorising), no
    branch: ``e = exp(-|z|)`` is ``2**n p(r)`` (Cody-Waite reduction, degree-13 Taylor
    polynomial on ``|r| <= ln(2) / 2``, ``2**n`` built from bits as two factors so that a
    subnormal result is rounded once), and ``log(1 + e) = 2 atanh(t)``, ``t = e / (2 + e)``
    in [0, 1/3], by its series to ``t**33`` (truncation < 2e-17 relative; exact for tiny
    ``e``, no cancellation). One division serves ``1 / (1 + e)`` and ``t``. Within a few
    ulp of :func:`_logistic`. Only FMA contraction: reassociation would undo the rounding
    trick. A NaN ``z`` gives NaN loss and slope, as the library functions do.
    """
    for k in range(count):
        zk = z[k]
        x = -abs(zk)
        x = x if not x < _EXP_ARG_MIN else _EXP_ARG_MIN  # NaN passes through
        shifted = x * _LOG2_E + _ROUNDER
        n_float = shifted - _ROUNDER
        r = (x - n_float * _LN2_HI) - n_float * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        n = _bits_of(shifted) - _bits_of(_ROUNDER)  # round(x / ln 2), in -1155 .. 0
        n_half = n >> 1
        e = p * _float_of((n_half + 1023) << 52) * _float_of((n - n_half + 1023) << 52)
        u = 1.0 + e
        v = 2.0 + e
        q = 1.0 / (u * v)
        inv_u = v * q
        t = e * u * q
        t2 = t * t
        a = 1.0 / 33.0
        a = a * t2 + 1.0 / 31.0
        a = a * t2 + 1.0 / 29.0
        a = a * t2 + 1.0 / 27.0
        a = a * t2 + 1.0 / 25.0
        a = a * t2 + 1.0 / 23.0
        a = a * t2 + 1.0 / 21.0
        a = a * t2 + 1.0 / 19.0
        a = a * t2 + 1.0 / 17.0
        a = a * t2 + 1.0 / 15.0
        a = a * t2 + 1.0 / 13.0
        a = a * t2 + 1.0 / 11.0
        a = a * t2 + 1.0 / 9.0
        a = a * t2 + 1.0 / 7.0
        a = a * t2 + 1.0 / 5.0
        a = a * t2 + 1.0 / 3.0
        a = a * t2 + 1.0
        log1p_e = 2.0 * t * a
        sigmoid = (1.0 if zk >= 0.0 else e) * inv_u
        yk, sk = y[k], s[k]
        loss[k] = sk * (log1p_e + max(zk, 0.0) - yk * zk)
        slope[k] = sk * (sigmoid - yk)


@njit(**_COMPILE)
def _loss_slope(loss_code, z, y):
    """Per-row loss and ``d loss / d z`` for output ``z`` and target ``y``."""
    if loss_code == LOGISTIC:
        return _logistic(z, y)
    if loss_code == SQUARED:
        residual = z - y
        return 0.5 * residual * residual, residual
    t = 2.0 * y - 1.0
    margin = 1.0 - t * z
    if margin <= 0.0:
        return 0.0, 0.0
    if loss_code == HINGE:
        return margin, -t
    return margin * margin, -2.0 * t * margin


@njit(**_COMPILE)
def _loss_block(loss_code, z, y, s, loss, slope, count):
    """Weighted losses and slopes of ``count`` rows: ``s_k loss(z_k, y_k)`` and the like."""
    if loss_code == LOGISTIC:
        _logistic_block(z, y, s, loss, slope, count)
        return
    for k in range(count):
        row_loss, row_slope = _loss_slope(loss_code, z[k], y[k])
        loss[k] = s[k] * row_loss
        slope[k] = s[k] * row_slope


@njit(**_COMPILE)
def _prefetch_rows(X, rows, m, first, count):
    """Prefetch into L2 the selected rows ``first .. first + count - 1`` (those below ``m``).

    Consecutive rows: one prefetch per 64 bytes of their span. Selected rows: one per
    64 bytes of each row and one for its last element (a row need not start on a cache
    line). Indices are not checked: a prefetch never faults, and :func:`_row_index`
    checks each row before it is read.
    """
    d = X.shape[1]
    step = 64 // X.itemsize
    stop = min(first + count, m)
    if rows is None:
        for offset in range(first * d, stop * d, step):
            _prefetch_l2(X, offset)
        return
    for q in range(first, stop):
        row_start = rows[q] * d
        for j in range(0, d, step):
            _prefetch_l2(X, row_start + j)
        _prefetch_l2(X, row_start + d - 1)


@njit(**_COMPILE)
def _linear_block_rows(d, itemsize):
    """Rows per block of :func:`linear_loss_grad`: :data:`LINEAR_BLOCK_BYTES` of rows, in
    multiples of 8 (rows go 8 at a time), 8 to 256."""
    rows = LINEAR_BLOCK_BYTES // max(d * itemsize, 1)
    return max(8, min(256, rows - rows % 8))


@njit(**_COMPILE)
def _block_targets(y, sample_weight, rows, start, count, index, target, weight):
    """Targets and weights of the selected rows ``start .. start + count - 1``.

    All rows: views of ``y`` and ``sample_weight`` (``weight``, all ones, when there are no
    weights). Selected rows: their indices, checked, gathered into ``index`` and their
    targets and weights into ``target`` and ``weight``.
    """
    if rows is None:
        if sample_weight is None:
            return y[start : start + count], weight
        return y[start : start + count], sample_weight[start : start + count]
    n_rows = y.shape[0]
    for k in range(count):
        i = _row_index(n_rows, rows, start + k)
        index[k], target[k] = i, y[i]
        weight[k] = _weight(sample_weight, i)
    return target, weight


@njit(**_COMPILE)
def _block_row(index, rows, start, k):
    """Index in ``X`` of the block's ``k``-th row (``start + k`` when all rows are used)."""
    if rows is None:
        return start + k
    return index[k]


@njit(**_COMPILE)
def _block_rows8(index, rows, start, k):
    """Indices in ``X`` of the block's rows ``k .. k + 7``."""
    return (
        _block_row(index, rows, start, k),
        _block_row(index, rows, start, k + 1),
        _block_row(index, rows, start, k + 2),
        _block_row(index, rows, start, k + 3),
        _block_row(index, rows, start, k + 4),
        _block_row(index, rows, start, k + 5),
        _block_row(index, rows, start, k + 6),
        _block_row(index, rows, start, k + 7),
    )


@njit(**_COMPILE)
def linear_loss_grad(loss_code, X, y, sample_weight, params, grad_out, rows, accumulate):
    """Fused loss sum and gradient of a linear model, one read of ``X``.

    Parameters
    ----------
    loss_code : int
        :data:`SQUARED`, :data:`LOGISTIC`, :data:`HINGE` or :data:`SQUARED_HINGE`.
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
    y : ndarray, shape (n,), float64
    sample_weight : ndarray, shape (n,), float64, or None
    params : ndarray, shape (d + 1,), float64
    grad_out : ndarray, shape (d + 1,), float64
        Overwritten, or with ``accumulate`` added to.
    rows : ndarray of int64, or None for all rows
    accumulate : bool

    Returns
    -------
    float
        ``sum_i s_i loss_i``; ``grad_out`` holds (or gained) ``sum_i s_i d loss_i / d params``.
    """
    n_rows, d = X.shape
    w, b, gw = params[:d], params[d], grad_out[:d]
    if not accumulate:
        grad_out[:] = 0.0
    m = _n_selected(n_rows, rows)
    block = _linear_block_rows(d, X.itemsize)
    half = block // 2
    prefetch = d * X.itemsize <= LINEAR_PREFETCH_MAX_ROW_BYTES
    index = np.empty(block, dtype=np.int64)
    z, loss, slope = np.empty(block), np.empty(block), np.empty(block)
    target, weight = np.empty(block), np.ones(block)
    total = 0.0
    grad_b = 0.0
    for start in range(0, m, block):
        count = min(block, m - start)
        count8 = count - count % 8
        block_y, block_s = _block_targets(y, sample_weight, rows, start, count, index,
                                          target, weight)  # fmt: skip
        ahead = start + LINEAR_PREFETCH_BLOCKS * block
        # 1. the block's dot products, from memory (half the block's prefetches here) ...
        for k in range(0, count8, 8):
            if prefetch:
                _prefetch_rows(X, rows, m, ahead + k // 2, 4)
            i0, i1, i2, i3, i4, i5, i6, i7 = _block_rows8(index, rows, start, k)
            z0, z1, z2, z3, z4, z5, z6, z7 = _dot8(X, i0, i1, i2, i3, i4, i5, i6, i7, w, b)
            z[k], z[k + 1], z[k + 2], z[k + 3] = z0, z1, z2, z3
            z[k + 4], z[k + 5], z[k + 6], z[k + 7] = z4, z5, z6, z7
        for k in range(count8, count):
            z[k] = _dot(X[_block_row(index, rows, start, k)], w, b)
        # 2. ... their losses and slopes, vectorised ...
        _loss_block(loss_code, z, block_y, block_s, loss, slope, count)
        total += _sum(loss, count)
        grad_b += _sum(slope, count)
        # 3. ... and the gradient, the rows read again from L1 (the other prefetches here).
        for k in range(0, count8, 8):
            if prefetch:
                _prefetch_rows(X, rows, m, ahead + half + k // 2, 4)
            r0, r1, r2, r3 = slope[k], slope[k + 1], slope[k + 2], slope[k + 3]
            r4, r5, r6, r7 = slope[k + 4], slope[k + 5], slope[k + 6], slope[k + 7]
            if r0 == 0.0 and r1 == 0.0 and r2 == 0.0 and r3 == 0.0:  # hinges: rows past
                if r4 == 0.0 and r5 == 0.0 and r6 == 0.0 and r7 == 0.0:  # the margin add 0
                    continue
            i0, i1, i2, i3, i4, i5, i6, i7 = _block_rows8(index, rows, start, k)
            _axpy8(r0, r1, r2, r3, r4, r5, r6, r7, X, i0, i1, i2, i3, i4, i5, i6, i7, gw)
        for k in range(count8, count):
            if slope[k] != 0.0:
                _axpy(slope[k], X[_block_row(index, rows, start, k)], gw)
    grad_out[d] += grad_b
    return total


@njit(**_COMPILE)
def linear_decision(X, params, out):
    """``out = X @ w + b`` in one read of ``X`` (no float64 copy of a float32 ``X``).

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64
    params : ndarray, shape (d + 1,), float64
    out : ndarray, shape (n,), float64, overwritten
    """
    d = X.shape[1]
    w, b = params[:d], params[d]
    for i in range(X.shape[0]):
        out[i] = _dot(X[i], w, b)


def _load_block(X, rows, start, stop, buffer):
    """Selected rows ``start:stop`` of ``X`` as a float64 C-contiguous array (compiled only)."""
    raise NotImplementedError("compiled-only helper; see its numba overload")


@overload(_load_block)
def _load_block_impl(X, rows, start, stop, buffer):
    """Float64 ``X`` without ``rows``: a view. Otherwise: gather and widen into ``buffer``."""
    if X.dtype == types.float64 and isinstance(rows, types.NoneType):
        return lambda X, rows, start, stop, buffer: X[start:stop]

    def gather(X, rows, start, stop, buffer):
        block = buffer[: stop - start]
        for k in range(start, stop):
            x, out = X[_row_index(X.shape[0], rows, k)], block[k - start]
            for j in range(out.shape[0]):
                out[j] = x[j]
        return block

    return gather


@njit(**_COMPILE)
def _softmax_row(z, label, s):
    """One row's weighted cross-entropy; turns its logits into residuals in place.

    Parameters
    ----------
    z : ndarray, shape (C,), float64
        The row's logits ``W x + b`` on entry; ``s * (softmax(z) - onehot(label))`` on
        return (stable: the row max is subtracted before ``exp``).
    label : int
        Class id, checked to lie in ``0 .. C-1``.
    s : float
        The row's weight.

    Returns
    -------
    float
        ``s * (-log softmax(z)[label])``.
    """
    C = z.shape[0]
    if label < 0 or label >= C:
        raise ValueError("softmax class ids must lie in 0 .. C-1")
    z_max = -np.inf
    for c in range(C):
        z_max = max(z_max, z[c])
    z_label = z[label]
    norm = 0.0
    for c in range(C):
        z[c] = np.exp(z[c] - z_max)
        norm += z[c]
    scale = s / norm
    for c in range(C):
        z[c] *= scale
    z[label] -= s
    return s * (np.log(norm) + z_max - z_label)


@njit(**_COMPILE)
def _softmax_block(Z, b, y, sample_weight, n_rows, rows, start, grad_b):
    """Turn logits into weighted residuals in place; return the block's loss sum.

    Parameters
    ----------
    Z : ndarray, shape (B, C), float64
        ``Xb @ W.T`` on entry; ``s_i * (softmax(z_i + b) - onehot(y_i))`` on return.
    b : ndarray, shape (C,), float64
    y, sample_weight, n_rows, rows : as in :func:`softmax_loss_grad`
    start : int
        Position of the block's first row among the selected rows.
    grad_b : ndarray, shape (C,), float64
        The residuals' column sums are added here (the bias gradient).
    """
    C = Z.shape[1]
    total = 0.0
    for k in range(Z.shape[0]):
        i = _row_index(n_rows, rows, start + k)
        z = Z[k]
        for c in range(C):
            z[c] += b[c]
        total += _softmax_row(z, y[i], _weight(sample_weight, i))
        for c in range(C):
            grad_b[c] += z[c]
    return total


@njit(**_COMPILE)
def softmax_loss_grad(X, y, sample_weight, params, grad_out, rows, accumulate):
    """Fused cross-entropy sum and gradient of a softmax model, one read of ``X``.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64, C-contiguous
    y : ndarray, shape (n,), int64, class ids ``0 .. C-1``
    sample_weight : ndarray, shape (n,), float64, or None
    params : ndarray, shape (C * d + C,), float64, ``[W (C, d) row-major, b (C,)]``
    grad_out : ndarray, shape (C * d + C,), float64
        Overwritten, or with ``accumulate`` added to (same layout).
    rows : ndarray of int64, or None for all rows
    accumulate : bool

    Returns
    -------
    float
        ``sum_i s_i * (-log softmax(z_i)[y_i])``.
    """
    n_rows, d = X.shape
    C = params.shape[0] // (d + 1)
    W, b = params[: C * d].reshape((C, d)), params[C * d :]
    G, grad_b = grad_out[: C * d].reshape((C, d)), grad_out[C * d :]
    if not accumulate:
        grad_out[:] = 0.0
    Z = np.empty((SOFTMAX_BLOCK_ROWS, C))
    G_block = np.empty((C, d))
    buffer = np.empty((SOFTMAX_BLOCK_ROWS, d))
    m = _n_selected(n_rows, rows)
    total = 0.0
    for start in range(0, m, SOFTMAX_BLOCK_ROWS):
        stop = min(start + SOFTMAX_BLOCK_ROWS, m)
        X_block = _load_block(X, rows, start, stop, buffer)
        Z_block = Z[: stop - start]
        np.dot(X_block, W.T, Z_block)
        total += _softmax_block(Z_block, b, y, sample_weight, n_rows, rows, start, grad_b)
        np.dot(Z_block.T, X_block, G_block)
        G += G_block
    return total


@njit(**_COMPILE)
def softmax_decision(X, params, out):
    """``out = X @ W.T + b`` in row blocks (a float32 ``X`` is widened per block).

    Parameters
    ----------
    X : ndarray, shape (n, d), float32 or float64
    params : ndarray, shape (C * d + C,), float64
    out : ndarray, shape (n, C), float64, overwritten
    """
    n_rows, d = X.shape
    C = params.shape[0] // (d + 1)
    W, b = params[: C * d].reshape((C, d)), params[C * d :]
    buffer = np.empty((SOFTMAX_BLOCK_ROWS, d))
    for start in range(0, n_rows, SOFTMAX_BLOCK_ROWS):
        stop = min(start + SOFTMAX_BLOCK_ROWS, n_rows)
        out_block = out[start:stop]
        np.dot(_load_block(X, None, start, stop, buffer), W.T, out_block)
        out_block += b
