// Softmax cross-entropy per row and its gradient with respect to the logits: the fused
// elementwise step between the two cuBLAS GEMMs of the softmax model and after the MLP's
// output layer (kernels/gpu.py). Loaded with cupy.RawModule (NVRTC: no #include).
//
// softmax_xent_rows_<T>: one thread per row i of the (n, C) logits Z (float or double):
//   v_c = Z[i, c] (+ bias_c), v_max = max_c v_c, norm = sum_c exp(v_c - v_max),
//   loss[i] = s_i * (log(norm) + v_max - v_y)          (= -s_i log softmax(v)_y, stable)
//   dZ[i, c] = s_i * (exp(v_c - v_max) / norm - [c == y_i])
// all in float64, dZ rounded to T once. dZ may be Z itself: each thread reads its row
// before it overwrites it, element by element. A label outside 0..C-1 sets *bad_label
// and gives that row a NaN loss (the caller raises ValueError).
//
// Memory traffic per row: the C logits read from DRAM once (the second and third reads
// hit L1/L2: a thread re-reads only its own row), y (8 bytes) and s (8 bytes, if given)
// read once, the C residuals written once, one float64 loss written. Compute: 2 C exp,
// one log. At C = 10 and 4e6 rows this is ~0.5 GB of traffic against the GEMMs' reads
// of X; the kernel is not the bottleneck.

template <typename T>
__device__ void softmax_xent_rows(const T* Z, T* dZ, const double* __restrict__ bias,
                                  const long long* __restrict__ y,
                                  const double* __restrict__ weight, double* __restrict__ loss,
                                  int* bad_label, long long n, int C, int has_bias,
                                  int has_weight) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T* z = Z + i * C;
        T* dz = dZ + i * C;
        const long long label = y[i];
        if (label < 0 || label >= C) {
            *bad_label = 1;
            loss[i] = __longlong_as_double(0x7ff8000000000000LL);  // NaN
            continue;
        }
        double v_max = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
        for (int c = 0; c < C; ++c) {
            const double v = (double)z[c] + (has_bias ? bias[c] : 0.0);
            v_max = v > v_max ? v : v_max;  // a NaN never wins, but makes norm NaN below
        }
        double norm = 0.0;
        for (int c = 0; c < C; ++c) {
            norm += exp((double)z[c] + (has_bias ? bias[c] : 0.0) - v_max);
        }
        const double v_label = (double)z[label] + (has_bias ? bias[label] : 0.0);
        const double s = has_weight ? weight[i] : 1.0;
        loss[i] = s * (log(norm) + v_max - v_label);
        const double scale = s / norm;
        for (int c = 0; c < C; ++c) {
            double p = exp((double)z[c] + (has_bias ? bias[c] : 0.0) - v_max) * scale;
            if (c == label) {
                p -= s;
            }
            dz[c] = (T)p;  // last read of z[c] was just above: dZ may alias Z
        }
    }
}

#define SOFTMAX_XENT_ROWS(NAME, T)                                                          \
    extern "C" __global__ void NAME(const T* Z, T* dZ, const double* bias,                 \
                                    const long long* y, const double* weight,              \
                                    double* loss, int* bad_label, long long n, int C,      \
                                    int has_bias, int has_weight) {                        \
        softmax_xent_rows<T>(Z, dZ, bias, y, weight, loss, bad_label, n, C, has_bias,     \
                             has_weight);                                                  \
    }

SOFTMAX_XENT_ROWS(softmax_xent_rows_f32, float)
SOFTMAX_XENT_ROWS(softmax_xent_rows_f64, double)
