"""``mpigd sweep``: grid files, rank groups, and results equal to separate runs.

The ``mpi`` tests run collectively under ``mpirun -n P`` (``make test``: P = 1..4); the
others run in the serial pass and launch their own ``mpirun``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_problem, run_mpigd, write_h5

from mpigd.comm import world
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError
from mpigd.run import train
from mpigd.sweep import best_row, divergence, group_of, read_grid, run_sweep

SHARED = """
data = "{data}"
test_data = "{test}"
model = "logreg"
optimizer = "gd"
epochs = 6
l2 = 0.001
"""


def write_problem(directory: Path) -> Path:
    """A small binary problem, ``fixed.toml`` (its train options) and ``grid.toml``."""
    X, y = make_problem("binary", n_rows=900, d=5, seed=2)
    train_path = write_h5(directory / "train.h5", X[:700], y[:700], "binary", 2)
    test_path = write_h5(directory / "test.h5", X[700:], y[700:], "binary", 2)
    shared = SHARED.format(data=train_path, test=test_path)
    (directory / "fixed.toml").write_text(shared)
    (directory / "grid.toml").write_text(shared + "[grid]\nlr = [0.2, 1.0]\n")
    return directory / "grid.toml"


def final_params(run_dir) -> np.ndarray:
    with h5py.File(f"{run_dir}/model.h5", "r") as handle:
        return handle["params"][()]


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_sweep_in_groups_equals_separate_runs(mpi_tmp_path):
    """Each config trained by its group equals the same config trained on all ranks."""
    ranks = world()
    if ranks.is_root:
        write_problem(mpi_tmp_path)
    ranks.comm.Barrier()
    groups = min(2, ranks.size)
    table = run_sweep(ranks, str(mpi_tmp_path / "grid.toml"), str(mpi_tmp_path / "sweep"), groups)

    sizes = [sum(group_of(r, ranks.size, groups) == g for r in range(ranks.size)) for g in (0, 1)]
    assert [row["index"] for row in table] == [0, 1]
    assert [row["lr"] for row in table] == [0.2, 1.0]
    assert all(row["status"] == "completed" for row in table)
    assert [row["group"] for row in table] == [0, 1 % groups]
    assert [row["ranks"] for row in table] == [sizes[row["group"]] for row in table]
    for row in table:
        config = TrainConfig(
            data=str(mpi_tmp_path / "train.h5"),
            test_data=str(mpi_tmp_path / "test.h5"),
            model="logreg",
            optimizer="gd",
            epochs=6,
            l2=0.001,
            lr=row["lr"],
            out=str(mpi_tmp_path / f"separate-{row['index']}"),
            progress="quiet",
        )
        summary = train(config, ranks)
        ranks.comm.Barrier()
        assert summary["final_train_loss"] == pytest.approx(row["final_train_loss"], rel=1e-10)
        np.testing.assert_allclose(
            final_params(row["run_dir"]), final_params(config.out), rtol=1e-10, atol=1e-12
        )
    if ranks.is_root:
        saved = json.loads((mpi_tmp_path / "sweep" / "sweep.json").read_text())
        assert saved["metric"] == "test_loss"
        assert saved["best"]["index"] == min(table, key=lambda r: r["test_loss"])["index"]


def test_sweep_command_on_four_ranks_in_two_groups(tmp_path):
    """Both groups' results come back, and equal two separate 2-rank runs bit for bit."""
    grid = write_problem(tmp_path)
    result = run_mpigd(4, "sweep", str(grid), "--groups", "2", "--out", str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr
    assert "best: cfg-" in result.stdout
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["index"], row["lr"], row["group"], row["ranks"]) for row in table] == [
        ("0", "0.2", "0", "2"),
        ("1", "1.0", "1", "2"),
    ]
    for row in table:
        run_dir = tmp_path / f"separate-{row['index']}"
        config = str(tmp_path / "fixed.toml")
        separate = run_mpigd(
            2, "train", "--config", config, "--lr", row["lr"], "--quiet", "--out", str(run_dir)
        )
        assert separate.returncode == 0, separate.stderr
        np.testing.assert_array_equal(final_params(row["run_dir"]), final_params(run_dir))
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert float(row["test_loss"]) == last["test_loss"]


