"""An input path that is not a regular file (a FIFO, a device, a directory, a broken or
looping symlink) stops the command at once with one message saying what it is: nothing
blocks in open(), and no shard of a directory is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, make_problem, run_mpigd, write_h5, write_sharded

from mpigd.config import read_toml
from mpigd.data import open_dataset, read_idx, read_rows
from mpigd.data.csv_reader import read_csv
from mpigd.errors import ConfigError, DataError
from mpigd.paths import DATASET, check_input_file, dataset_files
from mpigd.record import load_model

pytestmark = pytest.mark.timeout(60)

SHARD_RULE = "every *.h5 entry of dataset directory"


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def mpigd(*args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    """``python -m mpigd ARGS`` without mpirun; stdin closed so nothing can wait on it."""
    return subprocess.run(
        [sys.executable, "-m", "mpigd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def one_error(result: subprocess.CompletedProcess) -> str:
    """The single ``mpigd: error`` line of a command that exited 2."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpigd: error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# check_input_file


def test_a_regular_file_and_a_symlink_to_one_pass(tmp_path):
    target = tmp_path / "a.toml"
    target.write_text("")
    (tmp_path / "link.toml").symlink_to(target)
    assert check_input_file(target, "config file") == str(target)
    assert check_input_file(tmp_path / "link.toml", "config file") == str(tmp_path / "link.toml")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe)"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.symlink_to(p.parent / "gone"), "is a broken symbolic link to "),
        (lambda p: p.symlink_to(p), "is a symbolic link loop"),
        (lambda p: p.symlink_to("/dev/null"), "is a symbolic link to /dev/null, which is a char"),
        (lambda p: None, "does not exist"),
    ],
    ids=["fifo", "directory", "broken-link", "link-loop", "link-to-device", "missing"],
)
def test_anything_but_a_regular_file_is_refused_with_what_it_is(tmp_path, make, words):
    path = tmp_path / "x"
    make(path)
    with pytest.raises(DataError) as caught:
        check_input_file(path, "--flag", expected="a thing")
    assert str(caught.value).startswith(f"--flag {path} {words}")
    assert str(caught.value).endswith("; expected a thing")


def test_a_broken_symlink_names_its_target(tmp_path):
    (tmp_path / "x").symlink_to("elsewhere/gone.h5")
    with pytest.raises(DataError, match="is a broken symbolic link to elsewhere/gone.h5;"):
        check_input_file(tmp_path / "x", "model file")


def test_a_character_device_is_refused():
    with pytest.raises(DataError, match="^dataset path /dev/zero is a character device; "):
        open_dataset("/dev/zero")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "secret.h5"
    path.write_text("")
    path.chmod(0)
    with pytest.raises(DataError, match="is not readable \\(permission denied\\)"):
        check_input_file(path, "--data")


def test_the_error_class_is_the_callers(fifo):
    with pytest.raises(ConfigError, match="config file .* is a FIFO"):
        check_input_file(fifo, "config file", ConfigError)


# dataset_files and open_dataset


def test_a_fifo_dataset_is_refused_with_what_a_dataset_may_be(fifo):
    with pytest.raises(DataError) as caught:
        open_dataset(fifo)
    assert str(caught.value) == f"dataset path {fifo} is a FIFO (named pipe); expected {DATASET}"


@pytest.fixture
def shards(tmp_path):
    X, y = make_problem("binary", n_rows=30, d=3)
    return write_sharded(tmp_path / "shards", X, y, "binary", 2, sizes=(10, 10))


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.symlink_to(p.parent / "moved.h5"), "is a broken symbolic link to "),
        (lambda p: p.symlink_to(p), "is a symbolic link loop"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe)"),
    ],
    ids=["broken-link", "link-loop", "directory", "fifo"],
)
def test_a_bad_shard_entry_is_an_error_not_skipped(shards, make, words):
    bad = shards / "x.h5"
    make(bad)
    with pytest.raises(DataError) as caught:
        open_dataset(shards)
    message = str(caught.value)
    assert message.startswith(f"shard {bad} {words}")
    assert f"{SHARD_RULE} {shards} is a shard" in message


def test_a_symlinked_shard_is_read_like_a_file(shards, tmp_path):
    elsewhere = tmp_path / "elsewhere.h5"
    (shards / "part-00002.h5").rename(elsewhere)
    (shards / "part-00002.h5").symlink_to(elsewhere)
    info = open_dataset(shards)
    assert info.rows_per_file == (10, 10, 10)
    assert read_rows(info, 0, 30).X.shape == (30, 3)


def test_hidden_and_other_entries_are_not_shards(shards):
    os.mkfifo(shards / "notes.fifo")
    (shards / ".partial.h5").symlink_to(shards / "gone.h5")
    assert [os.path.basename(f) for f in dataset_files(shards, "--data")] == [
        "part-00000.h5",
        "part-00001.h5",
        "part-00002.h5",
    ]


# every other file a command opens by name


