"""The run directory: run.json, metrics.jsonl and model.h5 (the run-record contract in
docs/architecture.md). Written by rank 0 only.

Every file that a later reader could mistake for a finished result is written to a
temporary sibling and renamed into place (:mod:`mpigd.record.atomic`), so an
interrupted run leaves the previous complete file or none, never a half-written one.

A rank killed outright (SIGKILL, the out-of-memory killer, a lost node) cannot record
how its run ended, and the launcher then ends the others: run.json keeps saying
``running``. So rank 0 refreshes a heartbeat file every :data:`HEARTBEAT_S` seconds
while it holds the directory, and the readers (:func:`read_run`, :func:`run_status`)
report such a run as ``died``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import mpigd
from mpigd.errors import ConfigError, DataError, MpigdError
from mpigd.paths import check_input_file
from mpigd.record.atomic import replace_atomically

TIMELINE_FILE = "timeline.json"
MODEL_FILE = "model.h5"
CHECKPOINT_FILE = "checkpoint.h5"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
#: Refreshed by rank 0 every :data:`HEARTBEAT_S` seconds while a run holds its directory.
HEARTBEAT_FILE = "heartbeat"
#: The heartbeat's period, in seconds (independent of the epochs' length).
HEARTBEAT_S = 10.0
#: A run whose heartbeat is older than this many periods is gone (:func:`run_status`).
STALE_BEATS = 3
#: run.json statuses of a run that has not ended (as far as run.json knows).
LIVE_STATUSES = ("starting", "running")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: The files an mpigd run writes into its directory: the only ones a run ever removes.
RUN_FILES = (RUN_FILE, METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE, TIMELINE_FILE, HEARTBEAT_FILE)
#: Held (``flock``) by rank 0 for a run's life, so two runs never share a directory.
LOCK_FILE = ".mpigd.lock"


class RunRecord:
    """The files of one run directory. Construct and call methods on rank 0 only.

    What a run may change there is decided in one place: :meth:`claim` checks and locks
    the directory and changes nothing that is there; only :meth:`start`, once set-up
    (and a resume's checks) succeeded, removes the previous run's files, and only the
    :data:`RUN_FILES` a previous mpigd run's ``run.json`` vouches for. A refused or
    failed command leaves a previous run as it was.

    While the directory is this run's (from :meth:`claim` for a new directory, from
    :meth:`start` over a previous run, until :meth:`release`), a daemon thread refreshes
    the heartbeat file every :data:`HEARTBEAT_S` seconds.
    """

    def __init__(self, out_dir: str) -> None:
        self.given = out_dir
        self.dir = Path(out_dir)
        self.run: dict = {}
        #: Names this run's run.json, so an abort marks this run's record and no other.
        self.run_id = uuid.uuid4().hex
        self._lock = None
        self._heartbeat: _Heartbeat | None = None
        self._previous_run = False
        self._started = False

    def claim(self, config: dict, resume: bool, overwrite: bool, inputs) -> None:
        """Check the run directory and lock it, before anything else can fail.

        Refuses (ConfigError, nothing changed): an empty ``--out``, one that is a file or
        lies inside an input dataset (``inputs``: paths, None for absent ones), one that
        another run holds, one with files a run writes but no mpigd run.json (someone
        else's), and one that holds a run unless ``overwrite`` (start over) or
        ``resume`` (continue it; TrainConfig refuses the two together). A new directory gets
        run.json with status ``starting`` and its heartbeat starts; an existing run's
        files are left alone until :meth:`start`. A refused claim removes the lock file
        again if it created it.
        """
        if not str(self.given).strip():
            raise ConfigError(f"--out {self.given!r} is empty: name the run directory")
        _check_not_inside_inputs(self.dir, inputs)
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"--out {self.dir} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        _check_no_symlinks(self.dir)
        lock_was_there = (self.dir / LOCK_FILE).exists()
        self._lock = _lock(self.dir)
        try:
            self._previous_run = _holds_a_run(self.dir)
            if self._previous_run and not (resume or overwrite):
                raise ConfigError(
                    f"{self.dir} already holds a run (run.json); pass --overwrite to replace "
                    "it or --resume to continue it"
                )
        except MpigdError:
            if not lock_was_there:  # unlinked while still held: no other claim has it
                (self.dir / LOCK_FILE).unlink(missing_ok=True)
            self.release()
            raise
        _sign(self._lock)
        self.run = {"config": config, "run_id": self.run_id, "start_time": now_iso(),
                    "status": "starting"}  # fmt: skip
        if not self._previous_run:
            self._write_run()
            self._heartbeat = _Heartbeat(self.dir / HEARTBEAT_FILE)

    def start(self, run_info: dict, keep_epochs: int | None = None) -> None:
        """Write the full run.json once set-up has succeeded (status ``running``).

        Removes the previous run's model.h5 and timeline.json (only a completed run
        leaves them) and its leftover temporary files; ``keep_epochs`` (a resume from a
        checkpoint) keeps the checkpoint and the metrics lines of epochs up to that one,
        else metrics.jsonl and checkpoint.h5 go too. A metrics line torn by a crash
        mid-write, or one that is not an epoch's row, is dropped.

        Everything that can fail on the previous run's files (reading the metrics to
        keep) comes first, then run.json says ``running``, and only then is anything
        removed: a failure never leaves a previous run's record claiming files it lost.
        """
        metrics = self.dir / METRICS_FILE
        kept = []
        if keep_epochs is not None and metrics.exists():
            kept = [line for line, row in _whole_rows(metrics) if row["epoch"] <= keep_epochs]
        self.run = dict(run_info, run_id=self.run_id,
                        start_time=self.run.get("start_time", now_iso()),
                        end_time=None, status="running")  # fmt: skip
        self._started = True
        self._write_run()
        stale = [MODEL_FILE, TIMELINE_FILE]
        if keep_epochs is None:
            stale += [METRICS_FILE, CHECKPOINT_FILE]
        for name in stale:
            (self.dir / name).unlink(missing_ok=True)
        for name in RUN_FILES:
            for leftover in self.dir.glob(f".{name}.tmp-*"):
                leftover.unlink(missing_ok=True)
        replace_atomically(
            metrics, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept))
        )
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self.dir / HEARTBEAT_FILE)

    def append_metrics(self, row: dict) -> None:
        """Add one epoch's JSON line to metrics.jsonl, flushed so readers see it at once."""
        with open(self.dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def finish(self, status: str, **fields) -> None:
        """Record how the run ended (``completed``, ``failed``, ...) and why; release the
        directory. A run that failed before :meth:`start` over a previous run leaves
        that run's record as it was."""
        try:
            if self._started or not self._previous_run:
                self.run.update(fields, status=status, end_time=now_iso())
                self._write_run()
        finally:
            self.release()

    def release(self) -> None:
        """Stop the heartbeat and give up the directory's lock (the OS does so too when
        the process ends)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def save_model(self, params: np.ndarray, model_info: dict, arrays: dict | None = None) -> None:
        """Write model.h5: the flat ``params``, the model's other ``arrays`` (a tree
        ensemble's trees, as group ``model``) and, as JSON attribute ``model``, its config."""

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as handle:
                handle.create_dataset("params", data=params)
                write_arrays(handle, "model", arrays)
                handle.attrs["model"] = json.dumps(model_info)
                handle.attrs["mpigd_version"] = mpigd.__version__

        replace_atomically(self.dir / MODEL_FILE, write)

    def _write_run(self) -> None:
        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps(self.run, indent=2, default=str) + "\n")

        replace_atomically(self.dir / RUN_FILE, write)


