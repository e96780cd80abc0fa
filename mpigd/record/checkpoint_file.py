"""checkpoint.h5: everything needed to continue a run exactly, written atomically.

Layout (one HDF5 file, replaced by rename so a crash leaves the old or the new one):

- ``params``: the flat parameter vector (float64; empty for a tree ensemble).
- group ``model``: the model's arrays besides ``params`` (a tree ensemble's trees, laid
  out as in model.h5; :meth:`mpigd.models.Model.saved_arrays`), absent when it has none.
- group ``optimizer``: the optimiser's state arrays as datasets, scalars as attributes.
- attributes ``epoch`` (epochs completed), ``step_in_epoch`` (steps already taken in the
  next epoch; 0 at an epoch boundary), ``global_step`` (steps taken in all),
  ``world_size``, and JSON attributes ``config`` and ``data``: the fingerprints that
  :func:`mismatches` compares on ``--resume``; ``rng_states``: every rank's model
  generator state (the MLP's dropout), restored when the rank count is the same.

Mini-batch order needs no saved generator: it is a pure function of (seed, epoch, rank)
(:mod:`mpigd.run.batching`), and the seed is in the fingerprint. Parameters and optimiser
state are stored whole even when the model is split across ranks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import mpigd
from mpigd.data import DatasetInfo
from mpigd.data.fingerprint import content_hash
from mpigd.errors import DataError
from mpigd.record.atomic import replace_atomically
from mpigd.record.run_dir import CHECKPOINT_FILE, read_arrays, write_arrays


@dataclass
class Checkpoint:
    """A run's state at a step boundary (replicated on every rank once loaded)."""

    params: np.ndarray
    optimizer_state: dict
    epoch: int
    step_in_epoch: int
    global_step: int
    world_size: int
    config: dict
    data: dict
    #: Every rank's model generator state (dropout), in rank order; None entries if none.
    rng_states: list | None = None
    #: The model's arrays besides ``params`` (:meth:`mpigd.models.Model.saved_arrays`).
    model_arrays: dict | None = None


def config_fingerprint(config) -> dict:
    """The options of a TrainConfig that change the trajectory (as its field metadata
    marks them): a checkpoint made with other values is refused on resume."""
    return config.trajectory_fingerprint()


def data_fingerprint(info: DatasetInfo) -> dict:
    """Rows, features, dtype, task, classes and a cheap content hash of a dataset."""
    return {
        "rows": info.n_rows, "features": info.n_features, "dtype": str(info.dtype),
        "task": info.task, "n_classes": info.n_classes, "content_hash": content_hash(info),
    }  # fmt: skip


def save(run_dir: str, checkpoint: Checkpoint, before_rename=None) -> None:
    """Write ``RUN_DIR/checkpoint.h5`` atomically (rank 0 only); ``before_rename()`` runs
    once the temporary file is complete, before it replaces the old checkpoint."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("params", data=checkpoint.params)
            write_arrays(handle, "model", checkpoint.model_arrays)
            group = handle.create_group("optimizer")
            for name, value in checkpoint.optimizer_state.items():
                if isinstance(value, np.ndarray):
                    group.create_dataset(name, data=value)
                else:
                    group.attrs[name] = value
            handle.attrs["epoch"] = checkpoint.epoch
            handle.attrs["step_in_epoch"] = checkpoint.step_in_epoch
            handle.attrs["global_step"] = checkpoint.global_step
            handle.attrs["world_size"] = checkpoint.world_size
            handle.attrs["config"] = json.dumps(checkpoint.config)
            handle.attrs["data"] = json.dumps(checkpoint.data)
            handle.attrs["rng_states"] = json.dumps(checkpoint.rng_states)
            handle.attrs["mpigd_version"] = mpigd.__version__

    replace_atomically(Path(run_dir) / CHECKPOINT_FILE, write, before_rename)


def load(run_dir: str) -> Checkpoint | None:
    """Read ``RUN_DIR/checkpoint.h5``; None if there is none. DataError if it is unreadable."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as handle:
            group = handle["optimizer"]
            state = {name: group[name][()] for name in group}
            state.update(group.attrs)
            return Checkpoint(
                params=handle["params"][()],
                optimizer_state=state,
                epoch=int(handle.attrs["epoch"]),
                step_in_epoch=int(handle.attrs["step_in_epoch"]),
                global_step=int(handle.attrs["global_step"]),
                world_size=int(handle.attrs["world_size"]),
                config=json.loads(handle.attrs["config"]),
                data=json.loads(handle.attrs["data"]),
                rng_states=json.loads(handle.attrs.get("rng_states", "null")),
                model_arrays=read_arrays(handle, "model"),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a readable mpigd checkpoint: {exc}") from exc


def mismatches(checkpoint: Checkpoint, config: dict, data: dict) -> list[str]:
    """Human-readable differences between a checkpoint's fingerprints and this run's."""
    found = []
    for kind, saved, current in (("config", checkpoint.config, config),
                                 ("dataset", checkpoint.data, data)):  # fmt: skip
        for key in sorted(set(saved) | set(current)):
            if saved.get(key) != current.get(key):
                found.append(
                    f"{kind} {key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
                )
    return found
