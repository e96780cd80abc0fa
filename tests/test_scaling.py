"""The scaling harness: end to end on a tiny problem, then --analyze, reruns and the
contention marks on results directories written straight (no runs), and study-file checks."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO

from experiments import plots, scaling, study_dir, study_runs
from experiments.study import StudyError, load_study
from mpigd import comm

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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for p in points:
        assert p["status"] == "completed" and p["launcher"] == "mpirun"
        assert int(p["cores"]) == cores and int(p["ranks_per_node"]) == int(p["ranks"])
        assert p["oversubscribed"] == str(int(p["ranks"]) > cores)
        # The CPUs each rank could run on, as it found them: unbound here, all of them.
        assert p["rank_cpus"].split() == [comm._cpu_set()] * int(p["ranks"])
        assert float(p["load_1min"]) >= 0 and p["loaded"] in ("True", "False", "")
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
    for name in study_dir.FIGURES:
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


def test_a_rerun_of_a_complete_study_launches_nothing_and_keeps_every_run(weak_study, capsys):
    out, _ = weak_study
    before = {p: (p / "run.json").read_text() for p in out.glob("runs/*/p*")}
    capsys.readouterr()
    assert run_harness(out.parent.parent, write_study(out.parent.parent)) == 0
    assert "keeping 4 complete runs; 0 points to run" in capsys.readouterr().out
    assert {p: (p / "run.json").read_text() for p in out.glob("runs/*/p*")} == before


def test_a_strategy_mpigd_refuses_fails_its_points_not_the_study(tmp_path):
    study = write_study(tmp_path, mode="strong", strategies='["no-such-strategy"]')
    study.write_text(study.read_text().replace("repeats = 2", "repeats = 1"))
    assert run_harness(tmp_path, study, "--ranks", "1") == 1
    points = read_rows(tmp_path / "results" / "tiny" / "points.csv")
    assert [p["status"] for p in points] == ["no-record"]
    log = tmp_path / "results" / "tiny" / "runs" / "no-such-strategy-logreg-numba"
    assert "no-such-strategy" in (log / "p0001-r0" / "console.log").read_text()


def test_train_flags_follow_the_command_line():
    flags = study_runs.train_flags({"batch_size": 64, "nesterov": True, "resume": False, "l2": 0.1})
    assert flags == ["--batch-size", "64", "--nesterov", "--l2", "0.1"]


def test_launcher_is_srun_inside_a_slurm_allocation(monkeypatch, tmp_path):
    fake_srun = tmp_path / "srun"
    fake_srun.write_text("#!/bin/sh\n")
    fake_srun.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=":")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert study_runs.choose_launcher("auto") == "srun"
    assert study_runs.launch_prefix("srun", 4, ["--mpi=pmi2"])[:2] == ["srun", "--ntasks=4"]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert study_runs.choose_launcher("auto") == "mpirun"
    assert study_runs.launch_prefix("mpirun", 4)[1:] == ["-n", "4"]


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


# Results directories written straight, as a harness run leaves them: no mpirun.

SERIES = ("allreduce", "logreg", "numba")


def fake_run(out, study, ranks, repeat, status="completed", cores=2, busy=0.0, options=None):
    """One run directory: run.json, metrics.jsonl (4 epochs) and harness.json."""
    path = study_dir.run_dir(out, SERIES, ranks, repeat)
    path.mkdir(parents=True)
    run = {
        "status": status,
        "world_size": ranks,
        "hosts": ["node0"] * ranks,
        "dataset": {"rows": 3000 * ranks, "features": 5},
        "model_info": {"n_params": 6},
        "final_train_loss": 0.5,
    }
    (path / "run.json").write_text(json.dumps(run))
    seconds = 0.01 * (1 + 0.1 * ranks) * (1 + 0.05 * repeat)
    epochs = [
        {"epoch": e, "time_s": seconds, "compute_s": 0.8 * seconds, "comm_s": 0.1 * seconds,
         "io_s": 0.0, "eval_s": 0.0, "samples_per_s": 3000 / seconds, "steps": 1}
        for e in range(1, 5)
    ]  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    harness = {
        "strategy": SERIES[0],
        "model": SERIES[1],
        "backend": SERIES[2],
        "ranks": ranks,
        "repeat": repeat,
        "options": options or study_runs.run_options(study, SERIES, ranks),
        "launcher": "mpirun",
        "cores": cores,
        "load_1min": 0.2,
        "busy_cores": busy,
        "cpu_binding": None,
    }
    study_dir.write_harness(path, harness)
    return path


@pytest.fixture
def fake_study(tmp_path, monkeypatch):
    """(study file, loaded study, its results directory) of the tiny weak study, 1 repeat.

    Figures are not drawn (test_scaling_figures reads them; drawing takes seconds).
    """
    monkeypatch.setattr(plots, "plot_study", lambda summary, out: [])
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("repeats = 2", "repeats = 1"))
    return path, load_study(path), tmp_path / "results" / "tiny"


def test_a_run_with_more_ranks_than_cores_is_marked_in_every_table(fake_study, capsys):
    path, study, out = fake_study
    for ranks in (1, 2, 4):
        fake_run(out, study, ranks, 0, cores=2)
    assert run_harness(out.parent.parent, path, "--analyze", "--ranks", "1,2,4") == 0
    points = read_rows(out / "points.csv")
    assert [(p["ranks"], p["oversubscribed"]) for p in points] == [
        ("1", "False"),
        ("2", "False"),
        ("4", "True"),
    ]
    assert [p["ranks_per_node"] for p in points] == ["1", "2", "4"]
    summary = read_rows(out / "summary.csv")
    assert [row["oversubscribed"] for row in summary] == ["False", "False", "True"]
    record = json.loads((out / "summary.json").read_text())
    assert [row["oversubscribed"] for row in record["rows"]] == [False, False, True]
    assert record["warnings"][0].startswith("WARNING: 1 of 3 runs oversubscribed the cores")
    assert record["warnings"][0] in capsys.readouterr().out


def test_a_run_started_on_a_loaded_machine_is_marked_and_warned(fake_study, capsys):
    path, study, out = fake_study
    fake_run(out, study, 1, 0)
    fake_run(out, study, 2, 0, busy=1.3)
    assert run_harness(out.parent.parent, path, "--analyze") == 0
    assert [p["loaded"] for p in read_rows(out / "points.csv")] == ["False", "True"]
    assert [row["loaded_repeats"] for row in read_rows(out / "summary.csv")] == ["0", "1"]
    assert "runs started on a loaded machine (other processes kept up to 1.3 of 2 cores" in (
        capsys.readouterr().out
    )


def test_analyze_reads_every_run_on_disk_and_names_the_missing_in_one_line(fake_study, capsys):
    path, study, out = fake_study  # the study file asks for P = 1, 2
    fake_run(out, study, 1, 0)
    fake_run(out, study, 8, 0, cores=16)  # run earlier with --ranks 1,8
    assert run_harness(out.parent.parent, path, "--analyze") == 0
    assert [p["ranks"] for p in read_rows(out / "points.csv")] == ["1", "8"]
    assert [row["ranks"] for row in read_rows(out / "summary.csv")] == ["1", "8"]
    printed = capsys.readouterr().out
    assert "FAILED" not in printed
    missing = [line for line in printed.splitlines() if line.startswith("missing")]
    assert missing == [
        "missing 1 of 2 points (no run directory): allreduce/logreg/numba P=2 (repeat 0)"
    ]


def test_analyze_of_an_empty_results_directory_fails_and_writes_nothing(fake_study, capsys):
    path, _, out = fake_study
    assert run_harness(out.parent.parent, path, "--analyze") == 2
    assert not out.exists()
    captured = capsys.readouterr()
    assert "nothing to analyse" in captured.err
    assert "FAILED" not in captured.out + captured.err
    assert "missing 2 of 2 points" in captured.err


def test_analyze_reports_a_failed_run_once_and_points_to_a_log_only_if_there(fake_study, capsys):
    path, study, out = fake_study
    fake_run(out, study, 1, 0)
    failed = fake_run(out, study, 2, 0, status="failed")
    assert run_harness(out.parent.parent, path, "--analyze") == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert lines == [f"FAILED: {failed} (failed)"]
    assert [row["ranks"] for row in read_rows(out / "summary.csv")] == ["1"]


def test_a_rerun_launches_only_the_missing_points_and_removes_stale_derived_files(
    fake_study, monkeypatch, capsys
):
    path, study, out = fake_study
    kept = fake_run(out, study, 1, 0)
    (out / "model.json").write_text("{}")  # fitted by perfmodel to the P = 1 run alone
    launched = []

    def fake_launch(study, todo, out, data_dir, launcher):
        assert not (out / "model.json").exists()  # gone before anything runs
        for _, ranks, repeat in todo:
            launched.append((ranks, repeat))
            fake_run(out, study, ranks, repeat)

    monkeypatch.setattr(scaling, "launch_all", fake_launch)
    before = (kept / "run.json").read_text(), (kept / study_dir.HARNESS_FILE).read_text()
    assert run_harness(out.parent.parent, path) == 0
    assert launched == [(2, 0)]
    assert ((kept / "run.json").read_text(), (kept / study_dir.HARNESS_FILE).read_text()) == before
    assert "model.json: run experiments.perfmodel again" in capsys.readouterr().out
    assert [p["ranks"] for p in read_rows(out / "points.csv")] == ["1", "2"]


def test_a_rerun_with_other_options_refuses_and_changes_nothing(fake_study, monkeypatch, capsys):
    path, study, out = fake_study
    fake_run(out, study, 1, 0)
    (out / "model.json").write_text("{}")
    path.write_text(path.read_text().replace("lr = 0.5", "lr = 0.1"))
    monkeypatch.setattr(scaling, "launch_all", lambda *args: pytest.fail("launched"))
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert run_harness(out.parent.parent, path) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
    error = capsys.readouterr().err
    assert "lr 0.5 -> 0.1" in error and "Nothing was changed" in error and "--overwrite" in error


def test_runs_of_an_older_harness_are_not_mixed_with_new_ones(fake_study, monkeypatch):
    path, study, out = fake_study
    old = fake_run(out, study, 1, 0)
    (old / study_dir.HARNESS_FILE).unlink()
    monkeypatch.setattr(scaling, "launch_all", lambda *args: pytest.fail("launched"))
    assert run_harness(out.parent.parent, path) == 2
    assert (old / "run.json").is_file()


def test_overwrite_replaces_every_run_and_the_derived_files(fake_study, monkeypatch):
    path, study, out = fake_study
    fake_run(out, study, 1, 0)
    fake_run(out, study, 16, 0, cores=16)  # not asked for now: replaced all the same
    (out / "model.json").write_text("{}")
    path.write_text(path.read_text().replace("lr = 0.5", "lr = 0.1"))
    study = load_study(path)
    launched = []

    def fake_launch(study, todo, out, data_dir, launcher):
        assert not (out / study_dir.RUNS).exists() and not (out / "model.json").exists()
        for _, ranks, repeat in todo:
            launched.append((ranks, repeat))
            fake_run(out, study, ranks, repeat)

    monkeypatch.setattr(scaling, "launch_all", fake_launch)
    assert run_harness(out.parent.parent, path, "--overwrite") == 0
    assert launched == [(1, 0), (2, 0)]
    assert [p["ranks"] for p in read_rows(out / "points.csv")] == ["1", "2"]


def test_rank_counts_a_strategy_cannot_run_on_are_left_out_and_said_so(tmp_path):
    path = write_study(tmp_path, mode="strong", strategies='["allreduce", "ps-sync"]')
    study = load_study(path, ranks=[1, 2])
    points = {(series[0], ranks) for series, ranks, _ in study_runs.expected_points(study)}
    assert points == {("allreduce", 1), ("allreduce", 2), ("ps-sync", 2)}
    assert study_runs.too_few_ranks(study) == [
        "ps-sync-logreg-numba: --strategy ps-sync needs at least 2 ranks, so P=1 is not run"
    ]