def mark_aborted(run_dir: str, message: str, run_id: str) -> None:
    """Record in run.json that the job was aborted (any rank may call this, once), if
    run.json is the record of run ``run_id`` (not a previous run's)."""
    path = Path(run_dir) / RUN_FILE
    try:
        run = json.loads(path.read_text())
        if run.get("run_id") != run_id:
            return
        run.update(status="aborted", stop_reason=message, end_time=now_iso())
        replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(run, indent=2) + "\n"))
    except (OSError, ValueError):
        pass  # best effort: the job is being torn down either way


def read_run(run_dir) -> tuple[dict, list[dict]]:
    """A run directory's run.json, its status as it stands (:func:`run_status`: a run
    killed outright is ``died``), and its metrics.jsonl rows ([] when it has none yet;
    a line torn by a crash mid-write is dropped, with a note on stderr).

    For the experiments, which read run records and never console output. OSError or
    ValueError (no or a broken run.json) is left to the caller to interpret. Writes
    nothing.
    """
    directory = Path(run_dir)
    path = directory / RUN_FILE
    run = json.loads(path.read_text())
    if not isinstance(run, dict):
        raise ValueError(f"{path} is not an mpigd run record")
    metrics = directory / METRICS_FILE
    rows = [row for _, row in _whole_rows(metrics)] if metrics.is_file() else []
    return run_status(directory, run), rows


