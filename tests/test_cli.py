"""The command line end to end, under real mpirun: synth -> train -> eval, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import REPO, make_problem, mpirun_command, run_mpigd, write_h5

pytestmark = pytest.mark.timeout(300)

METRIC_FIELDS = {
    "epoch",
    "train_loss",
    "time_s",
    "compute_s",
    "comm_s",
    "io_s",
    "samples_per_s",
    "test_loss",
    "test_accuracy",
}
RUN_FIELDS = {
    "config",
    "git_commit",
    "mpi_library",
    "world_size",
    "hosts",
    "versions",
    "start_time",
    "end_time",
    "status",
    "stop_reason",
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "binary"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mpigd",
            "data",
            "synth",
            "--task",
            "binary",
            "--rows",
            "3000",
            "--features",
            "8",
            "--shards",
            "3",
            "--seed",
            "5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_synth_train_eval_on_two_ranks(synth_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_mpigd(
        2,
        "train",
        "--data",
        str(synth_dir / "train"),
        "--test-data",
        str(synth_dir / "test"),
        "--model",
        "logreg",
        "--optimizer",
        "lbfgs",
        "--epochs",
        "15",
        "--l2",
        "1e-3",
        "--out",
        str(run_dir),
    )
    assert result.returncode == 0, result.stderr
    run = json.loads((run_dir / "run.json").read_text())
    assert RUN_FIELDS <= set(run)
    assert run["status"] == "completed" and run["world_size"] == 2 and len(run["hosts"]) == 2
    assert {"python", "numpy", "h5py", "cupy", "mpi4py", "backend"} <= set(run["versions"])
    assert run["config"]["model"] == "logreg"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(METRIC_FIELDS <= set(row) for row in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # Only rank 0 prints: one progress line per epoch.
    assert result.stdout.count("train_loss") == len(rows) == run["epochs_run"]
    with h5py.File(run_dir / "model.h5", "r") as handle:
        assert handle["params"].shape == (9,)

    evaluated = run_mpigd(1, "eval", str(run_dir), "--data", str(synth_dir / "test"))
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["accuracy"] > 0.75
    assert metrics["loss"] == pytest.approx(rows[-1]["test_loss"], rel=1e-9)


def test_config_file_with_flags_overriding(synth_dir, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{synth_dir / "train"}"\nmodel = "svm"\noptimizer = "adam"\n'
        "lr = 0.05\nbatch-size = 256\nepochs = 5\n"
    )
    run_dir = tmp_path / "run"
    result = run_mpigd(
        2, "train", "--config", str(config), "--epochs", "2", "--json", "--out", str(run_dir)
    )
    assert result.returncode == 0, result.stderr
    *printed, final = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["epoch"] for row in printed] == [1, 2] and final["status"] == "completed"
    assert printed[0]["steps"] == 10  # ceil(2400 / 256) global mini-batches per epoch
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["epochs"] == 2 and run["config"]["batch_size"] == 256


def bad_dataset(kind: str, root):
    """Write one broken dataset; return (path, words the error must contain)."""
    X, y = make_problem("binary", n_rows=40, d=3)
    if kind == "missing":
        return root / "nowhere.h5", "nowhere.h5"
    if kind == "not-hdf5":
        (root / "text.h5").write_text("just some text\n")
        return root / "text.h5", "HDF5"
    if kind == "missing-y":
        path = root / "bad.h5"
        with h5py.File(path, "w") as handle:
            handle["X"] = X
            handle.attrs["task"] = "binary"
            handle.attrs["n_classes"] = 2
        return path, "y"
    if kind == "length-mismatch":
        return write_h5(root / "bad.h5", X, y[:-1], "binary", 2), "40"
    if kind == "features-differ":
        write_h5(root / "d/part-0.h5", X, y, "binary", 2)
        write_h5(root / "d/part-1.h5", X[:, :2], y, "binary", 2)
        return root / "d", "feature"
    if kind == "dtype-differs":
        write_h5(root / "d/part-0.h5", X, y, "binary", 2)
        write_h5(root / "d/part-1.h5", X.astype(np.float32), y, "binary", 2)
        return root / "d", "dtype"
    if kind == "nan-on-last-rank":
        X[-1, 1] = np.nan
        return write_h5(root / "bad.h5", X, y, "binary", 2), "NaN"
    if kind == "inf-label":
        y = y.astype(np.float64)
        y[3] = np.inf
        return write_h5(root / "bad.h5", X, y, "binary", 2), "Inf"
    if kind == "label-out-of-range":
        y[-2] = 7
        return write_h5(root / "bad.h5", X, y, "binary", 2), "7"
    if kind == "fewer-rows-than-ranks":
        return write_h5(root / "bad.h5", X[:1], y[:1], "binary", 2), "ranks"
    if kind == "empty-file":
        return write_h5(root / "bad.h5", X[:0], y[:0], "binary", 2), "no rows"
    if kind == "empty-directory":
        (root / "d").mkdir()
        return root / "d", "no"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "not-hdf5",
        "missing-y",
        "length-mismatch",
        "features-differ",
        "dtype-differs",
        "nan-on-last-rank",
        "inf-label",
        "label-out-of-range",
        "fewer-rows-than-ranks",
        "empty-file",
        "empty-directory",
    ],
)
def test_bad_input_ends_every_rank_with_one_clear_message(kind, tmp_path):
    path, words = bad_dataset(kind, tmp_path)
    run_dir = tmp_path / "run"
    result = run_mpigd(
        2, "train", "--data", str(path), "--model", "logreg", "--out", str(run_dir), timeout=60
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpigd: error")]
    assert len(errors) == 1, result.stderr
    assert words.lower() in errors[0].lower()
    assert "Traceback" not in result.stderr
    assert not (run_dir / "model.h5").exists()


def test_model_that_does_not_fit_the_task_is_refused(tmp_path):
    X, y = make_problem("regression", n_rows=30, d=3)
    path = write_h5(tmp_path / "reg.h5", X, y, "regression")
    result = run_mpigd(
        2,
        "train",
        "--data",
        str(path),
        "--model",
        "logreg",
        "--out",
        str(tmp_path / "run"),
        timeout=60,
    )
    assert result.returncode != 0
    assert "needs a binary dataset" in result.stderr


def test_divergence_fails_the_run_and_leaves_no_model(tmp_path):
    X, y = make_problem("regression", n_rows=50, d=3)
    path = write_h5(tmp_path / "reg.h5", 1e3 * X, y, "regression")
    run_dir = tmp_path / "run"
    result = run_mpigd(
        2,
        "train",
        "--data",
        str(path),
        "--model",
        "linreg",
        "--lr",
        "10",
        "--epochs",
        "50",
        "--out",
        str(run_dir),
        timeout=60,
    )
    assert result.returncode != 0 and "diverged" in result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "model.h5").exists()


def test_an_unexpected_crash_on_one_rank_ends_the_whole_job():
    """Rank 1 raises while rank 0 waits in a collective: the job must still end, non-zero."""
    script = (
        "from mpi4py import MPI\n"
        "from mpigd.comm import run_guarded\n"
        "def main():\n"
        "    if MPI.COMM_WORLD.rank == 1:\n"
        "        raise RuntimeError('injected failure')\n"
        "    MPI.COMM_WORLD.Barrier()\n"
        "raise SystemExit(run_guarded(main))\n"
    )
    command = mpirun_command(2)[:-2] + ["-c", script]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: injected failure" in result.stderr


def test_import_csv_then_inspect(tmp_path):
    X, y = make_problem("multiclass", n_rows=50, d=3, n_classes=3)
    csv = tmp_path / "table.csv"
    np.savetxt(csv, np.column_stack([X, y + 1]), delimiter=",", header="a,b,c,label", comments="")
    out = tmp_path / "imported.h5"
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "mpigd",
            "data",
            "import",
            str(csv),
            "--format",
            "csv",
            "--label-column",
            "-1",
            "--label-values",
            "1,2,3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert imported.returncode == 0, imported.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "mpigd", "data", "inspect", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    summary = json.loads(shown.stdout)
    assert (summary["rows"], summary["features"], summary["task"]) == (50, 3, "multiclass")


def test_a_second_run_into_the_same_directory_needs_overwrite(synth_dir, tmp_path):
    args = ("train", "--data", str(synth_dir / "train"), "--model", "logreg", "--epochs", "1",
            "--out", str(tmp_path / "run"))  # fmt: skip
    assert run_mpigd(2, *args).returncode == 0
    again = run_mpigd(2, *args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (tmp_path / "run" / "model.h5").exists()  # the first run is left alone
    assert run_mpigd(2, *args, "--overwrite").returncode == 0


def test_a_rerun_that_fails_in_set_up_leaves_the_previous_run_as_it_was(synth_dir, tmp_path):
    """A failed command changes nothing: --overwrite replaces a run only once the new
    one has set itself up (DEVELOPERS.md: never lose a user's file)."""
    out = tmp_path / "run"
    assert run_mpigd(1, "train", "--data", str(synth_dir / "train"), "--model", "logreg",
                     "--epochs", "1", "--out", str(out)).returncode == 0  # fmt: skip

    def contents():  # the run's files (not the lock, which names its holder)
        return {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".mpigd.lock"}

    before = contents()
    failed = run_mpigd(2, "train", "--data", str(tmp_path / "missing.h5"), "--model", "logreg",
                       "--out", str(out), "--overwrite")  # fmt: skip
    assert failed.returncode == 2 and "missing.h5" in failed.stderr
    assert contents() == before
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "line, words", [('epochs = "5"', "epochs must be int"), ("batch_size = 2.5", "batch-size")]
)
def test_config_file_values_of_the_wrong_type_are_one_clear_error(tmp_path, line, words):
    config = tmp_path / "bad.toml"
    config.write_text(f'data = "x.h5"\nmodel = "logreg"\nout = "{tmp_path / "r"}"\n{line}\n')
    result = run_mpigd(2, "train", "--config", str(config), timeout=60)
    assert result.returncode == 2 and words in result.stderr
    assert "Traceback" not in result.stderr


