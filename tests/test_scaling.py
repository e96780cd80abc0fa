"""The scaling harness end to end on a tiny problem, and its study-file checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO

from experiments import scaling
from experiments.study import StudyError, load_study

pytestmark = pytest.mark.timeout(300)

TINY_STUDY = """
[study]
name = "tiny"
mode = "{mode}"
ranks = [1, 2]
repeats = 2
skip_epochs = 1
strategies = {strategies}

[data]
task = "binary"
rows = 3000
features = 5
shards = 2
seed = 4

[train]
model = "logreg"
optimizer = "gd"
lr = 0.5
epochs = 4
"""


def write_study(tmp_path, mode="weak", strategies='["allreduce"]'):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY.format(mode=mode, strategies=strategies))
    return path


def run_harness(tmp_path, study, *extra):
    return scaling.main(
        [
            str(study),
            "--out",
            str(tmp_path / "results"),
            "--data-dir",
            str(tmp_path / "data"),
            "--launcher",
            "mpirun",
            *extra,
        ]
    )


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def weak_study(tmp_path_factory):
    """One weak-scaling study run by the harness: (its results directory, exit status)."""
    tmp_path = tmp_path_factory.mktemp("scaling")
    status = run_harness(tmp_path, write_study(tmp_path))
    return tmp_path / "results" / "tiny", status


def test_harness_writes_one_point_per_run(weak_study):
    out, status = weak_study
    assert status == 0
    points = read_rows(out / "points.csv")
    assert [(p["ranks"], p["repeat"]) for p in points] == [
        ("1", "0"),
        ("2", "0"),
        ("1", "1"),
        ("2", "1"),
    ]
    assert tuple(points[0]) == scaling.POINT_FIELDS
    for p in points:
        assert p["status"] == "completed" and p["launcher"] == "mpirun"
        assert int(p["rows"]) == 3000 * int(p["ranks"])  # weak: rows per rank fixed
        assert float(p["rows_per_rank"]) == 3000
        assert int(p["epochs_measured"]) == 3  # epochs 2..4
        assert float(p["time_s"]) > 0 and float(p["compute_s"]) > 0
        parts = sum(float(p[k]) for k in ("compute_s", "comm_s", "io_s", "eval_s", "other_s"))
        assert parts == pytest.approx(float(p["time_s"]))
        run = json.loads((Path(p["run_dir"]) / "run.json").read_text())
        assert run["world_size"] == int(p["ranks"])


def test_harness_summary_and_figures(weak_study):
    out, _ = weak_study
    summary = read_rows(out / "summary.csv")
    assert [row["ranks"] for row in summary] == ["1", "2"]
    assert all(row["repeats"] == "2" for row in summary)
    assert float(summary[0]["speedup"]) == pytest.approx(1.0)
    fit = json.loads((out / "summary.json").read_text())["series"][0]["fit"]
    assert fit["law"] == "gustafson"
    for name in ("speedup", "efficiency", "karp_flatt", "breakdown"):
        for suffix in (".png", ".pdf"):
            assert (out / name).with_suffix(suffix).stat().st_size > 1000


def test_analyze_rebuilds_the_tables_from_the_records(weak_study, tmp_path):
    out, _ = weak_study
    copy = tmp_path / "results" / "tiny"
    shutil.copytree(out, copy)
    (copy / "points.csv").unlink()
    study = write_study(tmp_path)
    assert run_harness(tmp_path, study, "--analyze") == 0
    before = read_rows(out / "points.csv")
    after = read_rows(copy / "points.csv")
    assert [p["time_s"] for p in after] == [p["time_s"] for p in before]


def test_a_strategy_mpigd_refuses_fails_its_points_not_the_study(tmp_path):
    study = write_study(tmp_path, mode="strong", strategies='["no-such-strategy"]')
    study.write_text(study.read_text().replace("repeats = 2", "repeats = 1"))
    assert run_harness(tmp_path, study, "--ranks", "1") == 1
    points = read_rows(tmp_path / "results" / "tiny" / "points.csv")
    assert [p["status"] for p in points] == ["no-record"]
    log = tmp_path / "results" / "tiny" / "runs" / "no-such-strategy-logreg-numba"
    assert "no-such-strategy" in (log / "p0001-r0" / "console.log").read_text()


def test_train_flags_follow_the_command_line():
    flags = scaling.train_flags({"batch_size": 64, "nesterov": True, "resume": False, "l2": 0.1})
    assert flags == ["--batch-size", "64", "--nesterov", "--l2", "0.1"]


def test_launcher_is_srun_inside_a_slurm_allocation(monkeypatch, tmp_path):
    fake_srun = tmp_path / "srun"
    fake_srun.write_text("#!/bin/sh\n")
    fake_srun.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=":")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert scaling.choose_launcher("auto") == "srun"
    assert scaling.launch_prefix("srun", 4, ["--mpi=pmi2"])[:2] == ["srun", "--ntasks=4"]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert scaling.choose_launcher("auto") == "mpirun"
    assert scaling.launch_prefix("mpirun", 4)[1:] == ["-n", "4"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (('mode = "weak"', 'mode = "sideways"'), "mode"),
        (("ranks = [1, 2]", "ranks = [0, 2]"), "ranks"),
        (("epochs = 4", "epochs = 1"), "skip_epochs"),
        (("lr = 0.5", 'out = "x"'), "harness sets"),
        (("rows = 3000", "# no rows"), "rows"),
        (("[train]", "[trian]"), "unknown sections"),
        (("seed = 4", "colour = 4"), "colour"),
    ],
)
def test_bad_study_files_are_refused_with_a_reason(tmp_path, edit, words):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(StudyError, match=words):
        load_study(path)


def test_shipped_studies_are_valid():
    for path in (REPO / "experiments" / "studies").glob("*.toml"):
        if "[grid]" not in path.read_text():
            assert load_study(path).ranks
