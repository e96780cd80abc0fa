// Loss and gradient of a linear model in one pass over X: the CUDA side of kernels/gpu.py.
//
// Loaded by kernels/gpu.py with cupy.RawModule (NVRTC: no #include, no host headers).
// Every kernel here computes in float64; X may be float32 or float64 (widened per element
// in registers). Loss codes are those of kernels/fused.py: 0 squared, 1 logistic,
// 2 hinge, 3 squared hinge (t = 2y - 1 for the hinges).
//
// linear_grad_<T>_k<K>: one warp per row, grid-stride over the selected rows.
//   Lane l owns the columns j = l + 32 k. For k < K the lane keeps w_j and its running
//   gradient sum in registers for the whole kernel, and the row's x_j in registers
//   between the dot product and the update; columns j >= 32 K (only when d > 32 K) are
//   read a second time from L1 and summed in the warp's own row of shared memory.
//   Per row: the lanes' partial dot products are summed by a butterfly of shuffles, every
//   lane computes the loss and r = s * dloss/dz, and adds r * x_j to its columns.
//   At the end each block writes ONE row of (d + 2) float64 partial sums
//   [gradient of w (d) | gradient of b | loss] to `partials`, summed over warps in warp
//   order; the caller sums the blocks' rows (cupy.sum over axis 0). No atomics anywhere,
//   so the result is bitwise reproducible for a given grid.
//
//   Memory traffic per call, m selected rows, d features of sizeof(T) bytes:
//     X          m * d * sizeof(T)  read once from DRAM (the only term of order m * d:
//                                   consecutive lanes read consecutive elements of a
//                                   row, so every load is coalesced)
//     y, s, rows 8 bytes each per row (s and rows only when given)
//     w, b       (d + 1) * 8 per warp, into registers once (cached in L2)
//     partials   grid * (d + 2) * 8 written once, read once by the sum (~0.1% of X
//                at d = 100, m = 4e6)
//   nothing else per row: the kernel is bound by the read of X.
//
// linear_rows: one thread per row, for the large-d path (kernels/gpu.py, d beyond
//   the shared-memory limit) where cuBLAS computes z = X @ w + b and X.T @ r. Reads z
//   and y (and s) once, writes r over z and the weighted loss: 24-32 bytes per row.

#define WARP 32
#define FULL_MASK 0xffffffffu

#define LOSS_SQUARED 0
#define LOSS_LOGISTIC 1
#define LOSS_HINGE 2
#define LOSS_SQUARED_HINGE 3

// Sum over the 32 lanes of a warp; every lane gets the total (fixed order: reproducible).
__device__ __forceinline__ double warp_sum(double value) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        value += __shfl_xor_sync(FULL_MASK, value, offset);
    }
    return value;
}

// Per-row loss and d loss / d z, as kernels/fused.py:_loss_slope (the same formulas).
__device__ __forceinline__ void loss_slope(int code, double z, double y, double* loss,
                                           double* slope) {
    if (code == LOSS_LOGISTIC) {
        // log(1 + e^z) - y z and sigmoid(z) - y without overflow: e = exp(-|z|) in (0, 1].
        const double e = exp(-fabs(z));
        const double inv_u = 1.0 / (1.0 + e);
        *loss = log1p(e) + (z > 0.0 ? z : 0.0) - y * z;
        *slope = (z >= 0.0 ? 1.0 : e) * inv_u - y;
    } else if (code == LOSS_SQUARED) {
        const double residual = z - y;
        *loss = 0.5 * residual * residual;
        *slope = residual;
    } else {
        const double t = 2.0 * y - 1.0;
        const double margin = 1.0 - t * z;
        if (margin <= 0.0) {  // past the margin (a NaN margin falls through: NaN loss)
            *loss = 0.0;
            *slope = 0.0;
        } else if (code == LOSS_HINGE) {
            *loss = margin;
            *slope = -t;
        } else {
            *loss = margin * margin;
            *slope = -2.0 * t * margin;
        }
    }
}

