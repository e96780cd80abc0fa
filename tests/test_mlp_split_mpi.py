"""The MLP split across ranks (tensor parallelism) equals the unsplit network."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from mpi4py import MPI
from test_mlp_mpi import MLP, one_rank_params
from test_train_mpi import run, shared_dataset

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

WORLD = MPI.COMM_WORLD


@pytest.mark.parametrize("parts", [2, 4])
@pytest.mark.parametrize("hidden", [[9, 6], [8]])
def test_split_mlp_equals_the_unsplit_network(mpi_tmp_path, parts, hidden):
    """M = 2 or 4 (with 4 ranks and M = 2: a 2 x 2 grid of data and model groups)."""
    if WORLD.size % parts:
        pytest.skip(f"needs a multiple of {parts} ranks")
    data, *_ = shared_dataset(mpi_tmp_path, "softmax", n_rows=301, d=5)
    settings = {**MLP, "hidden": hidden, "l2": 1e-2}
    reference = one_rank_params(data, mpi_tmp_path / "one", **settings)
    params = run(data, mpi_tmp_path / "split", model_parallel=parts, **settings)
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-13)


@pytest.mark.mpi(min_size=2)
def test_a_split_run_resumes_unsplit_and_its_model_evaluates_unsplit(mpi_tmp_path):
    data, *_ = shared_dataset(mpi_tmp_path, "softmax", n_rows=301, d=5)
    settings = {**MLP, "optimizer": "adam", "lr": 0.01, "epochs": 4}
    reference = one_rank_params(data, mpi_tmp_path / "one", **settings)
    run(data, mpi_tmp_path / "split", model_parallel=2 if WORLD.size % 2 == 0 else 1,
        **{**settings, "epochs": 2})  # fmt: skip
    resumed = run(data, mpi_tmp_path / "split", resume=True, **settings)
    np.testing.assert_allclose(resumed, reference, rtol=1e-10, atol=1e-13)
    with h5py.File(mpi_tmp_path / "split" / "model.h5", "r") as handle:
        assert handle["params"].shape == reference.shape
