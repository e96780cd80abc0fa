"""``slurm/train-gpu.sbatch`` without Slurm: the environment it hands to train.sbatch.

Run by bash with ``MPIGD_HOME`` pointing at a stand-in ``slurm/train.sbatch`` that
prints its environment, so these tests need no cluster (tests/test_slurm.py submits the
real scripts to a local Slurm where one can start).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import REPO

SCRIPT = REPO / "slurm" / "train-gpu.sbatch"
KEYS = ("BACKEND", "OMP_NUM_THREADS", "SRUN_CPUS_PER_TASK")


def handed_on(tmp_path, **variables) -> dict:
    """The variables of :data:`KEYS` that train-gpu.sbatch passes to train.sbatch, run
    with ``variables`` added to an environment without Slurm's (or these) variables."""
    stand_in = tmp_path / "slurm" / "train.sbatch"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("".join(f'echo "{key}=${{{key}-unset}}"\n' for key in KEYS))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SLURM_", "SRUN_")) and key not in KEYS}  # fmt: skip
    env.update(MPIGD_HOME=str(tmp_path), **variables)
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_the_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_srun_gets_the_jobs_cpus_per_task(tmp_path):
    """Slurm >= 22.05: srun reads SRUN_CPUS_PER_TASK, no longer sbatch's --cpus-per-task."""
    assert handed_on(tmp_path, SLURM_CPUS_PER_TASK="4") == {
        "BACKEND": "cupy", "OMP_NUM_THREADS": "4", "SRUN_CPUS_PER_TASK": "4",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({"SLURM_CPUS_PER_TASK": "4", "SRUN_CPUS_PER_TASK": "2"}, "2"),  # the user's choice
     ({}, "unset")],  # no --cpus-per-task: leave srun's default alone
    ids=["user-setting-kept", "outside-a-job"],
)  # fmt: skip
def test_srun_cpus_per_task_is_only_filled_in(tmp_path, variables, expected):
    assert handed_on(tmp_path, **variables)["SRUN_CPUS_PER_TASK"] == expected
