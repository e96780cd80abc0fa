"""Compute kernels: loss and gradient of the models, one backend module per array library.

Kernels are pure functions of arrays: no MPI, no files, no printing. A backend is chosen
once at start-up with :func:`get_backend` (``--backend``); the models then call the
module's functions and never branch on the backend.

Every backend module exposes the same names:

=========================================================  ==================================
``name``, ``xp``                                           backend name; its array module
``LINEAR_LOSSES``                                          ``squared``, ``logistic``,
                                                           ``hinge``, ``squared_hinge``
``linear_loss_grad(loss, X, y, s, params, g, rows=None)``  ``sum_i s_i loss_i``; ``g`` :=
                                                           its gradient w.r.t. ``[w, b]``
``softmax_loss_grad(X, y, s, params, g, rows=None)``       same for softmax cross-entropy,
                                                           ``params = [W (C, d), b (C,)]``
``linear_decision(X, params)``                             ``z = X @ w + b``, shape (n,)
``softmax_decision(X, params)``                            ``Z = X @ W.T + b``, shape (n, C)
``dense_forward``, ``dense_backward``, ``relu_forward``,      MLP layers and output losses
``relu_backward``, ``softmax_xent``, ``half_squared_error``  (:mod:`kernels.dense`)
=========================================================  ==================================

Conventions: ``X`` is (n, d) float32 or float64, C-contiguous; everything else, and all
arithmetic, is float64. ``y`` is float64 for the linear losses (0/1 labels for the
classifiers; the hinges use ``t = 2y - 1``) and int64 class ids for softmax. ``s`` are
per-row weights or None. ``g`` is overwritten. ``rows`` (int64, repeats allowed) restricts
the call to those rows without copying ``X``. The sums are neither averaged nor
regularised: the caller divides by the global row count and adds the L2 term. Per-row
losses, with ``z`` the row's output: squared ``(z - y)^2 / 2``; logistic
``log(1 + e^z) - y z``; hinge ``max(0, 1 - t z)``; squared hinge ``max(0, 1 - t z)^2``;
softmax ``-log softmax(z)_y``.

Backends:

=============  =========================  ============================================
name           module                     what it is
=============  =========================  ============================================
``numpy``      :mod:`kernels.cpu`         fused Numba kernels, one read of ``X`` per call
``reference``  :mod:`kernels.reference`   plain numpy, the specification the tests use
``cupy``       (not yet)                  a later issue adds it behind this interface
=============  =========================  ============================================
"""

BACKENDS = ("numpy", "reference", "cupy")


def get_backend(name):
    """Return the backend module called ``name``.

    Parameters
    ----------
    name : str
        ``"numpy"`` or ``"reference"``.

    Raises
    ------
    ValueError
        For ``"cupy"`` (not available yet) and for unknown names.
    """
    if name == "numpy":
        from kernels import cpu

        return cpu
    if name == "reference":
        from kernels import reference

        return reference
    if name == "cupy":
        raise ValueError(
            "the CuPy backend is not available yet; use --backend numpy (or reference)"
        )
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
