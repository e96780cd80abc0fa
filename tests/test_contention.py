"""What the harness records about the machine at each launch, and the marks it derives."""

from __future__ import annotations

import os

import pytest

from experiments import contention


def test_more_ranks_per_node_than_cores_is_oversubscribed():
    assert contention.marks(2, 4, 0.0) == {"oversubscribed": True, "loaded": False}
    assert contention.marks(2, 2, 0.0)["oversubscribed"] is False
    assert contention.marks(None, 4, None) == {"oversubscribed": None, "loaded": None}


def test_other_processes_busy_on_half_a_core_mark_a_run_loaded():
    assert contention.marks(2, 1, contention.BUSY_CORES)["loaded"] is True
    assert contention.marks(2, 1, 0.1)["loaded"] is False


def test_ranks_per_node_is_the_most_ranks_on_one_host():
    assert contention.ranks_per_node(["a", "a", "b", "a"]) == 3
    assert contention.ranks_per_node([]) is None
    assert contention.ranks_per_node(None) is None


@pytest.mark.parametrize(
    "args, environ, binding",
    [
        (["-bind-to", "core"], {}, "-bind-to core"),
        (["--cpu-bind=cores"], {}, "--cpu-bind cores"),
        ([], {"SLURM_CPU_BIND": "quiet,cores"}, "SLURM_CPU_BIND=quiet,cores"),
        ([], {"HYDRA_BINDING": "core"}, "HYDRA_BINDING=core"),
        (["--mpi=pmi2"], {}, None),
    ],
)
def test_cpu_binding_is_read_from_launcher_arguments_or_environment(args, environ, binding):
    assert contention.cpu_binding(args, environ) == binding


def test_busy_cores_counts_only_this_process_cpus(monkeypatch, tmp_path):
    """Two reads of /proc/stat: cpu0 fully busy in between, cpu1 (not ours) too."""
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    stat.write_text("cpu 0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\n")

    def advance(_seconds):
        stat.write_text("cpu 0 0 0 0 0 0 0 0\ncpu0 150 0 0 150 0 0 0 0\ncpu1 50 0 0 200 0 0 0 0\n")

    monkeypatch.setattr(contention, "PROC_STAT", stat)
    monkeypatch.setattr(contention.time, "sleep", advance)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert contention.busy_cores() == pytest.approx(0.5)  # 50 of 100 jiffies on one CPU


def test_busy_cores_is_unknown_without_proc_stat(monkeypatch, tmp_path):
    monkeypatch.setattr(contention, "PROC_STAT", tmp_path / "missing")
    assert contention.busy_cores() is None


def test_launch_facts_record_this_machine():
    facts = contention.launch_facts(["-bind-to", "core"])
    assert facts["cores"] == contention.cores_available() >= 1
    assert facts["cpu_binding"] == "-bind-to core"
    assert facts["load_1min"] >= 0.0
    assert facts["busy_cores"] is None or 0.0 <= facts["busy_cores"] <= facts["cores"]


def test_warnings_name_the_oversubscribed_and_loaded_runs():
    def row(ranks, repeat, busy):
        return {
            "strategy": "allreduce",
            "model": "logreg",
            "backend": "numba",
            "status": "completed",
            "ranks": ranks,
            "repeat": repeat,
            "cores": 2,
            "ranks_per_node": ranks,
            "busy_cores": busy,
            **contention.marks(2, ranks, busy),
        }

    lines = contention.warnings([row(1, 0, 0.0), row(4, 0, 0.0), row(2, 0, 1.2)])
    assert len(lines) == 2
    assert lines[0].startswith("WARNING: 1 of 3 runs oversubscribed")
    assert "P=4: 4 ranks per node on 2 cores" in lines[0]
    assert "loaded machine" in lines[1] and "allreduce/logreg/numba P=2 repeat 0" in lines[1]
    assert contention.warnings([row(1, 0, 0.0)]) == []
