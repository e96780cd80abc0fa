"""``mpigd sweep``'s directory and inputs: a user's files beside the runs are never
replaced, a ``--collect`` that finds no sweep creates nothing, and a bad grid file or
metrics row is one clear message or an empty cell, never a traceback.

Serial: each command test launches its own ``mpirun -n 1``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import make_problem, run_mpigd, write_h5

from mpigd.errors import ConfigError
from mpigd.sweep import WRITTEN_BY, read_grid, result_row


def write_grid(directory: Path, grid: str = "[grid]\nlr = [0.5]\n") -> Path:
    """A grid file over a small binary problem, two full-batch epochs a config."""
    X, y = make_problem("binary", n_rows=120, d=3, seed=4)
    data = write_h5(directory / "train.h5", X, y, "binary", 2)
    path = directory / "grid.toml"
    path.write_text(f'data = "{data}"\nmodel = "logreg"\noptimizer = "gd"\nepochs = 2\n{grid}')
    return path


def snapshot(directory: Path) -> dict:
    """Every entry under ``directory``: a file's bytes, a link's target, ``dir``."""
    entries = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            entries[path] = ("link", str(path.readlink()))
        elif path.is_dir():
            entries[path] = "dir"
        else:
            entries[path] = path.read_bytes()
    return entries


def refused(result, *words) -> None:
    """One clear error naming ``words``, exit 2, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("mpigd: error") == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


USERS_TABLES = {
    "csv alone": {"sweep.csv": "my,own\n1,2\n"},
    "json unmarked": {"sweep.json": '{"metric": "mine"}\n'},
    "json not json": {"sweep.json": "notes\n", "sweep.csv": "a\n"},
    "csv beside unmarked json": {"sweep.json": "[1]\n", "sweep.csv": "a\n"},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("files", USERS_TABLES.values(), ids=USERS_TABLES.keys())
def test_a_users_table_files_are_refused_before_anything_is_trained_or_written(files, tmp_path):
    """Neither a training sweep nor --collect replaces a sweep.csv or sweep.json that no
    marked mpigd sweep.json vouches for; the training sweep trains nothing."""
    grid = write_grid(tmp_path)
    out = tmp_path / "sweep"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = snapshot(tmp_path)
    first = "sweep.json" if "sweep.json" in files else "sweep.csv"
    refused(run_mpigd(1, "sweep", str(grid), "--out", str(out)), str(out / first),
            "move it away or choose another --out")  # fmt: skip
    assert snapshot(tmp_path) == before  # no cfg-000: nothing was trained
    assert run_mpigd(1, "sweep", str(grid), "--index", "0", "--out", str(out)).returncode == 0
    before = snapshot(tmp_path)
    refused(run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out)), str(out / first))
    assert snapshot(tmp_path) == before


@pytest.mark.timeout(120)
def test_table_files_that_are_not_regular_files_are_refused(tmp_path):
    """A symbolic link named sweep.json (even to a sweep's own) or a directory named
    sweep.csv is not a file a sweep wrote: replacing it would lose the user's link."""
    grid = write_grid(tmp_path)
    out = tmp_path / "sweep"
    assert run_mpigd(1, "sweep", str(grid), "--out", str(out)).returncode == 0
    (out / "sweep.json").rename(tmp_path / "kept.json")
    (out / "sweep.json").symlink_to(tmp_path / "kept.json")
    before = snapshot(tmp_path)
    refused(run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out)),
            f"{out / 'sweep.json'} is not a file an mpigd sweep wrote")  # fmt: skip
    assert snapshot(tmp_path) == before
    (out / "sweep.json").unlink()
    (out / "sweep.csv").unlink()
    (out / "sweep.csv").mkdir()
    before = snapshot(tmp_path)
    refused(run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out)),
            f"{out / 'sweep.csv'} is not a file an mpigd sweep wrote")  # fmt: skip
    assert snapshot(tmp_path) == before


@pytest.mark.timeout(120)
def test_a_sweeps_own_table_is_marked_and_replaced_atomically(tmp_path):
    """The mark lets the next sweep replace its table; a sweep.json left alone (a crash
    between the two renames) still vouches for the directory; no temporary is left."""
    grid = write_grid(tmp_path, "[grid]\nlr = [0.5, 1.0]\n")
    out = tmp_path / "sweep"
    assert run_mpigd(1, "sweep", str(grid), "--index", "1", "--out", str(out)).returncode == 0
    first = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert first.returncode == 2 and "missing cfg-000" in first.stderr
    assert json.loads((out / "sweep.json").read_text())["written_by"] == WRITTEN_BY
    assert run_mpigd(1, "sweep", str(grid), "--index", "0", "--out", str(out)).returncode == 0
    (out / "sweep.csv").unlink()
    again = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert again.returncode == 0, again.stderr
    with open(out / "sweep.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["completed"] * 2
    trained = run_mpigd(1, "sweep", str(grid), "--overwrite", "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert json.loads((out / "sweep.json").read_text())["completed"] == 2
    assert sorted(path.name for path in out.iterdir()) == [
        "cfg-000",
        "cfg-001",
        "sweep.csv",
        "sweep.json",
    ]


@pytest.mark.timeout(120)
def test_collect_without_a_sweep_creates_nothing(tmp_path):
    """--collect into a path that does not exist, or an existing directory with none of
    the grid's run directories, is "no sweep"; a file as --out is named as one, for
    --collect, a training sweep and --index alike, and is left as it was."""
    grid = write_grid(tmp_path)
    absent = tmp_path / "absent"
    refused(run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(absent)),
            f"no sweep in {absent}: it does not exist")  # fmt: skip
    assert not absent.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(empty)),
            f"no sweep in {empty}", "cfg-000")  # fmt: skip
    assert list(empty.iterdir()) == []
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    before = snapshot(tmp_path)
    for mode in (["--collect"], [], ["--index", "0"]):
        result = run_mpigd(1, "sweep", str(grid), *mode, "--out", str(afile))
        refused(result, f"--out {afile} exists and is not a directory")
        result = run_mpigd(1, "sweep", str(grid), *mode, "--out", str(afile / "sub"))
        refused(result, str(afile / "sub"))
    assert snapshot(tmp_path) == before