@pytest.mark.timeout(150)
def test_collect_and_list_read_what_a_sweep_left(tmp_path):
    """With a config missing, --collect names it, takes the best among the completed
    ones and exits 2; once every config completed, it exits 0."""
    grid = write_problem(tmp_path)
    out = tmp_path / "sweep"
    task = run_mpigd(2, "sweep", str(grid), "--index", "1", "--out", str(out))
    assert task.returncode == 0, task.stderr
    assert f"cfg-001 lr=1.0: training on 2 ranks into {out / 'cfg-001'}" in task.stdout
    assert "cfg-001 lr=1.0: completed, test_loss " in task.stdout
    assert "epoch 6/6" in task.stdout + task.stderr  # a job array task's log shows its epochs
    listed = run_mpigd(1, "sweep", str(grid), "--list", "--out", str(out))
    assert [json.loads(line)["lr"] for line in listed.stdout.splitlines()] == [0.2, 1.0]
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert collected.returncode == 2
    assert "not completed, 1 of 2: missing cfg-000" in collected.stdout
    assert "best: cfg-001 lr=1.0 (test_loss " in collected.stdout
    assert "among the 1 of 2 completed)" in collected.stdout
    assert "mpigd: error: not every config completed (missing cfg-000)" in collected.stderr
    saved = json.loads((out / "sweep.json").read_text())
    assert [row["status"] for row in saved["configs"]] == ["missing", "completed"]
    assert saved["best"]["index"] == 1
    assert saved["not_completed"] == [{"index": 0, "status": "missing"}]
    assert run_mpigd(1, "sweep", str(grid), "--index", "0", "--out", str(out)).returncode == 0
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert collected.returncode == 0, collected.stderr
    assert "not completed" not in collected.stdout and "among" not in collected.stdout


@pytest.mark.timeout(150)
def test_a_job_array_task_reruns_with_resume_or_overwrite(tmp_path):
    """A rerun without either is refused naming both, which sweep now accepts; --resume
    keeps a completed config as it is, --overwrite trains it again from the start."""
    grid = write_problem(tmp_path)
    out = tmp_path / "sweep"
    task = ("sweep", str(grid), "--index", "0", "--out", str(out))
    assert run_mpigd(1, *task).returncode == 0
    first = (out / "cfg-000" / "metrics.jsonl").read_text()
    refused = run_mpigd(1, *task)
    assert refused.returncode == 2
    assert "pass --overwrite to replace it or --resume to continue it" in refused.stderr
    resumed = run_mpigd(1, *task, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 6" in resumed.stderr
    assert (out / "cfg-000" / "metrics.jsonl").read_text() == first
    again = run_mpigd(1, *task, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "cfg-000" / "run.json").read_text())["status"] == "completed"
    both = run_mpigd(1, *task, "--overwrite", "--resume")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    collect = run_mpigd(1, "sweep", str(grid), "--collect", "--resume", "--out", str(out))
    assert collect.returncode == 2
    assert "--resume applies to a sweep that trains, not to --collect" in collect.stderr


@pytest.mark.timeout(120)
def test_a_config_whose_loss_rose_is_diverged_and_never_best(tmp_path):
    """lr 2.5 on this least-squares problem grows the loss 1.5**2-fold an epoch without
    overflowing: the run completes, the sweep marks it diverged; --collect exits 2."""
    X, y = make_problem("regression", n_rows=200, d=3, seed=1)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    data = write_h5(tmp_path / "reg.h5", X, y, "regression")
    grid = tmp_path / "grid.toml"
    grid.write_text(f'data = "{data}"\nmodel = "linreg"\nepochs = 12\n[grid]\nlr = [0.1, 2.5]\n')
    result = run_mpigd(1, "sweep", str(grid), "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [row["status"] for row in saved["configs"]] == ["completed", "diverged"]
    assert "diverged: train_loss rose from" in saved["configs"][1]["error"]
    assert saved["configs"][1]["final_train_loss"] > 1e3 * saved["configs"][0]["final_train_loss"]
    assert saved["best"]["index"] == 0
    assert "cfg-001 lr=2.5: diverged, final_train_loss " in result.stdout
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(tmp_path / "s"))
    assert collected.returncode == 2 and "diverged cfg-001" in collected.stderr


