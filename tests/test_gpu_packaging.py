"""How CuPy is installed: one extra per CUDA major version, no trace of the old one, and
``make test-gpu`` (a venv that sees the node's CuPy, the GPU tests with MPIGD_TEST_GPU=1).

cupy-cuda12x and cupy-cuda13x in one environment overwrite each other's files, so the
single extra named gpu (cupy-cuda12x) was replaced by ``gpu-cuda12`` and ``gpu-cuda13``;
a message or document still naming the old extra would send users to an extra pip no
longer knows (pip only warns about an unknown extra and installs no CuPy).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's own fallback on 3.10
    import tomli as tomllib

OLD_EXTRA = re.compile(r"\[gpu\]|`gpu` extra")
THIS_FILE = Path(__file__).resolve()  # holds the pattern itself


def test_one_cupy_extra_per_cuda_major_version():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "gpu" not in extras
    assert [requirement.split(">")[0] for requirement in extras["gpu-cuda12"]] == ["cupy-cuda12x"]
    assert [requirement.split(">")[0] for requirement in extras["gpu-cuda13"]] == ["cupy-cuda13x"]


def test_no_tracked_file_names_the_old_gpu_extra():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(f"not a git checkout: {tracked.stderr.strip()}")
    stale = set()
    for name in tracked.stdout.splitlines():
        path = REPO / name
        if path.suffix in {".h5", ".png", ".npz"} or not path.is_file() or path == THIS_FILE:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if OLD_EXTRA.search(text):
            stale.add(name)
    assert not stale, f"these name the old gpu extra: {sorted(stale)}"


def make_plan(*variables: str) -> str:
    """The commands ``make -n test-gpu`` would run (into a venv that does not exist)."""
    if shutil.which("make") is None:
        pytest.skip("no make here")
    result = subprocess.run(["make", "-n", "test-gpu", "VENV_GPU=/nonexistent/venv-gpu",
                             *variables], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_test_gpu_sees_the_system_cupy_and_fails_on_skips():
    plan = make_plan()
    assert "-m venv --system-site-packages /nonexistent/venv-gpu" in plan
    assert "'.[test,mpich]'" in plan  # no CuPy extra: the node's CuPy is used
    assert "MPIGD_TEST_GPU=1 /nonexistent/venv-gpu/bin/python -m pytest" in plan
    assert "tests/test_gpu.py" in plan and "tests/test_device.py" in plan


def test_make_test_gpu_can_install_one_cupy_extra():
    assert "'.[test,gpu-cuda13]'" in make_plan("GPU_EXTRA=gpu-cuda13", "GPU_EXTRAS=")
    assert "'.[test,mpich,gpu-cuda12]'" in make_plan("GPU_EXTRA=gpu-cuda12")
