"""The run directory: run.json, metrics.jsonl and model.h5 (the run-record contract in
docs/architecture.md). Written by rank 0 only.

Every file that a later reader could mistake for a finished result is written to a
temporary sibling and renamed into place (:mod:`mpigd.record.atomic`), so an
interrupted run leaves the previous complete file or none, never a half-written one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import mpigd
from mpigd.errors import ConfigError, DataError
from mpigd.record.atomic import replace_atomically

MODEL_FILE = "model.h5"
CHECKPOINT_FILE = "checkpoint.h5"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """The files of one run directory. Construct and call methods on rank 0 only."""

    def __init__(self, out_dir: str) -> None:
        self.dir = Path(out_dir)
        self.run: dict = {}

    def prepare(self, config: dict, resume: bool, overwrite: bool) -> None:
        """Claim the run directory before anything else can fail.

        Refuses a directory that already holds a run unless ``overwrite`` (start over)
        or ``resume`` (continue it); removes the previous ``model.h5`` so that only a
        completed run leaves one, and writes run.json with status ``starting``.
        """
        if (self.dir / RUN_FILE).exists() and not (resume or overwrite):
            raise ConfigError(
                f"{self.dir} already holds a run (run.json); pass --overwrite to replace it "
                "or --resume to continue it"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / MODEL_FILE).unlink(missing_ok=True)
        if not resume:
            for stale in (METRICS_FILE, CHECKPOINT_FILE):
                (self.dir / stale).unlink(missing_ok=True)
        self.run = {"config": config, "start_time": now_iso(), "status": "starting"}
        self._write_run()

    def start(self, run_info: dict, keep_epochs: int | None = None) -> None:
        """Write the full run.json once set-up has succeeded (status ``running``).

        ``keep_epochs`` (on resume) keeps the metrics lines of epochs up to that one and
        drops later ones, which the resumed run will compute again.
        """
        metrics = self.dir / METRICS_FILE
        kept = []
        if keep_epochs is not None and metrics.exists():
            lines = metrics.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["epoch"] <= keep_epochs]
        metrics.write_text("".join(line + "\n" for line in kept))
        self.run = dict(run_info, start_time=self.run.get("start_time", now_iso()),
                        end_time=None, status="running")  # fmt: skip
        self._write_run()

    def append_metrics(self, row: dict) -> None:
        """Add one epoch's JSON line to metrics.jsonl, flushed so readers see it at once."""
        with open(self.dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def finish(self, status: str, **fields) -> None:
        """Record how the run ended (``completed`` or ``failed``) and why."""
        self.run.update(fields, status=status, end_time=now_iso())
        self._write_run()

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


def mark_aborted(run_dir: str, message: str) -> None:
    """Record in run.json that the job was aborted (any rank may call this, once)."""
    path = Path(run_dir) / RUN_FILE
    try:
        run = json.loads(path.read_text())
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
    if not path.is_file():
        raise DataError(f"{path} not found: is {run_dir} a finished mpigd run directory?")
    try:
        with h5py.File(path, "r") as handle:
            return handle["params"][()], json.loads(handle.attrs["model"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a readable mpigd model file: {exc}") from exc