def test_toml_csv_idx_and_model_files_are_checked_before_opening(fifo, tmp_path):
    with pytest.raises(ConfigError, match=f"^grid file {fifo} is a FIFO .*; expected a TOML file$"):
        read_toml(fifo, "grid file")
    with pytest.raises(DataError, match=f"^CSV file {fifo} is a FIFO"):
        read_csv(str(fifo), 0, None)
    with pytest.raises(DataError, match=f"^IDX file {fifo} is a FIFO"):
        read_idx(fifo)
    os.mkfifo(tmp_path / "model.h5")
    with pytest.raises(DataError, match="^model file .*model.h5 is a FIFO"):
        load_model(str(tmp_path))


# the commands, end to end


@pytest.mark.parametrize("flag", ["--data", "--test-data"])
def test_train_on_two_ranks_with_a_fifo_fails_at_once(flag, fifo, tmp_path):
    X, y = make_problem("binary", n_rows=30, d=3)
    good = write_h5(tmp_path / "good.h5", X, y, "binary", 2)
    out = tmp_path / "run"
    data = ["--data", str(fifo)] if flag == "--data" else ["--data", str(good), flag, str(fifo)]
    began = time.monotonic()
    result = run_mpigd(2, "train", *data, "--model", "logreg", "--out", str(out), "--quiet",
                       timeout=50)  # fmt: skip
    assert time.monotonic() - began < 45
    message = f"{flag} {fifo} is a FIFO (named pipe); expected {DATASET}"
    assert one_error(result) == f"mpigd: error: {message}"
    assert not (out / "model.h5").exists()
    run = json.loads((out / "run.json").read_text())
    assert (run["status"], run["stop_reason"]) == ("failed", message)


def test_eval_with_a_fifo_as_data_fails_at_once(fifo, tmp_path):
    X, y = make_problem("binary", n_rows=30, d=3)
    good = write_h5(tmp_path / "good.h5", X, y, "binary", 2)
    out = tmp_path / "run"
    trained = mpigd("train", "--data", str(good), "--model", "logreg", "--epochs", "1",
                    "--out", str(out), "--quiet")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert f"--data {fifo} is a FIFO" in one_error(mpigd("eval", str(out), "--data", str(fifo)))


def test_eval_of_a_run_whose_model_is_a_fifo_fails_at_once(tmp_path):
    os.mkfifo(tmp_path / "model.h5")
    words = f"model file {tmp_path / 'model.h5'} is a FIFO (named pipe)"
    assert words in one_error(mpigd("eval", str(tmp_path), "--data", str(tmp_path)))


def test_data_inspect_of_a_fifo_fails_at_once(fifo):
    assert f"dataset path {fifo} is a FIFO" in one_error(mpigd("data", "inspect", str(fifo)))


def test_train_with_a_fifo_config_fails_at_once(fifo, tmp_path):
    error = one_error(mpigd("train", "--config", str(fifo), "--out", str(tmp_path / "run")))
    assert error == f"mpigd: error: config file {fifo} is a FIFO (named pipe); expected a TOML file"
    assert not (tmp_path / "run").exists()


def test_data_import_of_a_fifo_fails_at_once(fifo, tmp_path):
    error = one_error(mpigd("data", "import", str(fifo), "--format", "csv",
                            "--out", str(tmp_path / "out.h5")))  # fmt: skip
    assert error == f"mpigd: error: input file {fifo} is a FIFO (named pipe); expected a csv file"


def test_data_import_with_fifo_labels_or_like_fails_at_once(fifo, tmp_path):
    images = tmp_path / "images.idx"
    images.write_bytes(b"\x00\x00\x08\x03" + np.array([2, 1, 1], ">u4").tobytes() + b"\x01\x02")
    labels = ["--labels", str(fifo)]
    error = one_error(mpigd("data", "import", str(images), "--format", "idx", *labels,
                            "--out", str(tmp_path / "out.h5")))  # fmt: skip
    assert f"IDX label file {fifo} is a FIFO (named pipe)" in error
    csv = tmp_path / "t.csv"
    csv.write_text("0,1.5\n1,2.5\n")
    error = one_error(mpigd("data", "import", str(csv), "--format", "csv", "--like", str(fifo),
                            "--out", str(tmp_path / "out.h5")))  # fmt: skip
    assert f"dataset path {fifo} is a FIFO" in error


def test_inspect_skips_no_shard_and_reads_a_symlinked_one(shards, tmp_path):
    (shards / "part-00003.h5").symlink_to(tmp_path / "not-there.h5")
    error = one_error(mpigd("data", "inspect", str(shards)))
    assert f"shard {shards / 'part-00003.h5'} is a broken symbolic link to " in error
    (shards / "part-00003.h5").unlink()
    (shards / "part-00002.h5").rename(tmp_path / "moved.h5")
    (shards / "part-00002.h5").symlink_to(tmp_path / "moved.h5")
    shown = mpigd("data", "inspect", str(shards))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["rows"] == 30


def test_train_on_a_symlink_loop_names_it_and_writes_no_run(tmp_path):
    loop = tmp_path / "loop.h5"
    os.symlink(loop, loop)
    out = tmp_path / "run"
    error = one_error(mpigd("train", "--data", str(loop), "--model", "logreg", "--out", str(out)))
    assert f"--data {loop} is a symbolic link loop" in error
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
