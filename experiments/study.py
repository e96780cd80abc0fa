"""A scaling study as a versioned TOML file: what to run, on which data, how often.

Example (``experiments/studies/weak-logreg.toml``)::

    [study]
    name = "weak-logreg"        # results go to OUT/weak-logreg/
    mode = "weak"               # weak: data.rows per rank; strong: data.rows in total
    ranks = [1, 2]              # MPI rank counts
    repeats = 3                 # runs per point; the summary takes medians
    skip_epochs = 1             # leading epochs left out of the per-epoch time
    strategies = ["allreduce"]  # each crossed with models, backends and ranks
    models = ["logreg"]
    backends = ["numba"]
    # epoch_fields = ["histogram_s"]  # optional: more metrics.jsonl fields for points.csv

    [data]                      # synthetic data (mpigd data synth), written once per size
    task = "binary"
    rows = 100000
    features = 100
    # path = "data/bin/train"   # strong scaling only: an existing dataset instead

    [train]                     # options of `mpigd train`, the same for every run
    optimizer = "gd"
    lr = 0.5
    epochs = 20

    [launch]                    # optional
    launcher = "auto"           # auto: srun inside a Slurm allocation, mpirun otherwise
    args = []                   # extra launcher arguments, e.g. ["--mpi=pmi2"] for srun
    timeout_s = 900             # per run

Strategy, model and backend names are passed to ``mpigd train`` as they are: any name
the command line accepts works here, and a bad one fails its runs with mpigd's message.
A tree model (``forest``, ``gbt``) counts its epochs by ``trees`` or ``rounds`` in
``[train]``, not ``epochs`` (``experiments/studies/trees.toml``).

``epoch_fields`` names further per-epoch fields of ``metrics.jsonl`` (a tree model's
``histogram_s``, ``split_s``, ``histogram_mib``): each becomes a points.csv column,
averaged over the measured epochs as ``time_s`` is, empty for a run whose epochs lack it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from kernels import DEFAULT_BACKEND
from mpigd.config import TrainConfig, default_of, read_toml

MODES = ("strong", "weak")
LAUNCHERS = ("auto", "mpirun", "srun")
#: Data keys passed to ``mpigd data synth`` (``rows`` is computed per point).
SYNTH_KEYS = ("task", "features", "classes", "shards", "seed", "dtype")
#: Train options the harness sets itself for every run.
RESERVED_TRAIN_KEYS = ("data", "out", "test_data", "progress", "config")
#: Train options that count a run's epochs, by model (:attr:`TrainConfig.loop_epochs`).
LOOP_KEYS = ("epochs", "trees", "rounds")


class StudyError(ValueError):
    """The study file is unreadable or asks for something impossible."""


@dataclass(frozen=True)
class Study:
    """One scaling study: the product of ``series x ranks x repeats`` runs.

    Attributes
    ----------
    name : directory name of the results.
    mode : ``strong`` (``data["rows"]`` rows in total) or ``weak`` (per rank).
    ranks : sorted distinct rank counts.
    repeats : runs per (series, rank count).
    skip_epochs : leading epochs excluded from the per-epoch times.
    strategies, models, backends : the series are their Cartesian product.
    data : ``path`` of an existing dataset, or synth options with ``rows``.
    train : fixed ``mpigd train`` options, keys with ``_`` (``batch_size``).
    launcher, launcher_args, timeout_s : how each run is started, and its time limit.
    epoch_fields : further metrics.jsonl fields averaged into points.csv columns.
    """

    name: str
    mode: str
    ranks: tuple[int, ...]
    repeats: int
    skip_epochs: int
    strategies: tuple[str, ...]
    models: tuple[str, ...]
    backends: tuple[str, ...]
    data: dict
    train: dict = field(default_factory=dict)
    launcher: str = "auto"
    launcher_args: tuple[str, ...] = ()
    timeout_s: float = 900.0
    epoch_fields: tuple[str, ...] = ()

    def series(self) -> list[tuple[str, str, str]]:
        """Every (strategy, model, backend) combination, in file order."""
        return [(s, m, b) for s in self.strategies for m in self.models for b in self.backends]

    def total_rows(self, ranks: int) -> int:
        """Training rows of the run at ``ranks`` (synthetic data only)."""
        return self.data["rows"] * (ranks if self.mode == "weak" else 1)


def load_study(path: str | Path, ranks: list[int] | None = None) -> Study:
    """Read and validate a study file; ``ranks`` (if given) replaces its rank counts."""
    raw = read_toml(path, "study file", StudyError)
    unknown = set(raw) - {"study", "data", "train", "launch"}
    if unknown:
        raise StudyError(f"{path}: unknown sections {', '.join(sorted(unknown))}")
    head = dict(raw.get("study", {}))
    train = {key.replace("-", "_"): value for key, value in raw.get("train", {}).items()}
    launch = raw.get("launch", {})
    study = Study(
        name=str(head.pop("name", Path(path).stem)),
        mode=head.pop("mode", "strong"),
        ranks=tuple(sorted(set(ranks or head.pop("ranks", [1, 2])))),
        repeats=head.pop("repeats", 3),
        skip_epochs=head.pop("skip_epochs", 1),
        strategies=_names(head.pop("strategies", [train.pop("strategy", "allreduce")])),
        models=_names(head.pop("models", [train.pop("model", "logreg")])),
        backends=_names(head.pop("backends", [train.pop("backend", DEFAULT_BACKEND)])),
        data=dict(raw.get("data", {})),
        train=train,
        launcher=launch.get("launcher", "auto"),
        launcher_args=tuple(launch.get("args", ())),
        timeout_s=float(launch.get("timeout_s", 900.0)),
        epoch_fields=_names(head.pop("epoch_fields", [])),
    )
    head.pop("ranks", None)
    if head:
        raise StudyError(f"{path}: unknown [study] keys {', '.join(sorted(head))}")
    _validate(study, path)
    return study


def _names(values) -> tuple[str, ...]:
    return tuple(values) if isinstance(values, list) else (values,)


def _validate(study: Study, path) -> None:
    problems = []
    if study.mode not in MODES:
        problems.append(f"mode {study.mode!r} is not one of {', '.join(MODES)}")
    if not study.ranks or any(not isinstance(p, int) or p < 1 for p in study.ranks):
        problems.append(f"ranks must be positive integers, got {list(study.ranks)}")
    if not isinstance(study.repeats, int) or study.repeats < 1:
        problems.append(f"repeats must be a positive integer, got {study.repeats}")
    if not isinstance(study.skip_epochs, int) or study.skip_epochs < 0:
        problems.append(f"skip_epochs must be a non-negative integer, got {study.skip_epochs}")
    if study.launcher not in LAUNCHERS:
        problems.append(f"launcher {study.launcher!r} is not one of {', '.join(LAUNCHERS)}")
    reserved = sorted(set(study.train) & set(RESERVED_TRAIN_KEYS))
    if reserved:
        problems.append(f"[train] may not set {', '.join(reserved)}: the harness sets them")
    problems += _epoch_problems(study)
    if any(not isinstance(name, str) or not name for name in study.epoch_fields):
        problems.append(f"epoch_fields must be field names, got {list(study.epoch_fields)}")
    problems += _data_problems(study)
    if problems:
        raise StudyError(f"{path}: " + "; ".join(problems))


def _epoch_problems(study: Study) -> list[str]:
    """A model whose runs would have no epoch left after ``skip_epochs``: the count of
    ``epochs``, or ``trees``/``rounds`` for a tree model (:attr:`TrainConfig.loop_epochs`),
    from ``[train]`` or its default."""
    problems = []
    for model in study.models:
        counts = {key: study.train.get(key, default_of(key)) for key in LOOP_KEYS}
        count, flag = TrainConfig.loop_epochs.fget(SimpleNamespace(model=model, **counts))
        problem = f"{flag[2:]} must exceed skip_epochs ({study.skip_epochs})"
        if isinstance(count, int) and count <= study.skip_epochs and problem not in problems:
            problems.append(problem)
    return problems


def _data_problems(study: Study) -> list[str]:
    data = study.data
    if "path" in data:
        if study.mode == "weak":
            return ["weak scaling needs synthetic data ([data] rows per rank), not a path"]
        extra = sorted(set(data) - {"path"})
        return [f"[data] path excludes {', '.join(extra)}"] if extra else []
    problems = []
    for key in ("task", "rows", "features"):
        if key not in data:
            problems.append(f"[data] needs {key} (or a path)")
    unknown = sorted(set(data) - {"rows", *SYNTH_KEYS})
    if unknown:
        problems.append(f"unknown [data] keys {', '.join(unknown)}")
    rows = data.get("rows", 1)
    least = 1 if study.mode == "weak" else max(study.ranks, default=1)
    if not isinstance(rows, int) or rows < least:
        problems.append(f"[data] rows must be an integer of at least {least}, got {rows!r}")
    return problems