def run_status(run_dir, run: dict) -> dict:
    """``run`` (run_dir's run.json) with its status as it stands. Writes nothing.

    A run that run.json says is ``starting`` or ``running`` gets ``last_heartbeat`` (ISO
    time of the heartbeat file's last refresh; None if it has none) and, if the run is
    gone, status ``died``, ``recorded_status`` (what run.json says) and a
    ``stop_reason``. Gone: when rank 0 ran on this host, exactly, no process holds the
    run's lock; else (another host, where ``flock`` over a network file system cannot
    be trusted) its heartbeat is older than :data:`STALE_BEATS` periods. A run that
    ended recording how is returned as it is.
    """
    status = run.get("status")
    if status not in LIVE_STATUSES:
        return run
    directory = Path(run_dir)
    beat = _heartbeat_time(directory)
    seen = _iso(beat) if beat is not None else None
    run = dict(run, last_heartbeat=seen)
    host = _rank0_host(directory, run)
    held = _lock_held(directory) if host == os.uname().nodename else None
    if held is not None:
        if held:
            return run
        why = f"no process on {host} holds its lock"
    elif beat is not None and time.time() - beat > STALE_BEATS * HEARTBEAT_S:
        why = f"its heartbeat stopped {time.time() - beat:.0f} s ago"
    else:
        return run
    reason = (
        "ended without recording how, as when a rank is killed outright (SIGKILL, the "
        f"out-of-memory killer, a lost node): run.json says {status!r}, but {why}"
    )
    return dict(run, status="died", recorded_status=status, stop_reason=reason)


def write_arrays(handle, name: str, arrays: dict | None) -> None:
    """Write ``arrays`` (name -> numpy array) as datasets of a new group ``name`` of the
    open HDF5 file ``handle``; nothing when there are none."""
    if arrays:
        group = handle.create_group(name)
        for key, value in arrays.items():
            group.create_dataset(key, data=value)


def read_arrays(handle, name: str) -> dict | None:
    """The datasets of group ``name`` of the open HDF5 file ``handle`` (as
    :func:`write_arrays` wrote them), or None when there is no such group."""
    if name not in handle:
        return None
    group = handle[name]
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{name!r} is not a group")
    for key, item in group.items():
        if not isinstance(item, h5py.Dataset):
            raise ValueError(f"{name}/{key} is not a dataset")
    return {key: group[key][()] for key in group}


def load_model(run_dir: str) -> tuple[np.ndarray, dict, dict | None]:
    """Read ``RUN_DIR/model.h5``: the flat parameters, the model config dict and the
    model's other arrays (a tree ensemble's; None for the other models)."""
    path = Path(run_dir) / MODEL_FILE
    if not os.path.lexists(path):
        raise DataError(f"{path} not found: is {run_dir} a finished mpigd run directory?")
    check_input_file(path, "model file", expected="an HDF5 file written by mpigd train")
    try:
        with h5py.File(path, "r") as handle:
            return (handle["params"][()], json.loads(handle.attrs["model"]),
                    read_arrays(handle, "model"))  # fmt: skip
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a readable mpigd model file: {exc}") from exc


