"""This rank's GPU and how MPI reaches it: device placement and CUDA-aware MPI detection.

It learns where a rank sits on its node through the communication layer
(:mod:`mpigd.comm`) and never imports MPI itself. Only device backends (``--backend
cupy``) are placed; for the CPU backends :func:`place` does nothing and returns None.

Placement, one GPU per rank (:func:`choose_device`):

- one visible device (Slurm's ``--gpus-per-task=1`` sets ``CUDA_VISIBLE_DEVICES`` to
  this task's GPU, or a node with one GPU): device 0;
- several visible devices: device ``local_rank mod count``, with ``local_rank`` this
  rank's index among the ranks of its node (``Split_type(COMM_TYPE_SHARED)``). More
  ranks than GPUs share them round-robin.

Slurm's variables are not consulted: ``SLURM_GPUS_PER_TASK`` is also set when every
task sees every GPU of the node (``mpirun`` inside an ``sbatch`` allocation, or
``srun --gpu-bind=none``), and choosing device 0 there put all ranks on one GPU. When
Slurm did bind several GPUs to each task, the node-local rank still picks one of the
task's own GPUs, so the rule is right in both cases.

Communication: the flat parameter and gradient vectors are host arrays (see
:mod:`kernels.gpu`), so MPI always reads host memory, whatever the library supports.
:func:`cuda_aware` still records, conservatively, whether the MPI library could take
device buffers: True only when the library itself says so.
"""

from __future__ import annotations

import ctypes
import os

from mpigd import comm as mpi
from mpigd.errors import ConfigError

#: How gradients reach MPI with the cupy backend (recorded in run.json).
COMMUNICATION = "host (gradients copied to pinned host memory before MPI)"


def choose_device(local_rank: int, n_devices: int, environ=None) -> int:
    """Index, among the visible devices, of the GPU this rank uses (see module docstring):
    0 with one visible device, else ``local_rank mod n_devices``, whatever Slurm's
    variables say. ``environ`` (default ``os.environ``) only names
    ``CUDA_VISIBLE_DEVICES`` in the error.

    Raises
    ------
    ValueError
        When no device is visible.
    """
    environ = os.environ if environ is None else environ
    if n_devices < 1:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible!r})")
    return local_rank % n_devices


def cuda_aware(environ=None) -> tuple[bool, str]:
    """Whether this process's MPI library accepts CUDA device buffers, and how we know.

    Conservative: True only when the library answers so at run time
    (``MPIX_GPU_query_support`` of MPICH 4+, ``MPIX_Query_cuda_support`` of Open MPI and
    MPICH) or, for Cray MPICH, ``MPICH_GPU_SUPPORT_ENABLED=1``; False when GPU support is
    switched off (``MPIR_CVAR_ENABLE_GPU=0``) or nothing can tell.
    """
    environ = os.environ if environ is None else environ
    version = mpi.mpi_library_version(full=True)
    if environ.get("MPIR_CVAR_ENABLE_GPU") == "0":
        return False, "MPIR_CVAR_ENABLE_GPU=0"
    if "CRAY MPICH" in version.upper():
        enabled = environ.get("MPICH_GPU_SUPPORT_ENABLED") == "1"
        return enabled, f"MPICH_GPU_SUPPORT_ENABLED={environ.get('MPICH_GPU_SUPPORT_ENABLED')}"
    library = _loaded_mpi_library()
    if library is None:
        return False, "MPI library not found among the loaded objects"
    try:
        query = library.MPIX_GPU_query_support  # MPICH >= 4.0
    except AttributeError:
        query = None
    if query is not None:
        supported = ctypes.c_int(0)
        if query(ctypes.c_int(0), ctypes.byref(supported)) == 0:  # 0: MPIX_GPU_SUPPORT_CUDA
            return bool(supported.value), "MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA)"
    try:
        query = library.MPIX_Query_cuda_support  # Open MPI >= 2.0, MPICH >= 4.1
    except AttributeError:
        return False, "the MPI library has no CUDA support query"
    query.restype = ctypes.c_int
    return bool(query()), "MPIX_Query_cuda_support()"


def _loaded_mpi_library():
    """The MPI shared library mpi4py loaded (found in /proc/self/maps), as a ctypes handle."""
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split()[-1] for line in maps if "/libmpi" in line]
    except OSError:
        return None
    for path in dict.fromkeys(paths):  # libmpi.so.*, libmpi_cray.so.*, ...
        name = os.path.basename(path)
        if name.startswith(("libmpi.so", "libmpi_cray.so", "libmpi_nvidia.so")):
            try:
                return ctypes.CDLL(path)  # already loaded: the same handle, no new copy
            except OSError:
                continue
    return None


def place(comm, backend) -> dict | None:
    """Collective: put this rank on its GPU; what run.json records (None for CPU backends).

    Every rank calls this with the same backend. Returns this rank's view: its device
    index and name, ``cuda_aware_mpi`` (True only if every rank's library says so),
    ``communication`` (:data:`COMMUNICATION`) and ``ranks``, every rank's device.
    """
    if not hasattr(backend, "use_device"):
        return None
    local_rank, local_size = mpi.node_local_rank(comm)

    def use() -> dict:
        try:
            index = choose_device(local_rank, backend.device_count())
        except ValueError as exc:  # no device: the job's set-up, not a bug
            raise ConfigError(f"--backend {backend.name}: {exc}") from exc
        return backend.use_device(index)

    mine = mpi.collectively(comm, use)
    aware, how = cuda_aware()
    where = {"host": mpi.host_name(), "local_rank": local_rank,
             "device": mine["device"], "pci_bus_id": mine["pci_bus_id"]}  # fmt: skip
    ranks = mpi.gather_everywhere(comm, where)
    everywhere = all(mpi.gather_everywhere(comm, aware))
    return {
        **mine,
        "cuda_aware_mpi": everywhere,
        "cuda_aware_detection": how,
        "communication": COMMUNICATION,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "ranks_on_node": local_size,
        "ranks": ranks,
    }
