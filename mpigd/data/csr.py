"""The sparse (CSR) layout of ``X`` on disk: anndata's ``csr_matrix`` encoding.

A sparse dataset file stores ``X`` as an HDF5 *group* instead of a 2-D dataset, holding

==========  ==============================  ===========================================
name        dtype, shape                    meaning
==========  ==============================  ===========================================
``data``    float32 or float64, ``(nnz,)``  the nonzero values, row by row
``indices`` int32 or int64, ``(nnz,)``      their column ids, strictly increasing
                                            within a row, in ``0..d-1``
``indptr``  int64, ``(n + 1,)``             row ``i``'s nonzeros are positions
                                            ``indptr[i] .. indptr[i+1]-1``;
                                            ``indptr[0] = 0``, ``indptr[n] = nnz``
==========  ==============================  ===========================================

with the group attributes ``encoding-type = "csr_matrix"``, ``encoding-version =
"0.1.0"`` and ``shape = (n, d)``, exactly as anndata writes a ``scipy.sparse`` matrix
(``anndata.io.read_elem`` opens it). ``y`` and the root attributes are those of a
dense file. In memory such rows are a canonical ``scipy.sparse.csr_matrix``.
"""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp

ENCODING_TYPE = "csr_matrix"
ENCODING_VERSION = "0.1.0"


def write_csr(parent: h5py.Group, name: str, matrix: sp.csr_matrix) -> h5py.Group:
    """Write ``matrix`` under ``parent[name]`` in the layout above (indptr as int64).

    ``matrix`` is written as given: it must already be canonical (sorted indices, no
    duplicates) for the file to be valid.
    """
    group = parent.create_group(name)
    group.attrs["encoding-type"] = ENCODING_TYPE
    group.attrs["encoding-version"] = ENCODING_VERSION
    group.attrs["shape"] = np.asarray(matrix.shape, dtype=np.int64)
    group.create_dataset("data", data=matrix.data)
    group.create_dataset("indices", data=matrix.indices)
    group.create_dataset("indptr", data=np.asarray(matrix.indptr, dtype=np.int64))
    return group