def test_command_line_errors_print_once_whatever_the_rank_count():
    result = run_mpigd(3, "train", "--model", "bogus", timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("invalid choice") == 1


def test_eval_with_an_unavailable_backend_is_a_clear_error(synth_dir, tmp_path):
    out = tmp_path / "run"
    run_mpigd(1, "train", "--data", str(synth_dir / "train"), "--model", "logreg",
              "--epochs", "1", "--out", str(out))  # fmt: skip
    result = run_mpigd(1, "eval", str(out), "--data", str(synth_dir / "test"), "--backend",
                       "cupy")  # fmt: skip
    assert result.returncode == 2 and "--backend cupy" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_error_on_one_rank_only_ends_every_rank():
    """An MpigdError that only rank 1 raises, outside any agreement, must not hang rank 0."""
    script = (
        "from mpi4py import MPI\n"
        "from mpigd.comm import run_guarded\n"
        "from mpigd.errors import DataError\n"
        "def main():\n"
        "    if MPI.COMM_WORLD.rank == 1:\n"
        "        raise DataError('only here')\n"
        "    MPI.COMM_WORLD.Barrier()\n"
        "raise SystemExit(run_guarded(main))\n"
    )
    command = mpirun_command(2)[:-2] + ["-c", script]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode != 0
    assert "rank 1 of 2 failed: only here" in result.stderr


def test_eval_matches_the_training_objective_with_balanced_class_weights(synth_dir, tmp_path):
    out = tmp_path / "run"
    trained = run_mpigd(2, "train", "--data", str(synth_dir / "train"), "--model", "logreg",
                        "--optimizer", "lbfgs", "--epochs", "5", "--l2", "0.01",
                        "--class-weight", "balanced", "--out", str(out))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    final = json.loads((out / "run.json").read_text())["final_train_loss"]
    evaluated = run_mpigd(2, "eval", str(out), "--data", str(synth_dir / "train"))
    assert json.loads(evaluated.stdout)["objective"] == pytest.approx(final, rel=1e-10)


def test_r2_is_exact_for_targets_with_a_large_offset(tmp_path):
    X, y = make_problem("regression", n_rows=400, d=3)
    data = write_h5(tmp_path / "reg.h5", X, y + 1e8, "regression")
    out = tmp_path / "run"
    trained = run_mpigd(2, "train", "--data", str(data), "--model", "linreg", "--optimizer",
                        "lbfgs", "--epochs", "40", "--out", str(out))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(run_mpigd(2, "eval", str(out), "--data", str(data)).stdout)
    with h5py.File(out / "model.h5", "r") as handle:
        params = handle["params"][()]
    residual = X @ params[:-1] + params[-1] - (y + 1e8)
    expected = 1 - np.sum(residual**2) / np.sum((y - y.mean()) ** 2)
    assert metrics["r2"] == pytest.approx(expected, abs=1e-6)
