"""``experiments/gpu_verify.sh`` and its Python steps, on the CPU: the script parses, the
kernels it would report are all of kernels/*.cu, and the parity comparison tells equal
runs from different ones. (``DRY_RUN=1 bash experiments/gpu_verify.sh`` runs the whole
script without a GPU; too slow for the unit tests.)"""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest
from helpers import REPO

from experiments import gpu_verify


def test_the_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(REPO / "experiments" / "gpu_verify.sh")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_every_kernel_of_the_cuda_sources_is_found():
    found = {source.name: gpu_verify.kernel_names(source.read_text())
             for source in sorted((REPO / "kernels").glob("*.cu"))}  # fmt: skip
    assert found == {
        "linear_grad.cu": ["linear_rows", "linear_grad_f32_k4", "linear_grad_f32_k8",
                           "linear_grad_f64_k4", "linear_grad_f64_k8"],
        "softmax_rows.cu": ["softmax_xent_rows_f32", "softmax_xent_rows_f64"],
    }  # fmt: skip


def fake_run(directory, params, losses, metrics):
    """A run directory with model.h5's params and metrics.jsonl's train losses, and the
    ``mpigd eval`` output next to it; returns (run directory, eval file)."""
    directory.mkdir(parents=True)
    with h5py.File(directory / "model.h5", "w") as handle:
        handle["params"] = np.asarray(params, dtype=float)
    lines = [json.dumps({"epoch": i + 1, "train_loss": loss}) for i, loss in enumerate(losses)]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    evaluation = directory.with_suffix(".json")
    evaluation.write_text(json.dumps({"model": "logreg", "data": "x", **metrics}) + "\n")
    return directory, evaluation


@pytest.mark.parametrize(
    ("change", "failing"),
    [({}, None), ({"params": [1.0, 2.0 + 1e-7]}, "parameters"),
     ({"losses": [0.5, 0.4 + 1e-6]}, "train losses"), ({"losses": [0.5]}, "epochs"),
     ({"metrics": {"loss": 0.3, "accuracy": 0.75}}, "eval accuracy")],
    ids=["equal", "parameters", "losses", "epochs", "eval"],
)  # fmt: skip
def test_compare_tells_equal_runs_from_different_ones(tmp_path, change, failing):
    base = {"params": [1.0, 2.0], "losses": [0.5, 0.4], "metrics": {"loss": 0.3, "accuracy": 0.8}}
    run_a, eval_a = fake_run(tmp_path / "pair" / "numba", **base)
    run_b, eval_b = fake_run(tmp_path / "pair" / "cupy", **{**base, **change})
    out = tmp_path / "compare.json"
    status = gpu_verify.main(["--out", str(out), "compare", str(run_a), str(run_b), "--eval",
                              str(eval_a), str(eval_b)])  # fmt: skip
    failures = json.loads(out.read_text())["failures"]
    if failing is None:
        assert status == 0 and failures == []
    else:
        assert status == 1 and any(failing in failure for failure in failures), failures


def test_gpu_steps_say_they_cannot_run_without_a_gpu(monkeypatch, capsys):
    import kernels

    monkeypatch.setattr(kernels, "gpu_unavailable_reason", lambda: "no CUDA device is available")
    for command in ("kernels", "paths"):
        with pytest.raises(SystemExit) as stopped:
            gpu_verify.main([command])
        assert stopped.value.code == 2
        assert "needs CuPy and a GPU: no CUDA device" in capsys.readouterr().err
