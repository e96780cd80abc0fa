"""mpigd: MPI distributed gradient descent for HPC scaling research.

Layers (see DESIGN.md): ``mpigd.data`` reads HDF5 row ranges, ``kernels`` computes
loss and gradient, ``mpigd.models`` lays out the flat parameter vector,
``mpigd.strategies`` combines gradients across ranks, ``mpigd.optim`` updates the
parameters and ``mpigd.train`` runs the loop and writes the run record.
"""

__version__ = "0.1.0"
