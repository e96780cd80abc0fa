"""``experiments/bench_gpu.py``: its kernel sizing on the CPU, and on a GPU (when there
is one) a small run at the widths where the single-pass kernel stops fitting."""

from __future__ import annotations

import json

import pytest
from test_gpu import require_gpu

from experiments import bench_gpu

#: kernels.gpu's _MAX_WARPS and _SHARED_BYTES (kernels.gpu itself needs CuPy to import).
MAX_WARPS, SHARED_BYTES = 8, 48 * 1024


@pytest.mark.parametrize(
    ("features", "warps"),
    [
        (1, 8),
        (100, 8),
        (766, 8),
        (767, 7),
        (3070, 2),
        (3071, 1),
        (6142, 1),
        (6143, 0),
        (100_000, 0),
    ],  # fmt: skip
)
def test_single_pass_warps_fill_the_shared_memory_and_reach_zero_above_6142(features, warps):
    """(d + 2) doubles per warp in 48 KiB: 6,142 features is the widest single-pass row;
    above it 0 warps (the two-GEMM path), where the benchmark used to divide by zero."""
    got = bench_gpu.single_pass_warps(features, MAX_WARPS, SHARED_BYTES)
    assert got == warps
    assert got == 0 or 8 * got * (features + 2) <= SHARED_BYTES


def test_the_sizing_matches_kernels_gpu():
    """The constants above are kernels.gpu's (checked where CuPy imports)."""
    require_gpu()
    from kernels import gpu

    assert (gpu._MAX_WARPS, gpu._SHARED_BYTES) == (MAX_WARPS, SHARED_BYTES)


def test_without_a_gpu_the_benchmark_says_so_and_exits_2(monkeypatch, capsys, tmp_path):
    import kernels

    monkeypatch.setattr(kernels, "gpu_unavailable_reason", lambda: "no CUDA device is available")
    assert bench_gpu.main(["--quick", "--out", str(tmp_path / "b.json")]) == 2
    assert "cannot run here: no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("features", [6142, 6143])
def test_the_gradient_benchmark_runs_on_both_sides_of_the_widest_single_pass_row(
    tmp_path, features
):
    require_gpu()
    args = bench_gpu.parse_args(["--rows", "300", "--features", str(features), "--repeats", "1"])
    result = bench_gpu.bench_gradient(args)
    expected = "single-pass" if features == 6142 else "two GEMMs"
    assert result["kernel_path"].startswith(expected)
    assert result["times"]["kernel"]["median_s"] > 0
    json.dumps(result)  # what main() writes
