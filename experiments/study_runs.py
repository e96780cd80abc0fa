"""Launching the points of a scaling study: their data, options, command and harness.json.

A point is one (series, ranks, repeat), a series one (strategy, model, backend). Each
run is ``mpigd train`` under ``mpirun -n P`` (or ``srun --ntasks=P`` in a Slurm
allocation), one thread per rank, into its own directory
(:func:`experiments.study_dir.run_dir`). Before the launch the harness writes
``harness.json`` there: the point, the options it is made with (:func:`run_options`,
what a rerun compares) and the machine's state (:func:`experiments.contention.launch_facts`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from experiments import contention, study_dir
from experiments.launch import mpirun, one_thread_env
from experiments.study import SYNTH_KEYS, Study, StudyError
from mpigd.strategies import STRATEGIES


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
    return [mpirun(), "-n", str(ranks), *extra_args]


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


def dataset_name(study: Study, ranks: int) -> str:
    """What identifies the training data of the run at ``ranks``, wherever it is stored.

    Synthetic datasets are named after their ``data synth`` options; an existing dataset
    is its resolved path.
    """
    if "path" in study.data:
        return str(Path(study.data["path"]).resolve())
    options = {key: study.data[key] for key in SYNTH_KEYS if key in study.data}
    options["rows"] = study.total_rows(ranks)
    return "-".join(f"{key}{value}" for key, value in sorted(options.items()))


def prepare_data(study: Study, ranks: int, data_dir: Path) -> Path:
    """Path of the training data for the run at ``ranks``; writes synthetic data once.

    Synthetic datasets (``data_dir/<dataset_name>``) are reused by later studies; the
    writer is atomic, so an existing directory is complete.
    """
    if "path" in study.data:
        return Path(dataset_name(study, ranks))
    out = (data_dir / dataset_name(study, ranks)).resolve()
    if not (out / "train").is_dir():
        options = {key: study.data[key] for key in SYNTH_KEYS if key in study.data}
        options["rows"] = study.total_rows(ranks)
        command = [sys.executable, "-m", "mpigd", "data", "synth", "--test-fraction", "0"]
        command += train_flags(options) + ["--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StudyError(f"writing synthetic data failed: {result.stderr.strip()}")
    return out / "train"


def run_options(study: Study, series, ranks: int) -> dict:
    """What a run of ``series`` at ``ranks`` is made with: the options harness.json keeps.

    Two runs with equal options measure the same thing; a rerun compares them
    (:func:`experiments.study_dir.plan`).
    """
    strategy, model, backend = series
    return {
        "train": dict(study.train, strategy=strategy, model=model, backend=backend),
        "data": dataset_name(study, ranks),
        "launcher_args": list(study.launcher_args),
    }


def expected_points(study: Study) -> list[tuple]:
    """Every (series, ranks, repeat) of the study, in launch order (repeats outermost),
    without the rank counts a series' strategy cannot run on (:func:`too_few_ranks`)."""
    return [
        (series, ranks, repeat)
        for repeat in range(study.repeats)
        for series in study.series()
        for ranks in study.ranks
        if ranks >= _least_ranks(series[0])
    ]


def _least_ranks(strategy: str) -> int:
    """The fewest ranks ``strategy`` runs on; 1 for a name mpigd does not know (its runs
    fail with mpigd's own message, as a result of the study)."""
    known = STRATEGIES.get(strategy)
    return known.min_ranks if known else 1


def too_few_ranks(study: Study) -> list[str]:
    """One note per series whose strategy needs more ranks than some of the study's
    rank counts (ps-sync: a server and a worker), naming the counts left out."""
    notes = []
    for series in study.series():
        least = _least_ranks(series[0])
        left_out = [p for p in study.ranks if p < least]
        if left_out:
            notes.append(f"{'-'.join(series)}: --strategy {series[0]} needs at least {least} "
                         f"ranks, so P={','.join(map(str, left_out))} is not run")  # fmt: skip
    return notes


def run_point(study: Study, key, data: Path, run_dir: Path, launcher: str):
    """Launch one training run into a fresh ``run_dir``; return its exit status.

    ``key`` is the point's (series, ranks, repeat). First ``harness.json`` records the
    point, its options and the machine just before the launch
    (:func:`experiments.contention.launch_facts`). The launcher's console output goes to
    ``run_dir/console.log`` for people; nothing reads it back.
    """
    series, ranks, repeat = key
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    options = run_options(study, series, ranks)
    command = launch_prefix(launcher, ranks, study.launcher_args)
    command += [sys.executable, "-m", "mpigd", "train", "--data", str(data)]
    command += train_flags(options["train"]) + ["--out", str(run_dir), "--quiet"]
    strategy, model, backend = series
    study_dir.write_harness(
        run_dir,
        {
            "study": study.name,
            "strategy": strategy,
            "model": model,
            "backend": backend,
            "ranks": ranks,
            "repeat": repeat,
            "options": options,
            "command": command,
            "launcher": launcher,
            **contention.launch_facts(study.launcher_args),
            "launched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    with open(run_dir / "console.log", "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        try:
            result = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=one_thread_env(),
                timeout=study.timeout_s,
            )
        except subprocess.TimeoutExpired:
            log.write(f"\nharness: killed after {study.timeout_s} s\n")
            return None
    return result.returncode


def launch_all(study: Study, todo: list[tuple], out: Path, data_dir: Path, launcher: str):
    """Launch every point of ``todo`` in order, printing one line per run."""
    for key in todo:
        series, ranks, repeat = key
        data = prepare_data(study, ranks, data_dir)
        status = run_point(study, key, data, study_dir.run_dir(out, *key), launcher)
        print(
            f"{'-'.join(series)} P={ranks} repeat {repeat}: "
            f"{'ok' if status == 0 else f'FAILED ({status})'}",
            flush=True,
        )
