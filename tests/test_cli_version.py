"""``mpigd --version``: the package version, exit 0, without mpirun."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

from mpigd import __version__


@pytest.mark.timeout(60)
def test_version_prints_the_package_version_and_exits_0():
    result = subprocess.run(
        [sys.executable, "-m", "mpigd", "--version"],
        capture_output=True, text=True, timeout=50, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mpigd {__version__}\n"
