"""Strong- and weak-scaling studies: run every point, keep its record, summarise, plot.

Usage (from the repository root)::

    python -m experiments.scaling STUDY.toml [--out results] [--ranks 1,2,4]
        [--launcher auto|mpirun|srun] [--launcher-args=ARGS]
        [--data-dir build/scaling-data] [--analyze]

For each repeat, series (strategy x model x backend) and rank count P it launches
``mpigd train`` with ``mpirun -n P`` on a workstation, or ``srun --ntasks=P`` inside a
Slurm allocation (``SLURM_JOB_ID`` set), and keeps the run directory. Repeats form the
outer loop, so slow drifts of the machine spread over all points. Then it writes, under
``OUT/<study>/``:

- ``points.csv``: one row per run, read from its ``run.json`` and ``metrics.jsonl``;
- ``summary.csv`` and ``summary.json``: medians and spread per point, speedup, efficiency,
  Karp-Flatt serial fraction, and the Amdahl (strong) or Gustafson (weak) fit;
- ``speedup``, ``efficiency``, ``karp_flatt`` and ``breakdown`` figures (PNG and PDF).

Times are seconds per epoch, averaged over each run's epochs after the first
``skip_epochs`` (epoch 1 also reads the data). ``--analyze`` skips the runs and rebuilds
the tables and figures from the run records already there. The study file format is in
:mod:`experiments.study`; the summary's definitions are in :mod:`experiments.summary`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from experiments.study import SYNTH_KEYS, Study, StudyError, load_study
from experiments.summary import summarize
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
    "launcher",
    "run_dir",
)
#: One MPI rank is one core: no BLAS or Numba threads of their own.
SINGLE_THREADED = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
}


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
    parser.add_argument(
        "--analyze", action="store_true", help="no runs: rebuild tables and plots from records"
    )
    return parser.parse_args(argv)


def _rank_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def choose_launcher(requested: str) -> str:
    """``srun`` inside a Slurm allocation (``SLURM_JOB_ID`` set and srun found), else mpirun."""
    if requested != "auto":
        return requested
    inside_slurm = "SLURM_JOB_ID" in os.environ and shutil.which("srun") is not None
    return "srun" if inside_slurm else "mpirun"


def launch_prefix(launcher: str, ranks: int, extra_args=()) -> list[str]:
    """The command that starts ``ranks`` MPI processes of what follows it."""
    if launcher == "srun":
        return ["srun", f"--ntasks={ranks}", "--kill-on-bad-exit=1", *extra_args]
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or "mpirun"
    return [mpirun, "-n", str(ranks), *extra_args]


def train_flags(options: dict) -> list[str]:
    """``mpigd train`` flags for a dict of options (``True`` -> bare flag, ``False`` -> none)."""
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags


def prepare_data(study: Study, ranks: int, data_dir: Path) -> Path:
    """Path of the training data for the run at ``ranks``; writes synthetic data once.

    Synthetic datasets are named after their options and reused by later studies; the
    writer is atomic, so an existing directory is complete.
    """
    if "path" in study.data:
        return Path(study.data["path"]).resolve()
    options = {key: study.data[key] for key in SYNTH_KEYS if key in study.data}
    options["rows"] = study.total_rows(ranks)
    name = "-".join(f"{key}{value}" for key, value in sorted(options.items()))
    out = (data_dir / name).resolve()
    if not (out / "train").is_dir():
        command = [sys.executable, "-m", "mpigd", "data", "synth", "--test-fraction", "0"]
        command += train_flags(options) + ["--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StudyError(f"writing synthetic data failed: {result.stderr.strip()}")
    return out / "train"


def run_point(study: Study, series, ranks: int, data: Path, run_dir: Path, launcher: str):
    """Launch one training run into a fresh ``run_dir``; return its exit status.

    The launcher's console output goes to ``run_dir/console.log`` for people; nothing
    reads it back.
    """
    strategy, model, backend = series
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    options = dict(study.train, strategy=strategy, model=model, backend=backend)
    command = launch_prefix(launcher, ranks, study.launcher_args)
    command += [sys.executable, "-m", "mpigd", "train", "--data", str(data)]
    command += train_flags(options) + ["--out", str(run_dir), "--quiet"]
    env = dict(os.environ, **SINGLE_THREADED)
    with open(run_dir / "console.log", "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        try:
            result = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=study.timeout_s
            )
        except subprocess.TimeoutExpired:
            log.write(f"\nharness: killed after {study.timeout_s} s\n")
            return None
    return result.returncode


def read_point(run_dir: Path, skip_epochs: int) -> dict:
    """One points.csv row's measured fields, from ``run.json`` and ``metrics.jsonl``.

    Per-epoch fields are means over the epochs after the first ``skip_epochs`` (all
    epochs if the run had no more). As in ``metrics.jsonl``, ``compute_s``, ``comm_s`` and
    ``io_s`` are means over the ranks (``comm_s`` includes waiting for slower ranks inside
    collectives) and ``*_max`` the busiest rank's; ``eval_s`` is the test evaluation.
    ``other_s = time_s - compute_s - comm_s - io_s - eval_s`` is the rest of the epoch:
    the average rank's Python between phases. A run without a ``run.json`` gets status
    ``no-record``; one that failed early has only the fields its record holds; one killed
    outright (SIGKILL, out of memory) is ``died`` (:func:`mpigd.record.read_run`), with its
    ``last_heartbeat``. ``stop_reason`` says why a run did not complete.
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
    return point


