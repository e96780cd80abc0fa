"""mpigd: MPI distributed gradient descent for HPC scaling research.

Layers (docs/architecture.md): ``mpigd.data`` reads HDF5 row ranges, ``kernels``
computes loss and gradient, ``mpigd.models`` lays out the flat parameter vector,
``mpigd.strategies`` combines gradients across ranks, ``mpigd.optim`` updates the
parameters, ``mpigd.run`` builds a run by composition and runs its loop, and
``mpigd.record`` writes and reads the run directory. ``mpigd.comm`` is the
communication layer.
"""

__version__ = "0.1.0"