@pytest.mark.parametrize(
    "n_ranks, options, groups",
    [
        (2, "", "2"),
        (3, 'strategy = "ps-async"\noptimizer = "sgd"\nbatch_size = 20\n', "1"),
    ],
    ids=["allreduce", "ps-async"],
)
def test_a_diverging_config_is_a_failed_row_not_a_failed_sweep(n_ranks, options, groups, tmp_path):
    """Divergence is agreed by every strategy: the asynchronous server's too, with two
    workers, one of them halted while the other's gradient is still in flight."""
    X, y = make_problem("regression", n_rows=60, d=3)
    data = write_h5(tmp_path / "reg.h5", 1e3 * X, y, "regression")
    grid = tmp_path / "grid.toml"
    grid.write_text(f'data = "{data}"\nmodel = "linreg"\nepochs = 30\n{options}'
                    "[grid]\nlr = [1e-7, 10.0]\n")  # fmt: skip
    result = run_mpigd(n_ranks, "sweep", str(grid), "--groups", groups, "--out",
                       str(tmp_path / "s"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [row["status"] for row in saved["configs"]] == ["completed", "failed"]
    assert "diverged" in saved["configs"][1]["error"]
    assert saved["metric"] == "final_train_loss" and saved["best"]["index"] == 0


def test_more_groups_than_ranks_is_refused_once(tmp_path):
    grid = write_problem(tmp_path)
    refused = run_mpigd(2, "sweep", str(grid), "--groups", "3", "--out", str(tmp_path / "s"))
    assert refused.returncode == 2 and "--groups 3" in refused.stderr
    assert refused.stderr.count("mpigd: error") == 1


def test_grid_file_errors(tmp_path):
    grid = write_problem(tmp_path)
    cases = {
        "lr = [0.2, 1.0]": ("lr = []", "non-empty list"),
        "epochs = 6": ("epochs = 6\nout = 'x'", "leave out 'out'"),
        "l2 = 0.001": ("colour = 1", "unknown train options colour"),
    }
    for old, (new, words) in cases.items():
        broken = tmp_path / "broken.toml"
        broken.write_text(grid.read_text().replace(old, new))
        with pytest.raises(ConfigError, match=words):
            read_grid(str(broken), str(tmp_path / "out"))
    values, configs = read_grid(str(grid), str(tmp_path / "out"))
    assert values == [{"lr": 0.2}, {"lr": 1.0}]
    assert [c.out for c in configs] == [str(tmp_path / "out" / f"cfg-00{i}") for i in (0, 1)]
    assert all(c.progress == "quiet" and c.epochs == 6 for c in configs)


def test_groups_are_consecutive_blocks_of_nearly_equal_size():
    assert [group_of(r, 4, 2) for r in range(4)] == [0, 0, 1, 1]
    assert [group_of(r, 3, 2) for r in range(3)] == [0, 0, 1]
    assert [group_of(r, 5, 5) for r in range(5)] == [0, 1, 2, 3, 4]


def test_best_row_prefers_completed_lowest_loss():
    table = [
        {"index": 0, "status": "completed", "test_loss": 0.5, "final_train_loss": 0.4},
        {"index": 1, "status": "failed", "test_loss": None, "final_train_loss": None},
        {"index": 2, "status": "completed", "test_loss": 0.3, "final_train_loss": 0.45},
        {"index": 3, "status": "diverged", "test_loss": 0.1, "final_train_loss": 0.1},
    ]
    assert best_row(table, test_metric=True)["index"] == 2
    assert best_row(table, test_metric=False)["index"] == 0
    assert best_row(table[1:2], test_metric=True) is None


@pytest.mark.timeout(10)
def test_divergence_is_a_loss_not_finite_or_above_the_first_epochs():
    def epochs(*losses, test=None):
        return [{"epoch": k + 1, "train_loss": v, "test_loss": test} for k, v in enumerate(losses)]

    assert divergence([]) is None
    assert divergence(epochs(2.0)) is None
    assert divergence(epochs(2.0, 3.0, 1.5)) is None  # a bump on the way down
    assert divergence(epochs(2.0, 1.0, 2.5)) == (
        "diverged: train_loss rose from 2 (epoch 1) to 2.5 (epoch 3)"
    )
    assert divergence(epochs(2.0, 1.0, test=float("inf"))) == (
        "diverged: the final test_loss is inf"
    )
    assert divergence(epochs(2.0, float("nan"))) == "diverged: the final train_loss is nan"
