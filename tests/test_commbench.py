"""The MPI microbenchmark: its CSV's units, under a real mpirun, and its figure."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, mpirun_command

from experiments import commbench

pytestmark = pytest.mark.timeout(180)


def run_commbench(n_ranks: int, *args: str) -> subprocess.CompletedProcess:
    """``mpirun -n N python -m experiments.commbench ARGS``; a hang fails after 120 s."""
    command = mpirun_command(n_ranks)[:-2] + ["-m", "experiments.commbench", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


def test_two_ranks_write_bandwidth_in_bytes_per_second_and_a_figure(tmp_path):
    out = tmp_path / "p2.csv"
    result = run_commbench(2, "--max-bytes", "1024", "--iterations", "20", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(commbench.FIELDS)
    sizes = [8 << k for k in range(8)]  # 8 B .. 1 KiB
    assert [(r["op"], int(r["bytes"])) for r in rows] == [
        (op, n) for op in commbench.OPS for n in sizes
    ]
    for row in rows:
        seconds = float(row["avg_us"]) * 1e-6
        assert float(row["GB_per_s"]) == pytest.approx(int(row["bytes"]) / seconds / 1e9)
        assert 0 < float(row["min_us"]) <= float(row["avg_us"]) <= float(row["max_us"])
        assert row["ranks"] == "2"
    streamed = [int(r["iterations"]) for r in rows if r["op"] == "sendrecv_bw"]
    assert all(n % commbench.WINDOW == 0 for n in streamed)  # messages, not windows
    # The console table gives every op's bandwidth in GB/s beside its time in us.
    header, *lines = [line.split() for line in result.stdout.splitlines()[:-1]]
    assert header == ["op", "bytes", "us", "per", "op", "GB/s"]
    printed = {(line[0], int(line[1])): float(line[3]) for line in lines}
    for row in rows:
        if (row["op"], int(row["bytes"])) in printed:
            assert printed[row["op"], int(row["bytes"])] == pytest.approx(
                float(row["GB_per_s"]), abs=1e-3
            )
    assert json.loads(out.with_suffix(".json").read_text())["ranks"] == 2
    for suffix in (".png", ".pdf"):
        assert out.with_suffix(suffix).stat().st_size > 1000


def test_figure_drawn_from_a_csv_alone(tmp_path):
    """No JSON beside it and only some ops: the figure is still drawn, from the CSV."""
    path = tmp_path / "bench.csv"
    rows = [
        commbench._row(op, 4, n, 10, [n * 1e-9 + 2e-6, n * 1e-9 + 3e-6])
        for op in ("allreduce", "sendrecv_bw")
        for n in (8, 64, 512, 4096)
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=commbench.FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    assert commbench.plot_commbench(path) == tmp_path / "bench.png"
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert rows[0]["GB_per_s"] == pytest.approx(8 / (8e-9 + 2.5e-6) / 1e9)


@pytest.mark.parametrize(
    ("n_bytes", "label"), [(8, "8 B"), (512, "512 B"), (4096, "4 KiB"), (1 << 21, "2 MiB")]
)
def test_size_labels(n_bytes, label):
    assert commbench._size_label(n_bytes) == label


def test_refuses_one_rank(tmp_path):
    command = [sys.executable, "-m", "experiments.commbench", "--out", str(tmp_path / "x.csv")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2 and "at least 2 ranks" in result.stderr