class _Heartbeat:
    """Refreshes ``path`` at once, then every :data:`HEARTBEAT_S` seconds from a daemon
    thread (it never keeps the process alive), until :meth:`stop`. Failing to write is
    ignored: a heartbeat never crashes or slows a run."""

    def __init__(self, path: Path) -> None:
        self._stopping = threading.Event()
        _beat(path)
        self._thread = threading.Thread(target=_beat_until, args=(path, self._stopping),
                                        name="mpigd-heartbeat", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        """End the thread: once this returns it writes no more (unless a write hung for
        longer than the second this waits)."""
        self._stopping.set()
        self._thread.join(timeout=1.0)


def _beat_until(path: Path, stopping: threading.Event) -> None:
    while not stopping.wait(HEARTBEAT_S):
        _beat(path)


def _beat(path: Path) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(f"{now_iso()} pid {os.getpid()} on {os.uname().nodename}\n")
    except Exception:  # noqa: BLE001 - never crash a run (the thread's excepthook aborts)
        pass


def _heartbeat_time(directory: Path) -> float | None:
    """The heartbeat file's last refresh (epoch seconds), None if there is none."""
    try:
        return (directory / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _rank0_host(directory: Path, run: dict) -> str | None:
    """The host of the run's rank 0: run.json's, else (a run still ``starting``) the one
    the lock file names; None if neither says."""
    hosts = run.get("hosts")
    if isinstance(hosts, list) and hosts and isinstance(hosts[0], str):
        return hosts[0]
    try:
        holder = (directory / LOCK_FILE).read_text()
    except (OSError, ValueError):
        return None
    found = re.match(r"pid \d+ on (\S+)", holder)
    return found.group(1) if found else None


def _lock_held(directory: Path) -> bool | None:
    """Whether a process (this one included) holds the directory's lock, tried on a
    separate open file description and released at once; None if it cannot be told
    (no lock file, no permission, a file system without ``flock``). Creates nothing."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _check_not_inside_inputs(out: Path, inputs) -> None:
    """ConfigError if ``out`` is an input dataset, lies inside a dataset directory, or is
    the directory of an input ``*.h5`` file (its files would become shards, or a shard
    be replaced). ``realpath``, unlike
    ``Path.resolve`` on Python 3.11, leaves a symlink loop for the data check to name."""
    target = Path(os.path.realpath(out))
    for given in inputs:
        if not given:
            continue
        data = Path(os.path.realpath(given))
        if target == data or (data.is_dir() and data in target.parents):
            raise ConfigError(
                f"--out {out} is inside the dataset {given}; put the run directory elsewhere"
            )
        if data.suffix == ".h5" and data.parent == target:
            raise ConfigError(
                f"--out {out} holds the dataset file {given}: the run's checkpoint.h5 and "
                "model.h5 would become shards of that directory; put the run directory "
                "elsewhere"
            )


def _check_no_symlinks(directory: Path) -> None:
    """ConfigError if a file a run writes in ``directory`` (or its lock) is a symbolic
    link: writing it would change the file it points to, which no run wrote."""
    for name in (*RUN_FILES, LOCK_FILE):
        if (directory / name).is_symlink():
            raise ConfigError(
                f"{directory / name} is a symbolic link (to {os.readlink(directory / name)}); "
                "a run writes only files of its own there: remove the link or choose another "
                "--out"
            )


def _lock(directory: Path):
    """The run directory's lock, held (an open file); ConfigError if another run has it.

    Opened without following a symbolic link. Who holds it is written by :func:`_sign`
    once the claim succeeded, so a refused claim leaves the file as it was."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock {directory / LOCK_FILE}: {exc}") from exc
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"{directory} is in use by another mpigd run ({holder}); wait for it or choose "
            "another --out"
        ) from None
    return handle


def _sign(handle) -> None:
    """Write who holds the lock ``handle`` (pid and host), for a refused second run."""
    handle.seek(0)
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()


#: What a run leaves that is worth keeping: a directory with none of them holds no
#: result, only the record of a run that failed before its first epoch.
RESULT_FILES = (METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE, TIMELINE_FILE)


def _holds_a_run(directory: Path) -> bool:
    """Whether ``directory`` holds a previous mpigd run; ConfigError if it holds files a
    run writes that no mpigd run.json vouches for (they are someone else's).

    A run that failed leaving no :data:`RESULT_FILES` (a typo in ``--data``, say) does
    not count: rerunning the corrected command needs no ``--overwrite``."""
    record = directory / RUN_FILE
    if record.exists():
        try:
            run = json.loads(record.read_text())
        except (OSError, ValueError):
            run = None
        if isinstance(run, dict) and "config" in run and "status" in run:
            results = [name for name in RESULT_FILES if (directory / name).exists()]
            return bool(results) or run["status"] != "failed"
        raise ConfigError(f"{record} is not an mpigd run record; choose another --out")
    foreign = [name for name in RUN_FILES if (directory / name).exists()]
    if foreign:
        raise ConfigError(
            f"{directory} holds {', '.join(foreign)} but no mpigd run.json: they are not "
            "an mpigd run's, and a run would replace them; choose another --out"
        )
    return False


def _whole_rows(path: Path) -> list[tuple[str, dict]]:
    """``(line, parsed row)`` of each line of metrics.jsonl that is an epoch's row (a
    JSON object with an integer ``epoch``); a line torn by an interrupted write, or any
    other line, is dropped with a note."""
    whole = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            whole.append((line, row))
        else:
            print(f"mpigd: dropping line {number} of {path}: not an epoch's metrics row "
                  "(torn by an interrupted write?)", file=sys.stderr, flush=True)  # fmt: skip
    return whole
