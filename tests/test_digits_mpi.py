"""Real data: scikit-learn's 8x8 digits with a held-out 20% test split, on 2+ ranks."""

from __future__ import annotations

import json

import pytest
from mpi4py import MPI

from mpigd.comm import world
from mpigd.config import TrainConfig
from mpigd.data import write_digits
from mpigd.run import train

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(300)]


def final_test_accuracy(mpi_tmp_path, name, **options) -> float:
    data = mpi_tmp_path / "digits"
    if MPI.COMM_WORLD.rank == 0 and not data.exists():
        write_digits(data, test_fraction=0.2, seed=0)
    MPI.COMM_WORLD.Barrier()
    config = TrainConfig(data=str(data / "train"), test_data=str(data / "test"),
                         out=str(mpi_tmp_path / name), progress="quiet", **options)  # fmt: skip
    train(config, world())
    MPI.COMM_WORLD.Barrier()
    lines = (mpi_tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["test_accuracy"]


def test_mlp_and_softmax_reach_their_accuracy_on_digits(mpi_tmp_path):
    mlp = final_test_accuracy(
        mpi_tmp_path,
        "mlp",
        model="mlp",
        hidden=[128],
        dropout=0.2,
        optimizer="adam",
        lr=0.003,
        batch_size=64,
        epochs=40,
        seed=1,
    )
    softmax = final_test_accuracy(mpi_tmp_path, "softmax", model="softmax",
                                  optimizer="lbfgs", epochs=100, l2=1e-3)  # fmt: skip
    assert mlp >= 0.97
    assert softmax >= 0.94
