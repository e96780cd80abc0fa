"""What a run may do to its directory: refuse without changing anything, replace only an
mpigd run's files and only when asked, and never share a directory with another run.
The rules live in one place, :class:`mpigd.record.RunRecord` (claim, then start)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import h5py
import pytest
from helpers import make_problem, run_mpigd, write_h5

from mpigd.config import TrainConfig
from mpigd.errors import CollectiveError, ConfigError
from mpigd.record import RunRecord, read_run, run_dir
from mpigd.run import train

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = make_problem("binary", n_rows=300, d=4)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


def config(data, out, **options) -> TrainConfig:
    base = dict(data=data, out=str(out), model="logreg", optimizer="gd", epochs=2,
                progress="quiet")  # fmt: skip
    return TrainConfig(**{**base, **options})


def files(directory) -> dict[str, bytes]:
    """Every file's bytes, the lock included (a refused claim does not even re-sign it)."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_a_refused_resume_leaves_the_completed_run_as_it_was(data, tmp_path):
    train(config(data, tmp_path / "run"))
    before = files(tmp_path / "run")
    with pytest.raises(CollectiveError, match="config lr: checkpoint 0.1, now 0.2"):
        train(config(data, tmp_path / "run", lr=0.2, resume=True))
    assert files(tmp_path / "run") == before


def test_a_resume_from_a_corrupt_checkpoint_leaves_the_run_as_it_was(data, tmp_path):
    train(config(data, tmp_path / "run"))
    (tmp_path / "run" / "checkpoint.h5").write_bytes(b"not hdf5")
    before = files(tmp_path / "run")
    with pytest.raises(CollectiveError, match="not a readable mpigd checkpoint"):
        train(config(data, tmp_path / "run", resume=True))
    assert files(tmp_path / "run") == before


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("name", ["model.h5", "checkpoint.h5", "metrics.jsonl", "run.json"])
def test_files_no_mpigd_run_wrote_are_never_replaced(data, tmp_path, name, overwrite):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("the user's own file\n")
    (out / "notes.txt").write_text("kept\n")
    with pytest.raises(CollectiveError, match=r"choose another --out"):
        train(config(data, out, overwrite=overwrite))
    assert files(out) == {name: b"the user's own file\n", "notes.txt": b"kept\n"}


def test_an_overwrite_replaces_only_the_previous_runs_files(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out, epochs=3))
    (out / "notes.txt").write_text("kept\n")
    (out / ".checkpoint.h5.tmp-12345").write_bytes(b"left by a crash")
    train(config(data, out, overwrite=True))
    assert (out / "notes.txt").read_text() == "kept\n"
    assert not (out / ".checkpoint.h5.tmp-12345").exists()
    assert [json.loads(line)["epoch"] for line in open(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "where, words",
    [("", "--out '' is empty"), ("data-dir", "is inside the dataset"),
     ("data-file", "is inside the dataset")],
)  # fmt: skip
def test_an_out_that_is_empty_or_inside_the_data_is_refused(tmp_path, where, words):
    X, y = make_problem("binary", n_rows=300, d=4)
    shards = tmp_path / "shards"
    write_h5(shards / "part-0.h5", X, y, "binary", 2)
    out = {"": "", "data-dir": str(shards / "run"), "data-file": str(shards / "part-0.h5")}
    with pytest.raises(CollectiveError, match=words):
        train(config(str(shards), out[where]))
    assert sorted(p.name for p in shards.iterdir()) == ["part-0.h5"]


def test_resume_and_overwrite_together_are_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="pass one of them"):
        train(config(data, tmp_path / "run", resume=True, overwrite=True))
    assert not (tmp_path / "run").exists()


def test_a_second_run_into_a_directory_in_use_is_refused(data, tmp_path):
    out = tmp_path / "run"
    holder = RunRecord(str(out))
    holder.claim({}, resume=False, overwrite=False, inputs=[data])
    try:
        second = run_mpigd(2, "train", "--data", data, "--model", "logreg", "--out", str(out),
                           "--quiet", timeout=60)  # fmt: skip
    finally:
        holder.release()
    assert second.returncode == 2 and "in use by another mpigd run" in second.stderr
    assert second.stderr.count("mpigd: error") == 1
    assert json.loads((out / "run.json").read_text())["status"] == "starting"


