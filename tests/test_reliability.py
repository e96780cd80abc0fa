"""Checkpoint, resume, preemption, rank failure and divergence, under real mpirun.

Faults are injected as hooks (``tests/fault_hooks.py``, run through
``tests/run_with_fault.py``), so each interruption lands at a known step; one test also
sends a real SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from helpers import REPO, make_problem, mpirun_command, run_mpigd, write_h5, write_sharded

from mpigd.comm import EXIT_PREEMPTED

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    X, y = make_problem("binary", n_rows=1001, d=6)
    return str(write_sharded(root / "train", X, y, "binary", 2, sizes=(400, 350)))


def train(n_ranks, data, out, *options, fault=None, timeout=120):
    return run_mpigd(n_ranks, "train", "--data", data, "--model", "logreg", "--out", str(out),
                     "--quiet", *options, timeout=timeout, fault=fault)  # fmt: skip


def params_of(run_dir):
    with h5py.File(f"{run_dir}/model.h5", "r") as handle:
        return handle["params"][()]


def run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


SGD = ("--optimizer", "momentum", "--nesterov", "--lr", "0.2", "--batch-size", "50",
       "--epochs", "3", "--l2", "0.01", "--seed", "4")  # fmt: skip


@pytest.mark.parametrize("strategy", ["allreduce", "ps-sync"])
@pytest.mark.parametrize("n_ranks", [2, 4])
def test_preempted_mid_epoch_and_resumed_equals_uninterrupted_bit_for_bit(
    n_ranks, strategy, data, tmp_path
):
    options = (*SGD, "--strategy", strategy)
    whole = train(n_ranks, data, tmp_path / "whole", *options)
    assert whole.returncode == 0, whole.stderr
    # 21 steps per epoch: SIGTERM reaches rank 1 before global step 30 (epoch 2).
    cut = train(n_ranks, data, tmp_path / "cut", *options, fault="sigterm@1:30")
    assert cut.returncode == EXIT_PREEMPTED, cut.stderr
    assert "continue with --resume" in cut.stderr
    record = run_json(tmp_path / "cut")
    assert record["status"] == "preempted" and not (tmp_path / "cut" / "model.h5").exists()
    with h5py.File(tmp_path / "cut" / "checkpoint.h5", "r") as handle:
        assert (handle.attrs["epoch"], handle.attrs["step_in_epoch"]) == (1, 10)
    resumed = train(n_ranks, data, tmp_path / "cut", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(params_of(tmp_path / "cut"), params_of(tmp_path / "whole"))
    epochs = [json.loads(line)["epoch"] for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert epochs == [1, 2, 3]


def test_a_real_sigterm_to_mpirun_checkpoints_and_resumes(data, tmp_path):
    options = ("--optimizer", "sgd", "--lr", "0.05", "--batch-size", "10", "--epochs", "60",
               "--seed", "1")  # fmt: skip
    out = tmp_path / "run"
    command = mpirun_command(2, "train", "--data", data, "--model", "logreg", "--out",
                             str(out), "--quiet", *options)  # fmt: skip
    job = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == EXIT_PREEMPTED, stderr
    assert "SIGTERM" in stderr
    resumed = train(2, data, out, *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = train(2, data, tmp_path / "whole", *options)
    assert whole.returncode == 0, whole.stderr
    np.testing.assert_array_equal(params_of(out), params_of(tmp_path / "whole"))


def test_a_crash_between_checkpoint_write_and_rename_keeps_the_previous_one(data, tmp_path):
    options = ("--optimizer", "lbfgs", "--epochs", "6", "--l2", "0.01", "--checkpoint-every", "1")
    crashed = train(2, data, tmp_path / "run", *options, fault="checkpoint-crash@0:3")
    assert crashed.returncode != 0
    with h5py.File(tmp_path / "run" / "checkpoint.h5", "r") as handle:
        assert handle.attrs["epoch"] == 2 and np.isfinite(handle["params"][()]).all()
    resumed = train(2, data, tmp_path / "run", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert train(2, data, tmp_path / "whole", *options).returncode == 0
    np.testing.assert_array_equal(params_of(tmp_path / "run"), params_of(tmp_path / "whole"))


def test_full_batch_gd_resumed_on_two_ranks_from_a_four_rank_checkpoint(data, tmp_path):
    options = ("--optimizer", "gd", "--lr", "0.5", "--epochs", "12", "--l2", "0.01")
    cut = train(4, data, tmp_path / "run", *options, fault="sigterm@2:5")
    assert cut.returncode == EXIT_PREEMPTED, cut.stderr
    resumed = train(2, data, tmp_path / "run", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint written by 4 ranks, resuming on 2" in resumed.stderr
    assert run_json(tmp_path / "run")["resumed_from"]["world_size"] == 4
    assert train(4, data, tmp_path / "whole", *options).returncode == 0
    np.testing.assert_allclose(params_of(tmp_path / "run"), params_of(tmp_path / "whole"),
                               rtol=1e-10, atol=1e-14)  # fmt: skip


@pytest.mark.parametrize("action", ["raise", "kill"])
def test_a_fault_on_rank_1_ends_every_rank_quickly_and_names_it(action, data, tmp_path):
    start = time.monotonic()
    result = train(4, data, tmp_path / "run", "--optimizer", "sgd", "--batch-size", "20",
                   "--epochs", "50", fault=f"{action}@1:7", timeout=30)  # fmt: skip
    assert result.returncode != 0
    assert time.monotonic() - start < 30
    if action == "raise":
        assert "rank 1 of 4 failed: RuntimeError: injected fault" in result.stderr
        record = run_json(tmp_path / "run")
        assert record["status"] == "aborted" and "rank 1 of 4" in record["stop_reason"]
    else:  # a rank killed outright cannot speak: the launcher ends the job and says why
        assert "Killed (signal 9)" in result.stdout + result.stderr


def test_a_checkpoint_of_another_config_or_dataset_is_refused_unless_forced(data, tmp_path):
    out = tmp_path / "run"
    first = train(2, data, out, "--optimizer", "gd", "--lr", "0.1", "--epochs", "2")
    assert first.returncode == 0, first.stderr
    other_lr = train(2, data, out, "--optimizer", "gd", "--lr", "0.2", "--epochs", "4",
                     "--resume")  # fmt: skip
    assert other_lr.returncode == 2
    assert "config lr: checkpoint 0.1, now 0.2" in other_lr.stderr
    X, y = make_problem("binary", n_rows=1001, d=6, seed=9)
    other_data = write_h5(tmp_path / "other.h5", X, y, "binary", 2)
    refused = run_mpigd(2, "train", "--data", str(other_data), "--model", "logreg", "--out",
                        str(out), "--optimizer", "gd", "--lr", "0.1", "--epochs", "4",
                        "--resume", timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "dataset content_hash" in refused.stderr
    forced = train(2, data, out, "--optimizer", "gd", "--lr", "0.2", "--epochs", "4",
                   "--resume", "--force-resume")  # fmt: skip
    assert forced.returncode == 0, forced.stderr


def test_resume_without_a_checkpoint_starts_fresh(data, tmp_path):
    result = train(2, data, tmp_path / "run", "--epochs", "2", "--resume")
    assert result.returncode == 0 and "starting fresh" in result.stderr


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    X, y = make_problem("regression", n_rows=200, d=4)
    path = write_h5(tmp_path / "reg.h5", 30 * X, y, "regression")
    out = tmp_path / "run"
    result = run_mpigd(
        2,
        "train",
        "--data",
        str(path),
        "--model",
        "linreg",
        "--out",
        str(out),
        "--lr",
        "1.0",
        "--epochs",
        "200",
        "--checkpoint-every",
        "1",
        timeout=60,
    )
    assert result.returncode == 2
    assert "training diverged at epoch" in result.stderr and "smaller --lr" in result.stderr
    with h5py.File(out / "checkpoint.h5", "r") as handle:
        assert np.isfinite(handle["params"][()]).all()
    assert run_json(out)["status"] == "failed" and not (out / "model.h5").exists()
