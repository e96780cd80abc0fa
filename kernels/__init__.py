"""Compute kernels: loss and gradient of the models, one backend module per array library.

Kernels are pure functions of arrays: no MPI, no files, no printing. A backend is chosen
once at start-up with :func:`get_backend` (``--backend``); the models then call the
module's functions and never branch on the backend.

Every backend module exposes the same names:

=============================================================  ==============================
``name``, ``xp``                                               backend name; its array
                                                               module
``LINEAR_LOSSES``                                              ``squared``, ``logistic``,
                                                               ``hinge``, ``squared_hinge``
``linear_loss_grad(loss, X, y, s, params, g, rows=None,``      ``sum_i s_i loss_i``; ``g`` :=
``accumulate=False)``                                          its gradient w.r.t. ``[w, b]``
``softmax_loss_grad(X, y, s, params, g, rows=None,``           same for softmax cross-
``accumulate=False)``                                          entropy, ``params = [W (C, d),
                                                               b (C,)]``
``linear_decision(X, params)``                                 ``z = X @ w + b``, shape (n,)
``softmax_decision(X, params)``                                ``Z = X @ W.T + b``, (n, C)
``dense_forward``, ``dense_backward``, ``relu_forward``,          MLP layers and output losses
``relu_backward``, ``softmax_xent``, ``half_squared_error``      (:mod:`kernels.dense`)
``to_device(a)``, ``to_host(a, out=None)``                     move an array to the
                                                               backend's memory and back
                                                               (numpy: as is)
=============================================================  ==============================

Conventions: ``X`` is (n, d) float32 or float64, C-contiguous, or a canonical CSR matrix
(``scipy.sparse``: sorted column indices, no duplicates, int32 or int64 indices; checked
by :func:`kernels.reference.check_csr`) wherever a dense one is accepted, the MLP's first
layer included; everything else, and all arithmetic, is float64. ``y`` is float64 for the
linear losses (0/1 labels for the classifiers; the hinges use ``t = 2y - 1``) and int64
class ids for softmax. ``s`` are per-row weights or None. ``g`` is overwritten, or with
``accumulate=True`` added to: then a CSR call touches only the entries of its rows'
columns and the intercepts, so a caller keeping ``g`` zero elsewhere pays O(nonzeros),
not O(d). ``rows`` (int64, repeats allowed) restricts the call to those rows without
copying ``X`` (the numpy reference gathers them). The sums are neither averaged nor
regularised: the caller divides by the global row count and adds the L2 term. Per-row
losses, with ``z`` the row's output: squared ``(z - y)^2 / 2``; logistic
``log(1 + e^z) - y z``; hinge ``max(0, 1 - t z)``; squared hinge ``max(0, 1 - t z)^2``;
softmax ``-log softmax(z)_y``.

Backends:

=========  =========================  ================================================
name       module                     what it is
=========  =========================  ================================================
``numba``  :mod:`kernels.cpu`         fused Numba kernels, one read of ``X`` per call
                                      (the default): :mod:`kernels.fused` for dense
                                      rows, :mod:`kernels.sparse` for CSR rows (one
                                      pass per row: dot product, then scatter-add)
``numpy``  :mod:`kernels.reference`   plain numpy, the specification the tests use;
                                      CSR through scipy.sparse's products
``cupy``   :mod:`kernels.gpu`         one GPU per rank: a single-pass CUDA kernel for
                                      the linear models, cuBLAS + fused kernels for
                                      softmax and the MLP (needs CuPy and a GPU); CSR
                                      through ``cupyx.scipy.sparse`` (cuSPARSE)
=========  =========================  ================================================

The MLP's first layer on CSR input (:mod:`kernels.dense`, and cuSPARSE on the GPU) is a
sparse-times-dense product; ``X`` is never densified.

With ``cupy`` the rows live on the GPU (the trainer moves them with ``to_device``) while
``params`` and ``grad_out`` stay host numpy float64; decision values and predictions
come back as host arrays. :func:`gpu_unavailable_reason` says why ``cupy`` cannot be used
here, or None.
"""

import importlib

#: Module of each backend, by the name ``--backend`` takes; the one place these names live.
_MODULES = {"numba": "kernels.cpu", "numpy": "kernels.reference", "cupy": "kernels.gpu"}
BACKENDS = tuple(_MODULES)
#: The backend of a run that names none: the compiled CPU kernels.
DEFAULT_BACKEND = "numba"


def gpu_unavailable_reason() -> str | None:
    """Why the ``cupy`` backend cannot run in this process, or None when it can."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or CuPy failing to load CUDA
        return f"CuPy is not installed or cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError: no driver, no device
        return f"no CUDA device is available ({exc})"
    if count < 1:
        return "no CUDA device is available (CUDA reports 0 devices)"
    return None


def get_backend(name):
    """Return the backend module called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS`: ``"numba"``, ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        For ``"cupy"`` when CuPy is missing or no GPU is usable (the message says which),
        and for unknown names.
    """
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cupy":
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise ValueError(
                f"{reason}; use --backend numba, or on a GPU node install "
                "mpigd[gpu-cuda12] or mpigd[gpu-cuda13] (the node's CUDA)"
            )
    return importlib.import_module(_MODULES[name])
