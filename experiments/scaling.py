"""Strong- and weak-scaling studies: run every point, keep its record, summarise, plot.

Usage (from the repository root)::

    python -m experiments.scaling STUDY.toml [--out results] [--ranks 1,2,4]
        [--launcher auto|mpirun|srun] [--launcher-args=ARGS]
        [--data-dir build/scaling-data] [--analyze | --overwrite]

For each repeat, series (strategy x model x backend) and rank count P it launches
``mpigd train`` with ``mpirun -n P`` on a workstation, or ``srun --ntasks=P`` inside a
Slurm allocation (``SLURM_JOB_ID`` set), and keeps the run directory. Repeats form the
outer loop, so slow drifts of the machine spread over all points. Then it writes, under
``OUT/<study>/``, from every run directory there:

- ``points.csv``: one row per run, read from its ``run.json``, ``metrics.jsonl`` and
  ``harness.json`` (the machine at its launch: cores, ranks per node, load, binding, and
  whether it was oversubscribed or loaded, :mod:`experiments.contention`), and a column
  per field the study's ``epoch_fields`` names;
- ``summary.csv`` and ``summary.json``: medians and spread per point, speedup, efficiency,
  Karp-Flatt serial fraction, the Amdahl (strong) or Gustafson (weak) fit, and the
  warnings printed about oversubscribed or loaded runs;
- the figures ``time_per_epoch``, ``speedup``, ``efficiency``, ``karp_flatt`` and
  ``breakdown`` (PNG and PDF, :mod:`experiments.plots`).

A rerun keeps what is there: it launches only the points not yet complete, refuses
(exit 2, nothing changed) when completed runs were made with other options, and removes
the derived files before it launches anything; ``--overwrite`` replaces every run of the
study (:mod:`experiments.study_dir`). ``--analyze`` launches nothing: it rebuilds the
tables and figures from the run directories on disk, says in one line which of the
study's points are missing, and exits 2 when there is no run directory at all.

Times are seconds per epoch, averaged over each run's epochs after the first
``skip_epochs`` (epoch 1 also reads the data). Exit status: 0 every run on disk
completed, 1 some did not, 2 a bad study file, a refused rerun or nothing to analyse.
The study file format is in :mod:`experiments.study`; the summary's definitions are in
:mod:`experiments.summary`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from experiments import contention, study_dir
from experiments.study import Study, StudyError, load_study
from experiments.study_points import POINT_FIELDS, collect, missing_line, point_fields
from experiments.study_runs import (
    choose_launcher,
    expected_points,
    launch_all,
    run_options,
    too_few_ranks,
)
from experiments.summary import summarize

#: POINT_FIELDS stays importable from here (tests read scaling.POINT_FIELDS).
__all__ = ["POINT_FIELDS", "analyze", "main", "parse_args", "read_csv", "warn_before", "write_csv"]


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study file (TOML), see experiments/study.py")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root")
    parser.add_argument(
        "--ranks", type=_rank_list, help="comma-separated rank counts; replaces the file's"
    )
    parser.add_argument("--launcher", choices=("auto", "mpirun", "srun"), default=None)
    parser.add_argument(
        "--launcher-args",
        type=shlex.split,
        default=None,
        help="extra launcher arguments, replacing the study's (write --launcher-args=--mpi=pmi2)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("build/scaling-data"),
        help="where synthetic datasets are written once and reused",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--analyze", action="store_true", help="no runs: rebuild tables and plots from records"
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace every run of the study (default: keep complete runs, launch the rest)",
    )
    return parser.parse_args(argv)


def _rank_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def analyze(study: Study, out: Path, expected: list[tuple]) -> int:
    """Tables, figures and warnings from every run directory on disk; the exit status.

    Writes nothing and returns 2 when ``out`` holds no run directory; with runs but none
    completed, writes points.csv, removes the summary and figures, and returns 1.
    """
    runs = study_dir.survey(out, study.series())
    unknown = [run.path for run in runs if run.key is None]
    if unknown:
        print(f"NOTE: left out {len(unknown)} run directories of no known series: {unknown[0]} ...")
    runs = [run for run in runs if run.key is not None]
    missing = missing_line(expected, {run.key for run in runs})
    if not runs:
        print(
            f"scaling: error: nothing to analyse: no run directories under {out / study_dir.RUNS}",
            file=sys.stderr,
        )
        if missing:
            print(missing, file=sys.stderr)
        return 2
    changed = study_dir.changed_runs(runs, lambda series, ranks: run_options(study, series, ranks))
    if changed:
        print(
            f"NOTE: {len(changed)} runs were made with other options than {study.name}'s study "
            f"file sets now (e.g. {changed[0].path}); they are analysed as they are"
        )
    points = collect(study, runs)
    write_csv(points, out / "points.csv", point_fields(study))
    print(f"points: {out / 'points.csv'} ({len(points)} runs)")
    if missing:
        print(missing)
    failed = [p for p in points if p["status"] != "completed"]
    for point in failed:
        why = f": {point['stop_reason']}" if point.get("stop_reason") else ""
        log = Path(point["run_dir"]) / "console.log"
        see = "; see its console.log" if log.is_file() else ""
        print(f"FAILED: {point['run_dir']} ({point['status']}{why}){see}")
    if len(failed) == len(points):
        study_dir.remove_derived(out, keep=("points.csv",))
        print("scaling: no run completed: no summary or figures", file=sys.stderr)
        return 1
    warnings = contention.warnings(points)
    summary = dict(summarize(points, study.mode), warnings=warnings)
    write_csv(summary["rows"], out / "summary.csv", summary["fields"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    from experiments.plots import plot_study

    figures = plot_study(summary, out)
    print(f"summary: {out / 'summary.csv'}")
    print("figures: " + " ".join(str(path) for path in figures))
    for line in warnings:
        print(line)
    return 1 if failed else 0


def write_csv(rows: list[dict], path: Path, fields) -> None:
    """Write ``rows`` (dicts) as CSV with columns ``fields``; missing values stay empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`: numbers become int or float,
    ``True``/``False`` bool, empty None."""
    with open(path, newline="") as handle:
        return [
            {key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _number(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def warn_before(study: Study, launcher: str) -> None:
    """Say before the first launch what the study will get wrong on this machine."""
    cores = contention.cores_available()
    crowded = [p for p in study.ranks if p > cores]
    if crowded and launcher == "mpirun":
        print(
            f"WARNING: P={', '.join(map(str, crowded))} on this machine's {cores} cores will be "
            "oversubscribed if mpirun starts every rank here: those points measure time-slicing"
        )
    busy = contention.busy_cores()
    if busy is not None and busy >= contention.BUSY_CORES:
        print(
            f"WARNING: other processes keep {busy:.1f} of {cores} cores busy now: the times will "
            "be inflated (each run records the load at its launch)"
        )


def main(argv=None) -> int:
    """Run the missing points of a study, then write its tables and figures.

    Returns 0 when every run on disk completed, 1 when some did not, 2 for a bad study
    file, a rerun refused to keep results from mixing, or nothing to analyse.
    """
    args = parse_args(argv)
    try:
        study = load_study(args.study, ranks=args.ranks)
        if args.launcher_args is not None:
            study = replace(study, launcher_args=tuple(args.launcher_args))
    except StudyError as exc:
        print(f"scaling: error: {exc}", file=sys.stderr)
        return 2
    launcher = choose_launcher(args.launcher or study.launcher)
    out = (args.out / study.name).resolve()
    expected = expected_points(study)
    if args.analyze:
        print(f"study {study.name}: {study.mode} scaling, analysing {out}")
        return analyze(study, out, expected)
    print(f"study {study.name}: {study.mode} scaling, ranks {list(study.ranks)}, via {launcher}")
    for note in too_few_ranks(study):
        print(note)
    if args.overwrite:
        study_dir.remove_runs(out)
    try:
        plan = study_dir.plan(
            expected,
            study_dir.survey(out, study.series()),
            lambda series, ranks: run_options(study, series, ranks),
        )
    except study_dir.ResultsChanged as exc:
        print(
            f"scaling: error: {out} already holds results: {exc}. Nothing was changed: pass "
            "--overwrite to replace every run of the study, or choose another --out",
            file=sys.stderr,
        )
        return 2
    if plan.kept:
        print(f"keeping {len(plan.kept)} complete runs; {len(plan.todo)} points to run")
    if plan.todo:
        removed = study_dir.remove_derived(out)
        model = [name for name in removed if name in study_dir.MODEL_FILES]
        if removed:
            print(
                f"removed {len(removed)} files derived from the previous runs (the tables and "
                "figures are written again at the end"
                + (f"; {', '.join(model)}: run experiments.perfmodel again)" if model else ")")
            )
        warn_before(study, launcher)
        try:
            launch_all(study, plan.todo, out, args.data_dir, launcher)
        except StudyError as exc:
            print(f"scaling: error: {exc}", file=sys.stderr)
            return 2
    return analyze(study, out, expected)


if __name__ == "__main__":
    sys.exit(main())
