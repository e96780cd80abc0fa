"""The batch scripts in slurm/, submitted with ``sbatch --wait`` to a real local Slurm.

The module starts a single-node cluster with ``slurm/local-cluster.sh start`` (state in
``build/slurm``) and stops it at the end, by PID, unless it was already running. When
Slurm cannot be started here (packages missing, not root) every test is skipped with
the script's reason. ``MpiDefault=pmi2`` in that cluster lets ``srun`` start the pip
mpich wheel's ranks as one world.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, make_problem, write_h5

pytestmark = pytest.mark.timeout(300)

CLUSTER = REPO / "slurm" / "local-cluster.sh"
SCRIPTS = REPO / "slurm"


@pytest.fixture(scope="module")
def slurm_env():
    """Environment for Slurm client commands; starts (and later stops) the cluster."""
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True)
    was_running = status.returncode == 0
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=90)
    if started.returncode != 0:
        reason = (started.stderr.strip() or started.stdout.strip()).splitlines()[-1]
        print(f"\nSlurm tests skipped: {reason}", file=sys.stderr)
        pytest.skip(f"local Slurm could not be started: {reason}")
    conf = started.stdout.split("SLURM_CONF=")[-1].strip()
    env = dict(os.environ, SLURM_CONF=conf, PYTHON=sys.executable, MPIGD_HOME=str(REPO))
    yield env
    if not was_running:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small binary problem as (train path, test path)."""
    root = tmp_path_factory.mktemp("slurm-data")
    X, y = make_problem("binary", n_rows=2500, d=6, seed=7)
    return (
        write_h5(root / "train.h5", X[:2000], y[:2000], "binary", 2),
        write_h5(root / "test.h5", X[2000:], y[2000:], "binary", 2),
    )


def sbatch(env, tmp_path, script, *options, wait=True, **variables):
    """Submit ``script`` from ``tmp_path``; returns the finished (or submitting) process."""
    command = ["sbatch", *(["--wait"] if wait else ["--parsable"]), *options]
    command += [f"--output={tmp_path}/slurm-%j.out", str(SCRIPTS / script)]
    return subprocess.run(
        command,
        env=dict(env, **variables),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )


def job_logs(tmp_path) -> str:
    return "\n".join(path.read_text() for path in sorted(tmp_path.glob("slurm-*.out")))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_sbatch_leaves_a_valid_run_record(slurm_env, dataset, tmp_path):
    out = tmp_path / "run"
    result = sbatch(
        slurm_env,
        tmp_path,
        "train.sbatch",
        "--ntasks=2",
        DATA=str(dataset[0]),
        TEST_DATA=str(dataset[1]),
        OPTIMIZER="gd",
        EPOCHS="4",
        OUT=str(out),
    )
    assert result.returncode == 0, result.stderr + job_logs(tmp_path)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["world_size"] == 2
    assert [row["epoch"] for row in metrics(out)] == [1, 2, 3, 4]
    assert (out / "model.h5").is_file() and (out / "checkpoint.h5").is_file()


def test_preempted_training_checkpoints_requeues_and_resumes(slurm_env, dataset, tmp_path):
    """USR1 (as --signal sends it) stops the ranks with a checkpoint; the job requeues
    itself and the second start resumes where the first stopped."""
    out = tmp_path / "run"
    variables = dict(DATA=str(dataset[0]), OPTIMIZER="gd", EPOCHS="800", OUT=str(out))
    env = dict(slurm_env, **variables, EXTRA="--lr 0.5 --quiet")
    command = ["sbatch", "--wait", "--ntasks=2", f"--output={tmp_path}/slurm-%j.out"]
    waiting = subprocess.Popen(
        [*command, str(SCRIPTS / "train.sbatch")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    job_id = waiting.stdout.readline().split()[-1]
    lines = out / "metrics.jsonl"
    _wait_for(lambda: lines.is_file() and lines.read_text().count("\n") >= 5)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm_env, check=True)
    # Slurm holds a requeued job for about two minutes; release it in two seconds. Not
    # at once: slurmd revokes the first start's credential with a timestamp in whole
    # seconds, and a start in that same second is killed ("Job credential revoked").
    _wait_for(lambda: _job_state(slurm_env, job_id) == "PENDING")

    def hold() -> list[str]:  # the reason shows "None" for a moment after the requeue
        return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%r %S"], env=slurm_env,
                              capture_output=True, text=True).stdout.split()  # fmt: skip

    _wait_for(lambda: hold()[:1] != ["None"], timeout_s=10)
    held = hold()
    assert held[0] == "BeginTime", held  # as README "On a cluster" says
    wait_s = time.mktime(time.strptime(held[1], "%Y-%m-%dT%H:%M:%S")) - time.time()
    assert 60 < wait_s <= 125, held
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now+2"], env=slurm_env)
    assert waiting.wait(timeout=200) == 0, job_logs(tmp_path)

    log = job_logs(tmp_path)
    assert "requeueing job" in log and "start 1" in log
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["resumed_from"]["epoch"] >= 5
    assert [row["epoch"] for row in metrics(out)] == list(range(1, 801))


