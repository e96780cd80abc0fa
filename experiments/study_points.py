"""points.csv: one row per run directory of a study, read from what the run left on disk.

A row joins the run's record (run.json and metrics.jsonl, :func:`read_point`) with the
harness.json written at its launch (cores, load, binding, launcher) and the marks of
:func:`experiments.contention.marks`. Nothing is read from console output.
"""

from __future__ import annotations

from pathlib import Path

from experiments import contention, study_dir
from experiments.study import Study
from experiments.summary import series_key
from mpigd.record import read_run

#: Columns of points.csv, in order.
POINT_FIELDS = (
    "study",
    "mode",
    "strategy",
    "model",
    "backend",
    "ranks",
    "repeat",
    "status",
    "rows",
    "rows_per_rank",
    "features",
    "n_params",
    "epochs_measured",
    "steps_per_epoch",
    "time_s",
    "compute_s",
    "comm_s",
    "io_s",
    "eval_s",
    "other_s",
    "compute_s_max",
    "comm_s_max",
    "samples_per_s",
    "final_train_loss",
    "hosts",
    "ranks_per_node",
    "cores",
    "oversubscribed",
    "load_1min",
    "busy_cores",
    "loaded",
    "cpu_binding",
    "rank_cpus",
    "launcher",
    "run_dir",
)


def point_fields(study: Study) -> tuple[str, ...]:
    """Columns of the study's points.csv: :data:`POINT_FIELDS`, then its ``epoch_fields``."""
    return POINT_FIELDS + tuple(key for key in study.epoch_fields if key not in POINT_FIELDS)


def read_point(run_dir: Path, skip_epochs: int, epoch_fields=()) -> dict:
    """One points.csv row's measured fields, from ``run.json`` and ``metrics.jsonl``.

    Per-epoch fields are means over the epochs after the first ``skip_epochs`` (all
    epochs if the run had no more). As in ``metrics.jsonl``, ``compute_s``, ``comm_s`` and
    ``io_s`` are means over the ranks (``comm_s`` includes waiting for slower ranks inside
    collectives) and ``*_max`` the busiest rank's; ``eval_s`` is the test evaluation.
    ``other_s = time_s - compute_s - comm_s - io_s - eval_s`` is the rest of the epoch:
    the average rank's Python between phases. ``hosts`` counts distinct hosts and
    ``ranks_per_node`` the most ranks on one. A run without a ``run.json`` gets status
    ``no-record``; one that failed early has only the fields its record holds; one killed
    outright (SIGKILL, out of memory) is ``died`` (:func:`mpigd.record.read_run`), with its
    ``last_heartbeat``. ``stop_reason`` says why a run did not complete. Each of
    ``epoch_fields`` (the study's, :mod:`experiments.study`) is the mean of that
    metrics.jsonl field over the measured epochs that have it as a number, else None.
    """
    try:
        run, epochs = read_run(run_dir)
    except (OSError, ValueError):
        return {"status": "no-record"}
    measured = epochs[skip_epochs:] or epochs
    dataset = run.get("dataset", {})
    point = {
        "status": run.get("status"),
        "stop_reason": run.get("stop_reason") if run.get("status") != "completed" else None,
        "last_heartbeat": run.get("last_heartbeat"),
        "rows": dataset.get("rows"),
        "features": dataset.get("features"),
        "n_params": run.get("model_info", {}).get("n_params"),
        "final_train_loss": run.get("final_train_loss"),
        "hosts": len(set(run.get("hosts", []))),
        "ranks_per_node": contention.ranks_per_node(run.get("hosts")),
        "rank_cpus": " ".join(run.get("cpus", [])) or None,
        "epochs_measured": len(measured),
    }
    if not measured:
        return point
    fields = ("time_s", "compute_s", "comm_s", "io_s", "eval_s", "samples_per_s", "steps")
    fields += tuple(key for key in ("compute_s_max", "comm_s_max") if key in measured[0])
    for key in fields:
        point[key] = sum(epoch.get(key, 0.0) for epoch in measured) / len(measured)
    point["steps_per_epoch"] = point.pop("steps")
    phases = ("compute_s", "comm_s", "io_s", "eval_s")
    point["other_s"] = point["time_s"] - sum(point[key] for key in phases)
    for key in epoch_fields:
        if key not in point:
            values = [epoch[key] for epoch in measured if _is_number(epoch.get(key))]
            point[key] = sum(values) / len(values) if values else None
    return point


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def collect(study: Study, runs: list[study_dir.Run]) -> list[dict]:
    """points.csv rows of the run directories on disk, sorted as they were launched.

    Each row joins the run's record (:func:`read_point`) with its harness.json (cores,
    load, binding, launcher) and the marks of :func:`experiments.contention.marks`.
    """
    order = {series: i for i, series in enumerate(study.series())}
    points = []
    for run in runs:
        series, ranks, repeat = run.key
        harness = study_dir.read_harness(run.path)
        point = dict(
            study=study.name,
            mode=study.mode,
            strategy=series[0],
            model=series[1],
            backend=series[2],
            ranks=ranks,
            repeat=repeat,
            launcher=harness.get("launcher"),
            run_dir=str(run.path),
            **{key: harness.get(key) for key in ("cores", "load_1min", "busy_cores")},
            cpu_binding=harness.get("cpu_binding"),
        )
        point.update(read_point(run.path, study.skip_epochs, study.epoch_fields))
        point.update(
            contention.marks(point["cores"], point.get("ranks_per_node"), point["busy_cores"])
        )
        if point.get("rows"):
            point["rows_per_rank"] = point["rows"] / ranks
        points.append(point)
    points.sort(
        key=lambda p: (p["repeat"], order.get(series_key(p), len(order)), series_key(p), p["ranks"])
    )
    return points


def missing_line(expected: list[tuple], present: set) -> str | None:
    """One line naming the study's points that have no run directory, or None."""
    missing = [key for key in expected if key not in present]
    if not missing:
        return None
    groups: dict[tuple, list[int]] = {}
    for series, ranks, repeat in missing:
        groups.setdefault((series, ranks), []).append(repeat)
    described = ", ".join(
        f"{'/'.join(series)} P={ranks} (repeat{'s' if len(repeats) > 1 else ''} "
        f"{', '.join(map(str, sorted(repeats)))})"
        for (series, ranks), repeats in sorted(groups.items())
    )
    return f"missing {len(missing)} of {len(expected)} points (no run directory): {described}"