def run_study(study: Study, out: Path, data_dir: Path, launcher: str, analyze: bool) -> list:
    """Run (unless ``analyze``) and read every point; return the points.csv rows."""
    points = []
    for repeat in range(study.repeats):
        for series in study.series():
            for ranks in study.ranks:
                run_dir = out / "runs" / "-".join(series) / f"p{ranks:04d}-r{repeat}"
                if not analyze:
                    data = prepare_data(study, ranks, data_dir)
                    status = run_point(study, series, ranks, data, run_dir, launcher)
                    print(
                        f"{'-'.join(series)} P={ranks} repeat {repeat}: "
                        f"{'ok' if status == 0 else f'FAILED ({status})'}",
                        flush=True,
                    )
                strategy, model, backend = series
                point = dict(
                    study=study.name,
                    mode=study.mode,
                    strategy=strategy,
                    model=model,
                    backend=backend,
                    ranks=ranks,
                    repeat=repeat,
                    launcher=launcher,
                    run_dir=str(run_dir),
                )
                point.update(read_point(run_dir, study.skip_epochs))
                if point.get("rows"):
                    point["rows_per_rank"] = point["rows"] / ranks
                points.append(point)
    return points


def write_csv(rows: list[dict], path: Path, fields) -> None:
    """Write ``rows`` (dicts) as CSV with columns ``fields``; missing values stay empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`; numbers become int or float, empty None."""
    with open(path, newline="") as handle:
        return [
            {key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _number(text: str):
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> int:
    """Run the study, write its tables and figures; exit 1 if any run failed."""
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
    print(f"study {study.name}: {study.mode} scaling, ranks {list(study.ranks)}, via {launcher}")
    try:
        points = run_study(study, out, args.data_dir, launcher, args.analyze)
    except StudyError as exc:
        print(f"scaling: error: {exc}", file=sys.stderr)
        return 2
    write_csv(points, out / "points.csv", POINT_FIELDS)
    summary = summarize(points, study.mode)
    write_csv(summary["rows"], out / "summary.csv", summary["fields"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    from experiments.plots import plot_study

    figures = plot_study(summary, out)
    failed = [p for p in points if p["status"] != "completed"]
    print(f"points: {out / 'points.csv'}\nsummary: {out / 'summary.csv'}")
    print("figures: " + " ".join(str(path) for path in figures))
    for point in failed:
        why = f": {point['stop_reason']}" if point.get("stop_reason") else ""
        print(f"FAILED: {point['run_dir']} ({point['status']}{why}); see its console.log")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
