"""What a study's results directory holds, and what a rerun of the study may change there.

Layout of ``OUT/<study>/``::

    runs/<strategy>-<model>-<backend>/p<PPPP>-r<R>/   one run: mpigd's record (run.json,
        metrics.jsonl, ...), the launcher's console.log, and harness.json (what the
        harness launched with which options, and the machine's state at the launch)
    points.csv summary.csv summary.json <figures>     derived from the runs (the harness)
    model.json model.csv model_*.png|pdf              derived from the runs (perfmodel)

A point is one (series, ranks, repeat); its run directory is :func:`run_dir`. A rerun
keeps results unless asked to replace them (:func:`plan`):

- a run whose run.json says ``completed`` and whose harness.json holds the options the
  study asks for now is *complete*: kept, not run again;
- every other point of the study (never run, failed, died, killed) is run (again), into a
  fresh directory;
- a completed run made with other options (the study file was edited since), or by a
  harness that did not record its options, makes the rerun refuse before it changes
  anything; ``--overwrite`` removes every run of the study and starts afresh.

Once a rerun launches anything, the derived files (:data:`DERIVED`) describe runs that are
no longer all there: they are removed first (the harness writes its own again at the end;
``python -m experiments.perfmodel`` must be run again for model.json).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mpigd.record import read_run

RUNS = "runs"
HARNESS_FILE = "harness.json"
#: Figures of :func:`experiments.plots.plot_study`, each as .png and .pdf.
FIGURES = ("time_per_epoch", "speedup", "efficiency", "karp_flatt", "breakdown")
#: What experiments.perfmodel writes into the study directory, fitted to its runs.
MODEL_FILES = ("model.json", "model.csv") + tuple(
    f"{name}.{suffix}" for name in ("model_speedup", "model_time") for suffix in ("png", "pdf")
)
#: Files derived from the runs: stale as soon as the set of runs changes.
DERIVED = (
    ("points.csv", "summary.csv", "summary.json")
    + tuple(f"{name}.{suffix}" for name in FIGURES for suffix in ("png", "pdf"))
    + MODEL_FILES
)
_RUN_NAME = re.compile(r"p(\d+)-r(\d+)")


@dataclass(frozen=True)
class Run:
    """One run directory on disk, and what it is.

    Attributes
    ----------
    path : the run directory.
    key : (series, ranks, repeat), series being (strategy, model, backend); None when
        neither harness.json nor run.json nor the directory's name tells.
    status : run.json's status (``completed``, ``failed``, ``died``, ...), or ``no-record``.
    options : the options harness.json recorded (None for an older harness).
    """

    path: Path
    key: tuple | None
    status: str
    options: dict | None


@dataclass(frozen=True)
class Plan:
    """What a rerun will do: the points to launch, and the complete runs it keeps."""

    todo: list[tuple]
    kept: list[Run]


def run_dir(out: Path, series, ranks: int, repeat: int) -> Path:
    """The directory of one point's run."""
    return out / RUNS / "-".join(series) / f"p{ranks:04d}-r{repeat}"


def write_harness(path: Path, record: dict) -> None:
    """Write harness.json (what was launched, and the machine at the launch) into ``path``."""
    (path / HARNESS_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def read_harness(path: Path) -> dict:
    """harness.json of a run directory; an empty dict when absent or unreadable."""
    try:
        return json.loads((path / HARNESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def survey(out: Path, known_series=()) -> list[Run]:
    """Every run directory under ``out/runs``, sorted by path.

    ``known_series`` (the study's (strategy, model, backend) tuples) names the series of
    a directory that has neither harness.json nor run.json (strategy names have dashes).
    """
    runs = []
    for path in sorted((out / RUNS).glob("*/p*-r*")):
        if not path.is_dir() or not _RUN_NAME.fullmatch(path.name):
            continue
        harness = read_harness(path)
        try:
            record, _ = read_run(path)
        except (OSError, ValueError):
            record = {"status": "no-record"}
        runs.append(
            Run(
                path=path,
                key=_identify(path, harness, record, known_series),
                status=record.get("status") or "no-record",
                options=harness.get("options"),
            )
        )
    return runs


def _identify(path: Path, harness: dict, record: dict, known_series) -> tuple | None:
    ranks, repeat = (int(part) for part in _RUN_NAME.fullmatch(path.name).groups())
    if {"strategy", "model", "backend"} <= set(harness):
        return (harness["strategy"], harness["model"], harness["backend"]), ranks, repeat
    config = record.get("config", {})
    if {"strategy", "model", "backend"} <= set(config):
        return (config["strategy"], config["model"], config["backend"]), ranks, repeat
    for series in known_series:
        if "-".join(series) == path.parent.name:
            return tuple(series), ranks, repeat
    return None


def plan(expected: list[tuple], runs: list[Run], wanted) -> Plan:
    """Which of the ``expected`` points a rerun launches; refuses if results would mix.

    Parameters
    ----------
    expected : the (series, ranks, repeat) points the study asks for, in launch order.
    runs : :func:`survey` of the results directory.
    wanted : function of (series, ranks) giving the options a run of it is made with now.

    Raises
    ------
    ResultsChanged : a completed run on disk was made with other options, or by a harness
        that did not record them.
    """
    done = [run for run in runs if run.status == "completed" and run.key is not None]
    changed = changed_runs(done, wanted)
    unrecorded = [run for run in done if run.options is None]
    if changed or unrecorded:
        raise ResultsChanged(changed, unrecorded, wanted)
    complete = {run.key for run in done}
    return Plan(todo=[key for key in expected if key not in complete], kept=done)


def changed_runs(runs: list[Run], wanted) -> list[Run]:
    """The completed runs whose recorded options differ from ``wanted`` (for --analyze)."""
    return [
        run
        for run in runs
        if run.status == "completed"
        and run.key is not None
        and run.options is not None
        and run.options != _as_json(wanted(*run.key[:2]))
    ]


def describe_change(old: dict, new: dict) -> str:
    """The options that differ between two harness.json ``options``, e.g. ``lr 0.1 -> 0.5``."""
    parts = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    parts.append(f"{key} {before.get(key)} -> {after.get(key)}")
        elif before != after:
            parts.append(f"{section} {before} -> {after}")
    return ", ".join(parts)


class ResultsChanged(Exception):
    """The results directory holds completed runs a rerun cannot add to."""

    def __init__(self, changed: list[Run], unrecorded: list[Run], wanted) -> None:
        reasons = []
        if changed:
            first = changed[0]
            diff = describe_change(first.options, _as_json(wanted(*first.key[:2])))
            reasons.append(
                f"{len(changed)} completed runs were made with other options than the study "
                f"now sets (e.g. {first.path}: {diff})"
            )
        if unrecorded:
            reasons.append(
                f"{len(unrecorded)} completed runs come from a harness that did not record "
                f"their options (e.g. {unrecorded[0].path}), so they cannot be checked"
            )
        super().__init__("; ".join(reasons))


def remove_derived(out: Path, keep=()) -> list[str]:
    """Delete the files derived from the runs (:data:`DERIVED`) but those named in ``keep``;
    return the names removed."""
    removed = []
    for name in DERIVED:
        if name not in keep and (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    return removed


def remove_runs(out: Path) -> None:
    """Delete every run of the study (``--overwrite``) and what was derived from them."""
    if (out / RUNS).is_dir():
        shutil.rmtree(out / RUNS)
    remove_derived(out)


def _as_json(value):
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))