def _job_state(env, job_id: str) -> str:
    shown = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
    )
    return shown.stdout.strip()


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the Slurm job"
        time.sleep(0.1)


def test_sweep_array_then_collect(slurm_env, dataset, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'data = "{dataset[0]}"\ntest_data = "{dataset[1]}"\nmodel = "logreg"\n'
        'optimizer = "gd"\nepochs = 4\n[grid]\nlr = [0.1, 1.0, 3.0]\n'
    )
    out = tmp_path / "sweep"
    variables = {"GRID": str(grid), "OUT": str(out)}
    script = "sweep-array.sbatch"
    array = sbatch(
        slurm_env, tmp_path, script, "--array=0-2", "--ntasks=2", wait=False, **variables
    )
    assert array.returncode == 0, array.stderr
    after_array = f"--dependency=afterok:{array.stdout.strip()}"
    collect = sbatch(slurm_env, tmp_path, script, after_array, **variables)
    assert collect.returncode == 0, collect.stderr + job_logs(tmp_path)
    with open(out / "sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["lr"], row["status"], row["ranks"]) for row in table] == [
        ("0.1", "completed", "2"),
        ("1.0", "completed", "2"),
        ("3.0", "completed", "2"),
    ]
    for row in table:
        assert json.loads((Path(row["run_dir"]) / "run.json").read_text())["world_size"] == 2
    logs = job_logs(tmp_path)
    assert "best: cfg-" in logs
    for index, lr in enumerate(("0.1", "1.0", "3.0")):  # each task's log, named by config
        log = (out / "logs" / f"cfg-{index:03d}.log").read_text()
        assert f"cfg-{index:03d} lr={lr}: training on 2 ranks" in log, log
        assert "epoch 4/4" in log and f"cfg-{index:03d} lr={lr}: completed" in log, log
        assert log in logs  # and the same in Slurm's log of the task


def test_train_gpu_sbatch_is_refused_where_slurm_has_no_gpus(slurm_env, tmp_path):
    """What README "On a cluster" tells a user of a cluster without gres/gpu to expect."""
    result = sbatch(slurm_env, tmp_path, "train-gpu.sbatch", "--ntasks=1", DATA="unused")
    assert result.returncode != 0
    assert "Invalid generic resource (gres) specification" in result.stderr


def test_scaling_sbatch_runs_every_rank_count_with_srun(slurm_env, tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nname = "slurm"\nmode = "strong"\nranks = [1, 2]\nrepeats = 1\n'
        '[data]\ntask = "binary"\nrows = 2000\nfeatures = 5\n'
        '[train]\noptimizer = "gd"\nepochs = 3\n'
    )
    result = sbatch(
        slurm_env,
        tmp_path,
        "scaling.sbatch",
        "--ntasks=2",
        STUDY=str(study),
        OUT=str(tmp_path / "results"),
        DATA_DIR=str(tmp_path / "data"),
    )
    assert result.returncode == 0, result.stderr + job_logs(tmp_path)
    with open(tmp_path / "results" / "slurm" / "points.csv", newline="") as handle:
        points = list(csv.DictReader(handle))
    assert [(p["ranks"], p["status"], p["launcher"]) for p in points] == [
        ("1", "completed", "srun"),
        ("2", "completed", "srun"),
    ]
    assert (tmp_path / "results" / "slurm" / "speedup.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "script", sorted(p.name for p in SCRIPTS.glob("*.sbatch")) + ["local-cluster.sh"]
)
def test_scripts_parse_and_say_how_to_submit(script):
    text = (SCRIPTS / script).read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPTS / script)]).returncode == 0
    assert text.startswith("#!/bin/bash") or text.startswith("#!/usr/bin/env bash")
    assert "Submit" in text or "Usage" in text
