"""The run record (DESIGN.md): run.json, metrics.jsonl, model.h5. Written by rank 0 only.

Every file that a later reader could mistake for a finished result is written to a
temporary sibling and renamed into place, so an interrupted run leaves the previous
complete file or none, never a half-written one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import mpigd
from mpigd.errors import DataError

MODEL_FILE = "model.h5"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def replace_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``; no partial file survives."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def git_commit() -> str | None:
    """The commit of the mpigd source tree, when it is a git checkout."""
    source = Path(mpigd.__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def software_versions(backend_name: str) -> dict:
    """Versions of Python and the numerical stack, for provenance."""
    versions = {
        "mpigd": mpigd.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }
    for module in ("mpi4py", "numba", "scipy", "cupy"):
        imported = sys.modules.get(module)
        versions[module] = getattr(imported, "__version__", None) if imported else None
    versions["backend"] = backend_name
    return versions


class RunRecord:
    """The files of one run directory. Construct and call methods on rank 0 only."""

    def __init__(self, out_dir: str) -> None:
        self.dir = Path(out_dir)
        self.run: dict = {}

    def start(self, run_info: dict) -> None:
        """Create the directory, clear a previous run's results, write run.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in (MODEL_FILE, METRICS_FILE):
            (self.dir / stale).unlink(missing_ok=True)
        self.run = dict(run_info, start_time=now_iso(), end_time=None, status="running")
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
