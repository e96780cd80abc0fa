"""Compiled optimiser updates on flat float64 vectors (Numba), one pass over memory.

An Adam step touches five vectors of the model's size (parameters, gradient, two
moments, the step). Written as numpy expressions it streams them several times and
allocates temporaries; for the 670k-parameter MLP of the benchmark that was 6 ms of a
27 ms step. This loop reads and writes each element once.
"""

import math

from numba import njit


@njit(cache=True, nogil=True, fastmath={"contract"})
def adam_update(params, grad, m, v, beta1, beta2, lr_corrected, v_correction, eps):
    """In place: m, v ← moments of ``grad``; params ← params − lr m / (sqrt(v/c) + eps).

    ``lr_corrected`` is lr / (1 − β1^t) and ``v_correction`` is sqrt(1 − β2^t), the bias
    corrections of step t folded into two scalars.
    """
    for i in range(params.shape[0]):
        g = grad[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        params[i] -= lr_corrected * m[i] / (math.sqrt(v[i]) / v_correction + eps)
