"""Data-parallel MLP training on P ranks equals one rank, under mpirun with 1..4 ranks."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_train_mpi import run, shared_dataset, trained_params

from mpigd.comm import RankInfo
from mpigd.config import TrainConfig
from mpigd.run import train

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

WORLD = MPI.COMM_WORLD
MLP = {"model": "mlp", "hidden": [9, 6], "optimizer": "gd", "lr": 0.3, "epochs": 6, "l2": 1e-3}


def one_rank_params(data, out, **options) -> np.ndarray:
    """The same training on rank 0 alone (COMM_SELF), as the reference."""
    if WORLD.rank == 0:
        config = TrainConfig(data=data, out=str(out), progress="quiet", **options)
        train(config, RankInfo(MPI.COMM_SELF, 0, 1))
    return trained_params(out)


@pytest.mark.parametrize(
    "options",
    [{"overlap": True, "bucket_mb": 1e-4}, {"overlap": False}, {"accumulate": 3},
     {"accumulate": 2, "bucket_mb": 1e-4}],
    ids=["overlap", "no-overlap", "accumulate", "accumulate-overlap"],
)  # fmt: skip
def test_data_parallel_mlp_equals_one_rank(mpi_tmp_path, options):
    data, *_ = shared_dataset(mpi_tmp_path, "softmax", n_rows=301, d=5)
    settings = {**MLP, **options}
    reference = one_rank_params(data, mpi_tmp_path / "one", **settings)
    params = run(data, mpi_tmp_path / "many", **settings)
    np.testing.assert_allclose(params, reference, rtol=1e-10, atol=1e-13)