def test_a_resume_drops_a_metrics_line_torn_by_a_crash(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out, epochs=2))
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "train_lo')
    train(config(data, out, epochs=4, resume=True))
    assert [json.loads(line)["epoch"] for line in open(out / "metrics.jsonl")] == [1, 2, 3, 4]
    with h5py.File(out / "checkpoint.h5", "r") as handle:
        assert handle.attrs["epoch"] == 4


# A run killed outright cannot record how it ended: the readers say it died.


def live_record(out, status="running", host="elsewhere") -> dict:
    """A run directory whose run.json says ``status``; rank 0 on ``host``; lock free."""
    out.mkdir(parents=True, exist_ok=True)
    run = {"config": {}, "status": status, "run_id": "x", "start_time": "then"}
    if host is not None:
        run["hosts"] = [host, host]
    (out / "run.json").write_text(json.dumps(run))
    (out / ".mpigd.lock").write_text(f"pid 1 on {host or 'elsewhere'}\n")
    (out / "heartbeat").write_text("then\n")
    return run


def age_heartbeat(out, seconds: float) -> float:
    when = time.time() - seconds
    os.utime(out / "heartbeat", (when, when))
    return when


@pytest.mark.parametrize("status", ["starting", "running"])
def test_a_run_on_another_host_whose_heartbeat_stopped_died(tmp_path, status):
    out = tmp_path / "run"
    live_record(out, status)
    before = files(out)
    assert read_run(out)[0]["status"] == status  # fresh heartbeat: still going
    when = age_heartbeat(out, 3 * run_dir.HEARTBEAT_S + 5)
    run, _ = read_run(out)
    assert run["status"] == "died" and run["recorded_status"] == status
    expected = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")
    assert run["last_heartbeat"] == expected
    assert "heartbeat stopped" in run["stop_reason"] and "killed outright" in run["stop_reason"]
    assert files(out) == before  # a reader writes nothing


def test_a_run_on_another_host_is_judged_by_its_heartbeat_not_its_lock(tmp_path):
    out = tmp_path / "run"
    live_record(out, host="elsewhere")  # the lock is free, but flock across hosts lies
    age_heartbeat(out, 2 * run_dir.HEARTBEAT_S)
    assert read_run(out)[0]["status"] == "running"


def test_on_this_host_a_free_lock_means_died_at_once(tmp_path):
    out = tmp_path / "run"
    live_record(out, host=os.uname().nodename)  # fresh heartbeat, nobody holds the lock
    run, _ = read_run(out)
    assert run["status"] == "died" and "holds its lock" in run["stop_reason"]
    assert run["last_heartbeat"] is not None


def test_a_run_that_holds_its_directory_is_live_and_its_heartbeat_beats(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "HEARTBEAT_S", 0.05)
    out = tmp_path / "run"
    holder = RunRecord(str(out))
    holder.claim({}, resume=False, overwrite=False, inputs=[])
    beating = holder._heartbeat._thread
    try:
        first = (out / "heartbeat").stat().st_mtime_ns
        age_heartbeat(out, 3600)  # the reader trusts the lock on this host
        run, _ = read_run(out)  # a run at "starting": its host is in the lock file
        assert run["status"] == "starting" and run["last_heartbeat"] is not None
        deadline = time.monotonic() + 10
        while (out / "heartbeat").stat().st_mtime_ns < first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (out / "heartbeat").stat().st_mtime_ns >= first  # refreshed by the thread
    finally:
        holder.release()
    stopped = (out / "heartbeat").stat().st_mtime_ns
    time.sleep(0.2)
    assert (out / "heartbeat").stat().st_mtime_ns == stopped  # the thread has ended
    assert beating.daemon and not beating.is_alive()
    assert read_run(out)[0]["status"] == "died"  # released without finishing


def test_a_finished_run_is_reported_as_recorded(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out))
    age_heartbeat(out, 3600)
    run, rows = read_run(out)
    assert run["status"] == "completed" and "last_heartbeat" not in run and len(rows) == 2


def test_read_run_drops_a_metrics_line_torn_by_a_crash(tmp_path):
    out = tmp_path / "run"
    live_record(out, status="completed")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "train_lo')
    assert read_run(out)[1] == [{"epoch": 1}]


def test_a_claim_over_a_previous_run_leaves_its_heartbeat_until_start(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out))
    age_heartbeat(out, 3600)
    before = files(out)
    record = RunRecord(str(out))
    record.claim({}, resume=False, overwrite=True, inputs=[data])
    try:
        assert files(out) == before
        record.start({"config": {}})
        assert time.time() - (out / "heartbeat").stat().st_mtime < 60
    finally:
        record.release()


