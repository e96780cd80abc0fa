"""GPU placement (:mod:`mpigd.device`) on the CPU: fake device counts and environments.

A fake device backend (the numpy kernels plus ``device_count`` and ``use_device``, which
only record the choice) lets ``device.place`` and ``mpigd eval`` run here exactly as
they would with ``--backend cupy``, so the choice of GPU is tested without one.
"""

from __future__ import annotations

import types

import pytest
from helpers import make_problem, write_h5

import kernels
from kernels import reference
from mpigd import device
from mpigd import evaluate as evaluation
from mpigd.config import TrainConfig
from mpigd.run import train

pytestmark = pytest.mark.timeout(120)

#: The environments of one task on a node with four GPUs, as Slurm and MPI leave them.
SLURM_EVERY_GPU_VISIBLE = {"SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def fake_gpu_backend(n_devices: int):
    """The numpy backend dressed as a device backend with ``n_devices`` visible GPUs;
    ``chosen`` lists the indices passed to ``use_device``."""
    functions = {key: getattr(reference, key) for key in dir(reference) if key[0] != "_"}
    backend = types.SimpleNamespace(**functions)
    backend.name, backend.chosen = "fakegpu", []
    backend.device_count = lambda: n_devices

    def use_device(index: int) -> dict:
        backend.chosen.append(index)
        return {"device": index, "name": "fake GPU", "pci_bus_id": f"0000:{index:02x}:00.0"}

    backend.use_device = use_device
    return backend


def test_one_visible_device_is_device_0_whatever_the_rank():
    # srun --gpus-per-task=1: CUDA_VISIBLE_DEVICES names this task's GPU only.
    environ = {"SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "3"}
    assert [device.choose_device(rank, 1, environ) for rank in range(4)] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "environ",
    [
        {},
        SLURM_EVERY_GPU_VISIBLE,  # mpirun inside sbatch --gpus-per-task=1
        {"SLURM_GPUS_PER_TASK": "4", "SLURM_GPU_BIND": "none"},  # srun --gpu-bind=none
    ],
    ids=["no-slurm", "mpirun-in-sbatch", "gpu-bind-none"],
)
def test_several_visible_devices_are_shared_by_node_local_rank(environ):
    """Every rank sees every GPU: the node-local rank chooses, Slurm's variables or not
    (with SLURM_GPUS_PER_TASK set, all ranks used to choose device 0)."""
    chosen = [device.choose_device(rank, 4, environ) for rank in range(6)]
    assert chosen == [0, 1, 2, 3, 0, 1]


def test_no_visible_device_is_an_error_naming_cuda_visible_devices():
    with pytest.raises(ValueError, match="no CUDA device.*CUDA_VISIBLE_DEVICES=''"):
        device.choose_device(0, 0, {"CUDA_VISIBLE_DEVICES": ""})


def test_place_puts_the_rank_on_the_device_of_its_node_local_rank(monkeypatch):
    from mpi4py import MPI

    for key, value in SLURM_EVERY_GPU_VISIBLE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(device.mpi, "node_local_rank", lambda comm: (2, 4))  # rank 2 of 4
    backend = fake_gpu_backend(4)
    record = device.place(MPI.COMM_WORLD, backend)
    assert backend.chosen == [2]
    assert record["device"] == 2 and record["ranks"][0]["device"] == 2
    assert record["visible_devices"] == "0,1,2,3" and record["ranks_on_node"] == 4


def test_place_without_a_device_is_one_agreed_error():
    from mpi4py import MPI

    from mpigd.errors import MpigdError

    with pytest.raises(MpigdError, match="--backend fakegpu: no CUDA device"):
        device.place(MPI.COMM_WORLD, fake_gpu_backend(0))


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory):
    """(run directory, data file) of a one-epoch logreg run on the numpy backend."""
    root = tmp_path_factory.mktemp("eval-placement")
    X, y = make_problem("binary", n_rows=120, d=3)
    data = str(write_h5(root / "train.h5", X, y, "binary", 2))
    train(TrainConfig(data=data, out=str(root / "run"), model="logreg", optimizer="gd",
                      epochs=1, backend="numpy", progress="quiet"))  # fmt: skip
    return root / "run", data


def test_eval_places_each_rank_on_its_device_as_training_does(monkeypatch, logreg_run):
    """``mpigd eval --backend cupy`` used to leave every rank on GPU 0."""
    run_dir, data = logreg_run
    backend = fake_gpu_backend(4)
    real = kernels.get_backend
    monkeypatch.setattr(
        kernels, "get_backend", lambda name: backend if name == "fakegpu" else real(name)
    )
    monkeypatch.setattr(device.mpi, "node_local_rank", lambda comm: (3, 4))
    for key, value in SLURM_EVERY_GPU_VISIBLE.items():
        monkeypatch.setenv(key, value)
    metrics = evaluation.evaluate_run(str(run_dir), data, "fakegpu")
    assert backend.chosen == [3]
    assert metrics == evaluation.evaluate_run(str(run_dir), data, "numpy")  # same kernels
