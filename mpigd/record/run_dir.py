"""The run directory: run.json, metrics.jsonl and model.h5 (the run-record contract in
docs/architecture.md). Written by rank 0 only.

Every file that a later reader could mistake for a finished result is written to a
temporary sibling and renamed into place (:mod:`mpigd.record.atomic`), so an
interrupted run leaves the previous complete file or none, never a half-written one.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
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


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: The files an mpigd run writes into its directory: the only ones a run ever removes.
RUN_FILES = (RUN_FILE, METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE, TIMELINE_FILE)
#: Held (``flock``) by rank 0 for a run's life, so two runs never share a directory.
LOCK_FILE = ".mpigd.lock"


class RunRecord:
    """The files of one run directory. Construct and call methods on rank 0 only.

    What a run may change there is decided in one place: :meth:`claim` checks and locks
    the directory and changes nothing that is there; only :meth:`start`, once set-up
    (and a resume's checks) succeeded, removes the previous run's files, and only the
    :data:`RUN_FILES` a previous mpigd run's ``run.json`` vouches for. A refused or
    failed command leaves a previous run as it was.
    """

    def __init__(self, out_dir: str) -> None:
        self.given = out_dir
        self.dir = Path(out_dir)
        self.run: dict = {}
        #: Names this run's run.json, so an abort marks this run's record and no other.
        self.run_id = uuid.uuid4().hex
        self._lock = None
        self._previous_run = False
        self._started = False

    def claim(self, config: dict, resume: bool, overwrite: bool, inputs) -> None:
        """Check the run directory and lock it, before anything else can fail.

        Refuses (ConfigError, nothing changed): an empty ``--out``, one that is a file or
        lies inside an input dataset (``inputs``: paths, None for absent ones), one that
        another run holds, one with files a run writes but no mpigd run.json (someone
        else's), and one that holds a run unless ``overwrite`` (start over) or
        ``resume`` (continue it), which contradict each other. A new directory gets
        run.json with status ``starting``; an existing run's is left alone until
        :meth:`start`.
        """
        if not str(self.given).strip():
            raise ConfigError(f"--out {self.given!r} is empty: name the run directory")
        if resume and overwrite:
            raise ConfigError("--resume continues the run in --out, --overwrite replaces it: "
                              "pass one of them")  # fmt: skip
        _check_not_inside_inputs(self.dir, inputs)
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"--out {self.dir} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.dir)
        try:
            self._previous_run = _holds_a_run(self.dir)
            if self._previous_run and not (resume or overwrite):
                raise ConfigError(
                    f"{self.dir} already holds a run (run.json); pass --overwrite to replace "
                    "it or --resume to continue it"
                )
        except MpigdError:
            self.release()
            raise
        self.run = {"config": config, "run_id": self.run_id, "start_time": now_iso(),
                    "status": "starting"}  # fmt: skip
        if not self._previous_run:
            self._write_run()

    def start(self, run_info: dict, keep_epochs: int | None = None) -> None:
        """Write the full run.json once set-up has succeeded (status ``running``).

        Removes the previous run's model.h5 and timeline.json (only a completed run
        leaves them) and its leftover temporary files; ``keep_epochs`` (a resume from a
        checkpoint) keeps the checkpoint and the metrics lines of epochs up to that one,
        else metrics.jsonl and checkpoint.h5 go too. A metrics line torn by a crash
        mid-write is dropped.
        """
        stale = [MODEL_FILE, TIMELINE_FILE]
        if keep_epochs is None:
            stale += [METRICS_FILE, CHECKPOINT_FILE]
        for name in stale:
            (self.dir / name).unlink(missing_ok=True)
        for name in RUN_FILES:
            for leftover in self.dir.glob(f".{name}.tmp-*"):
                leftover.unlink(missing_ok=True)
        metrics = self.dir / METRICS_FILE
        kept = []
        if keep_epochs is not None and metrics.exists():
            kept = [line for line, row in _whole_rows(metrics) if row["epoch"] <= keep_epochs]
        metrics.write_text("".join(line + "\n" for line in kept))
        self.run = dict(run_info, run_id=self.run_id,
                        start_time=self.run.get("start_time", now_iso()),
                        end_time=None, status="running")  # fmt: skip
        self._started = True
        self._write_run()

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
        """Give up the directory's lock (the OS does so too when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def save_model(self, params: np.ndarray, model_info: dict) -> None:
        """Write model.h5: the flat ``params`` and, as JSON attribute ``model``, its config."""

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as handle:
                handle.create_dataset("params", data=params)
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
    """A run directory's run.json and its metrics.jsonl rows ([] when it has none yet).

    For the experiments, which read run records and never console output. OSError or
    ValueError (no or a broken run.json) is left to the caller to interpret.
    """
    directory = Path(run_dir)
    run = json.loads((directory / RUN_FILE).read_text())
    metrics = directory / METRICS_FILE
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return run, [json.loads(line) for line in lines if line.strip()]


def load_model(run_dir: str) -> tuple[np.ndarray, dict]:
    """Read ``RUN_DIR/model.h5``: the flat parameters and the model config dict."""
    path = Path(run_dir) / MODEL_FILE
    if not os.path.lexists(path):
        raise DataError(f"{path} not found: is {run_dir} a finished mpigd run directory?")
    check_input_file(path, "model file", expected="an HDF5 file written by mpigd train")
    try:
        with h5py.File(path, "r") as handle:
            return handle["params"][()], json.loads(handle.attrs["model"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a readable mpigd model file: {exc}") from exc


def _check_not_inside_inputs(out: Path, inputs) -> None:
    """ConfigError if ``out`` is an input dataset or lies inside a dataset directory (its
    files would become shards, or a shard be replaced)."""
    target = out.resolve()
    for given in inputs:
        if not given:
            continue
        data = Path(given).resolve()
        if target == data or (data.is_dir() and data in target.parents):
            raise ConfigError(
                f"--out {out} is inside the dataset {given}; put the run directory elsewhere"
            )


def _lock(directory: Path):
    """The run directory's lock, held (an open file); ConfigError if another run has it."""
    handle = open(directory / LOCK_FILE, "a+")  # noqa: SIM115 - held for the run's life
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
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def _holds_a_run(directory: Path) -> bool:
    """Whether ``directory`` holds a previous mpigd run; ConfigError if it holds files a
    run writes that no mpigd run.json vouches for (they are someone else's)."""
    record = directory / RUN_FILE
    if record.exists():
        try:
            run = json.loads(record.read_text())
        except (OSError, ValueError):
            run = None
        if isinstance(run, dict) and "config" in run and "status" in run:
            return True
        raise ConfigError(f"{record} is not an mpigd run record; choose another --out")
    foreign = [name for name in RUN_FILES if (directory / name).exists()]
    if foreign:
        raise ConfigError(
            f"{directory} holds {', '.join(foreign)} but no mpigd run.json: they are not "
            "an mpigd run's, and a run would replace them; choose another --out"
        )
    return False


def _whole_rows(path: Path) -> list[tuple[str, dict]]:
    """``(line, parsed row)`` of each line of a JSON-lines file that parses; a line torn
    by an interrupted write is dropped, with a note."""
    whole = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            whole.append((line, json.loads(line)))
        except ValueError:
            print(f"mpigd: dropping line {number} of {path}, torn by an interrupted write",
                  file=sys.stderr, flush=True)  # fmt: skip
    return whole