// See the file comment. blockDim.x is a multiple of 32; dynamic shared memory holds
// (blockDim.x / 32) * (d + 2) doubles. `weight` and `rows` are read only when
// has_weight / has_rows (the caller passes some valid pointer otherwise).
template <typename T, int K>
__device__ void linear_grad(const T* __restrict__ X, const double* __restrict__ y,
                            const double* __restrict__ weight,
                            const long long* __restrict__ rows,
                            const double* __restrict__ params, double* __restrict__ partials,
                            long long n_selected, int d, int loss_code, int has_weight,
                            int has_rows) {
    extern __shared__ double warp_sums[];  // [warps][d + 2]
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int warps = blockDim.x / WARP;
    const int width = d + 2;
    double* mine = warp_sums + warp * width;
    for (int j = lane; j < width; j += WARP) {
        mine[j] = 0.0;
    }
    __syncwarp();  // lane 0 writes mine[d], mine[d + 1] at the end, zeroed by other lanes

    double w_reg[K];
    double g_reg[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int j = lane + WARP * k;
        w_reg[k] = j < d ? params[j] : 0.0;
        g_reg[k] = 0.0;
    }
    const double b = params[d];
    double loss_sum = 0.0;   // the same on every lane; lane 0's is kept
    double slope_sum = 0.0;  // the gradient of b

    const long long stride = (long long)gridDim.x * warps;
    for (long long k_row = (long long)blockIdx.x * warps + warp; k_row < n_selected;
         k_row += stride) {
        const long long i = has_rows ? rows[k_row] : k_row;
        const T* x = X + i * (long long)d;
        T x_reg[K];
        double z = 0.0;
#pragma unroll
        for (int k = 0; k < K; ++k) {
            const int j = lane + WARP * k;
            x_reg[k] = j < d ? x[j] : T(0);
            z += (double)x_reg[k] * w_reg[k];
        }
        for (int j = lane + WARP * K; j < d; j += WARP) {
            z += (double)x[j] * params[j];
        }
        z = warp_sum(z) + b;
        double loss, slope;
        loss_slope(loss_code, z, y[i], &loss, &slope);
        const double s = has_weight ? weight[i] : 1.0;
        const double r = s * slope;
        loss_sum += s * loss;
        slope_sum += r;
        if (r != 0.0) {  // the same on every lane; hinge rows past the margin add nothing
#pragma unroll
            for (int k = 0; k < K; ++k) {
                g_reg[k] += r * (double)x_reg[k];  // x_reg = 0 beyond d: adds nothing
            }
            for (int j = lane + WARP * K; j < d; j += WARP) {
                mine[j] += r * (double)x[j];  // only this lane touches mine[j]
            }
        }
    }

#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int j = lane + WARP * k;
        if (j < d) {
            mine[j] = g_reg[k];
        }
    }
    if (lane == 0) {
        mine[d] = slope_sum;
        mine[d + 1] = loss_sum;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        double total = 0.0;
        for (int w = 0; w < warps; ++w) {
            total += warp_sums[w * width + j];
        }
        partials[(long long)blockIdx.x * width + j] = total;
    }
}

// MIN_BLOCKS caps the registers (__launch_bounds__) so that MIN_BLOCKS blocks of 256
// threads fit on an SM: for K = 4, 64 registers (32 warps per SM; ptxas spills 8-16 bytes)
// instead of the 80 it would take (24 warps): more loads in flight for the read of X.
#define LINEAR_GRAD(NAME, T, K, MIN_BLOCKS)                                                \
    extern "C" __global__ void __launch_bounds__(256, MIN_BLOCKS)                         \
        NAME(const T* X, const double* y, const double* weight, const long long* rows,    \
             const double* params, double* partials, long long n_selected, int d,         \
             int loss_code, int has_weight, int has_rows) {                               \
        linear_grad<T, K>(X, y, weight, rows, params, partials, n_selected, d, loss_code,  \
                          has_weight, has_rows);                                           \
    }

// K = 4 serves d <= 128 from registers, K = 8 d <= 256; wider rows use shared memory too.
LINEAR_GRAD(linear_grad_f32_k4, float, 4, 4)
LINEAR_GRAD(linear_grad_f32_k8, float, 8, 2)
LINEAR_GRAD(linear_grad_f64_k4, double, 4, 4)
LINEAR_GRAD(linear_grad_f64_k8, double, 8, 2)

// z (n) holds x_i . w + b on entry and s_i * dloss_i/dz on return; loss (n) gets
// s_i * loss_i. y, weight are indexed by rows[k] when has_rows (z and loss by k).
extern "C" __global__ void linear_rows(double* z, double* loss, const double* y,
                                       const double* weight, const long long* rows,
                                       long long n, int loss_code, int has_weight,
                                       int has_rows) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        const long long i = has_rows ? rows[k] : k;
        double row_loss, slope;
        loss_slope(loss_code, z[k], y[i], &row_loss, &slope);
        const double s = has_weight ? weight[i] : 1.0;
        z[k] = s * slope;
        loss[k] = s * row_loss;
    }
}
