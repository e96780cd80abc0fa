"""Ctrl-C, a stop signal while the ranks start, and failed final writes, under mpirun.

Each test checks the message, the exit status of every rank (``run_mpigd(statuses=)``)
and what the run directory holds afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest
from helpers import REPO, make_problem, mpirun_command, rank_statuses, run_mpigd, write_h5

from mpigd.comm import EXIT_INTERRUPTED, EXIT_PREEMPTED, EXIT_USER_ERROR

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = make_problem("binary", n_rows=600, d=5)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


def train(data, out, *options, **kwargs):
    return run_mpigd(2, "train", "--data", data, "--model", "logreg", "--out", str(out),
                     "--quiet", *options, **kwargs)  # fmt: skip


def run_json(out):
    return json.loads((out / "run.json").read_text())


def test_ctrl_c_checkpoints_records_interrupted_and_exits_130_on_every_rank(data, tmp_path):
    options = ("--optimizer", "sgd", "--lr", "0.05", "--batch-size", "5", "--epochs", "400")
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    command = mpirun_command(2, "train", "--data", data, "--model", "logreg", "--out",
                             str(out), "--quiet", *options, fault="none")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIGD_TEST_STATUS_DIR=str(statuses))
    statuses.mkdir()
    job = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)  # what Ctrl-C sends mpirun, which forwards it
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == EXIT_INTERRUPTED, stderr
    assert rank_statuses(statuses, 2) == [EXIT_INTERRUPTED] * 2
    assert stderr.count("mpigd: stopped by SIGINT at epoch") == 1, stderr
    record = run_json(out)
    assert record["status"] == "interrupted" and "continue with --resume" in record["stop_reason"]
    assert (out / "checkpoint.h5").exists() and not (out / "model.h5").exists()
    resumed = train(data, out, *options, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr  # epochs 2 < done: ends at once


def test_a_sigterm_while_the_ranks_import_stops_them_with_75_and_writes_nothing(data, tmp_path):
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    result = train(data, out, fault="sigterm-at-start@1", statuses=statuses, timeout=90)
    assert result.returncode == EXIT_PREEMPTED, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_PREEMPTED] * 2
    assert "stopped by SIGTERM before the run started; nothing was written" in result.stderr
    assert not out.exists()


def test_other_commands_end_at_once_on_a_stop_signal(data, tmp_path):
    # Only training checkpoints: `data inspect` ends at once, with 128 + SIGTERM.
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/run_with_fault.py"), "sigterm-at-start@0",
         "data", "inspect", data],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "mpigd: stopped by SIGTERM" in result.stderr and "Traceback" not in result.stderr


def test_a_stop_signal_while_a_dataset_is_written_leaves_no_temporary_files(tmp_path):
    job = subprocess.Popen(
        [sys.executable, "-m", "mpigd", "data", "synth", "--task", "binary", "--rows",
         "3000000", "--features", "50", "--out", str(tmp_path / "synth")],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".synth.tmp-*")):
        time.sleep(0.02)  # the staged output appears: the writing has begun
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary


@pytest.mark.parametrize("action, name", [("model-write-fails", "model.h5"),
                                          ("record-write-fails", "run.json")])  # fmt: skip
def test_a_failed_final_write_fails_every_rank_with_one_message(data, tmp_path, action, name):
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    start = time.monotonic()
    result = train(data, out, "--epochs", "3", fault=f"{action}@0:0", statuses=statuses)
    assert time.monotonic() - start < 60
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert result.stderr.count(f"error: rank 0: cannot write {out}/{name}: ") == 1, result.stderr
    assert "Traceback" not in result.stderr
    with h5py.File(out / "checkpoint.h5", "r") as handle:  # the final state is kept
        assert handle.attrs["epoch"] == 3
    record = run_json(out)
    if name == "model.h5":
        assert not (out / "model.h5").exists()
        assert record["status"] == "failed" and "cannot write" in record["stop_reason"]
    else:  # run.json itself cannot be written: it never claims "completed"
        assert record["status"] == "running"
        assert "cannot record the run as failed in run.json" in result.stderr


def test_a_bad_option_value_is_refused_on_every_rank_before_anything_is_written(data, tmp_path):
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    result = train(data, out, "--momentum", "1.5", statuses=statuses)
    assert result.returncode == EXIT_USER_ERROR
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert result.stderr.count("--momentum must be in [0, 1), got 1.5") == 1, result.stderr
    assert not out.exists()


def test_an_ignored_option_is_warned_about_once_and_recorded(data, tmp_path):
    out = tmp_path / "run"
    result = train(data, out, "--optimizer", "sgd", "--batch-size", "100", "--nesterov",
                   "--epochs", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    warning = "--nesterov has no effect here: it is used only with --optimizer momentum"
    assert result.stderr.count(warning) == 1, result.stderr
    assert run_json(out)["warnings"] == [warning]


def test_force_resume_from_another_models_parameters_is_refused_and_keeps_the_run(data, tmp_path):
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    assert train(data, out, "--epochs", "2").returncode == 0
    before = {name: (out / name).read_bytes() for name in ("run.json", "model.h5")}
    X, y = make_problem("binary", n_rows=600, d=8)
    wider = str(write_h5(tmp_path / "wider.h5", X, y, "binary", 2))
    result = train(wider, out, "--epochs", "4", "--resume", "--force-resume", statuses=statuses)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert "holds 6 parameters, but --model logreg on 8 features has 9" in result.stderr
    assert "Traceback" not in result.stderr
    assert {name: (out / name).read_bytes() for name in before} == before


def test_data_whose_values_overflow_is_named_as_the_cause_not_the_learning_rate(tmp_path):
    X, y = make_problem("binary", n_rows=200, d=4)
    X[7, 2] = 1e300
    path = str(write_h5(tmp_path / "huge.h5", X, y, "binary", 2))
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    result = train(path, out, "--epochs", "3", statuses=statuses)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert "training diverged at epoch 1" in result.stderr
    assert "values as large as 1e+300 in magnitude" in result.stderr
    assert "scale the data" in result.stderr and "smaller --lr" not in result.stderr
    assert run_json(out)["status"] == "failed" and not (out / "model.h5").exists()


def test_a_stop_signal_is_heard_where_full_batch_gd_stopped_moving(tmp_path):
    # Tiny least squares: GD reaches a float64 fixed point within seconds, after which
    # the memo serves every step; the stop vote must still travel.
    X, y = make_problem("regression", n_rows=40, d=2)
    data = str(write_h5(tmp_path / "reg.h5", X, y, "regression"))
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    statuses.mkdir()
    command = mpirun_command(2, "train", "--data", data, "--model", "linreg", "--lr", "0.5",
                             "--epochs", "100000000", "--out", str(out), "--quiet",
                             fault="none")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIGD_TEST_STATUS_DIR=str(statuses))
    job = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, env=env)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 90
    while time.monotonic() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        rows = [json.loads(line) for line in lines[-3:-1]]  # the last may be half written
        fields = [(row["train_loss"], row["grad_norm_inf"]) for row in rows]
        if len(fields) == 2 and fields[0] == fields[1] and len(lines) > 20:
            break  # two epochs alike to the last bit: the parameters stopped moving
        time.sleep(0.2)
    assert time.monotonic() < deadline, "full-batch GD never reached a fixed point"
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == EXIT_PREEMPTED, stderr
    assert rank_statuses(statuses, 2) == [EXIT_PREEMPTED] * 2


def test_a_checkpoint_over_the_file_size_limit_fails_every_rank_with_one_message(data, tmp_path):
    # h5py reports this EFBIG as a RuntimeError while it closes the file.
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    result = train(data, out, "--model", "mlp", "--hidden", "4096", "--epochs", "1",
                   fault="file-size-limit@0:0", statuses=statuses)  # fmt: skip
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    assert result.stderr.count("cannot write the checkpoint") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "checkpoint.h5").exists() and not list(out.glob(".checkpoint.h5.tmp-*"))
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