def test_a_refused_claim_removes_the_lock_file_it_created(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.h5").write_text("the user's own file\n")
    with pytest.raises(ConfigError, match="choose another --out"):
        RunRecord(str(out)).claim({}, resume=False, overwrite=False, inputs=[])
    assert sorted(p.name for p in out.iterdir()) == ["model.h5"]


def test_a_refused_claim_keeps_a_lock_file_that_was_there(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out))
    with pytest.raises(ConfigError, match="already holds a run"):
        RunRecord(str(out)).claim({}, resume=False, overwrite=False, inputs=[data])
    assert (out / ".mpigd.lock").exists()


def test_a_heartbeat_that_cannot_be_written_is_ignored(tmp_path):
    beat = run_dir._Heartbeat(tmp_path / "gone" / "heartbeat")  # no such directory
    beat.stop()


def test_a_run_killed_outright_is_reported_died_by_every_reader(data, tmp_path):
    out = tmp_path / "sweep"
    grid = tmp_path / "grid.toml"
    grid.write_text(f'data = "{data}"\nmodel = "logreg"\n[grid]\nlr = [0.1]\n')
    killed = run_mpigd(2, "train", "--data", data, "--model", "logreg", "--optimizer", "sgd",
                       "--batch-size", "10", "--epochs", "50", "--out", str(out / "cfg-000"),
                       "--quiet", fault="kill@1:5", timeout=60)  # fmt: skip
    assert killed.returncode != 0
    assert json.loads((out / "cfg-000" / "run.json").read_text())["status"] == "running"
    run, _ = read_run(out / "cfg-000")
    assert run["status"] == "died" and run["last_heartbeat"] is not None
    collected = run_mpigd(1, "sweep", str(grid), "--collect", "--out", str(out), timeout=60)
    assert "cfg-000 lr=0.1: died" in collected.stdout
    assert collected.returncode == 2 and "not every config completed (died cfg-000)" in (
        collected.stderr
    )
    row = json.loads((out / "sweep.json").read_text())["configs"][0]
    assert row["status"] == "died" and "killed outright" in row["error"]
    evaluated = run_mpigd(2, "eval", str(out / "cfg-000"), "--data", data, timeout=60)
    assert evaluated.returncode == 2
    assert f"the run died at {run['last_heartbeat']} (its last heartbeat)" in evaluated.stderr
    assert evaluated.stderr.count("mpigd: error") == 1


def test_a_resume_that_cannot_read_the_metrics_changes_nothing(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out))
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()  # unreadable as a file
    before = files(out)
    with pytest.raises(CollectiveError, match="cannot write the run directory"):
        train(config(data, out, epochs=3, resume=True))
    assert files(out) == before and (out / "model.h5").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_a_metrics_line_that_is_not_an_epoch_row_is_dropped_on_resume(data, tmp_path, capfd):
    out = tmp_path / "run"
    train(config(data, out, optimizer="sgd", batch_size=50))
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write("5\n")
    train(config(data, out, optimizer="sgd", batch_size=50, epochs=3, resume=True))
    assert "dropping line 3" in capfd.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]


@pytest.mark.parametrize("name", [".mpigd.lock", "metrics.jsonl", "run.json"])
def test_a_run_file_that_is_a_symlink_is_refused_and_its_target_kept(data, tmp_path, name):
    out, thesis = tmp_path / "run", tmp_path / "thesis.txt"
    train(config(data, out))
    thesis.write_text("years of work\n")
    (out / name).unlink()
    os.symlink(thesis, out / name)
    with pytest.raises(CollectiveError, match=f"{name} is a symbolic link"):
        train(config(data, out, epochs=3, resume=True))
    assert thesis.read_text() == "years of work\n"


def test_an_out_holding_the_dataset_file_is_refused(tmp_path):
    X, y = make_problem("binary", n_rows=60, d=3)
    shard = write_h5(tmp_path / "dd" / "part-00000.h5", X, y, "binary", 2)
    with pytest.raises(CollectiveError, match="would become shards"):
        train(config(str(shard), tmp_path / "dd"))
    assert sorted(p.name for p in (tmp_path / "dd").iterdir()) == ["part-00000.h5"]


def test_a_run_that_failed_before_its_first_epoch_is_no_obstacle_to_the_rerun(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CollectiveError, match="does not exist"):
        train(config(data + ".typo", out))
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    train(config(data, out))  # the corrected command, no --overwrite needed
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