GRID_SHAPES = {
    "grid = 5\n": "'grid' is an integer; it must be the table [grid]",
    'grid = "lr"\n': "'grid' is a string; it must be the table [grid]",
    "grid = [0.1, 0.5]\n": "'grid' is an array; it must be the table [grid]",
    "[[grid]]\nlr = [0.1]\n": "'grid' is an array of tables ([[grid]]); it must be",
    "[grid]\nlr = 0.5\n": "[grid] lr must be a non-empty list",
    "[grid]\nlr = []\n": "[grid] lr must be a non-empty list",
    "[grid.lr]\nvalue = [0.1]\n": "[grid] lr must be a non-empty list",
    "[grid]\nl-2 = [0.1]\nl_2 = [0.2]\n": "[grid] l_2 set twice (as l-2 and l_2)",
    "batch-size = 5\n[grid]\nbatch_size = [1]\n": "batch_size set twice",
    "[grid]\nlr = [0.1, 'fast']\n": "cfg-001 lr=fast: --lr must be float or int, got 'fast'",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape, words", GRID_SHAPES.items(), ids=range(len(GRID_SHAPES)))
def test_every_bad_grid_shape_is_a_message_naming_the_grid_file(shape, words, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'data = "d.h5"\nmodel = "logreg"\n{shape}')
    with pytest.raises(ConfigError) as caught:
        read_grid(str(grid), str(tmp_path / "out"))
    assert str(caught.value).startswith(f"grid file {grid}")
    assert words in str(caught.value)


@pytest.mark.timeout(60)
def test_a_grid_that_is_not_a_table_is_refused_by_the_command(tmp_path):
    grid = write_grid(tmp_path, "grid = 5\n")
    for mode in (["--collect"], [], ["--list"]):
        result = run_mpigd(1, "sweep", str(grid), *mode, "--out", str(tmp_path / "s"))
        refused(result, f"grid file {grid}: 'grid' is an integer")
    assert not (tmp_path / "s").exists()


@pytest.mark.timeout(30)
def test_metrics_rows_lacking_fields_leave_their_cells_empty(tmp_path):
    """A row without ``time_s`` or the losses, one whose numbers are not numbers, and a
    line that is not an object: the row reads what is there, and no total is invented."""
    run = {"config": {}, "status": "completed", "world_size": 1}
    (tmp_path / "run.json").write_text(json.dumps(run))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 3}\n')
    row = result_row(0, {"lr": 0.1}, str(tmp_path))
    assert row["status"] == "completed" and row["epochs_run"] == 1
    assert row["train_s"] is None and row["final_train_loss"] is None
    assert row["test_loss"] is None and row["error"] is None
    metrics.write_text(
        '{"epoch": 1, "train_loss": 0.5, "time_s": 1.5}\n5\n'
        '{"epoch": 2, "train_loss": "low", "test_loss": 0.25, "time_s": "1s"}\n'
    )
    row = result_row(0, {"lr": 0.1}, str(tmp_path))
    assert row["epochs_run"] == 2 and row["train_s"] is None
    assert row["final_train_loss"] is None and row["test_loss"] == 0.25
    metrics.write_text(
        '{"epoch": 1, "train_loss": 0.5, "time_s": 1.5}\n{"epoch": 2, "train_loss": 0.4, '
        '"time_s": 2.0}\n'
    )
    assert result_row(0, {"lr": 0.1}, str(tmp_path))["train_s"] == 3.5


@pytest.mark.timeout(60)
def test_collect_of_a_run_whose_metrics_lack_fields_writes_empty_cells(tmp_path):
    grid = write_grid(tmp_path)
    out = tmp_path / "sweep"
    assert run_mpigd(1, "sweep", str(grid), "--index", "0", "--out", str(out)).returncode == 0
    (out / "cfg-000" / "metrics.jsonl").write_text('{"epoch": 3}\n')
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out))
    assert "Traceback" not in collected.stderr, collected.stderr
    assert "cfg-000 lr=0.5: completed, final_train_loss None" in collected.stdout
    with open(out / "sweep.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["status"] == "completed" and row["train_s"] == "" and row["epochs_run"] == "1"
