"""A ``data synth`` or ``data digits`` output folder given as a dataset names its splits,
instead of failing on ``ground_truth.h5`` as if it were a shard."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

from mpigd.data import open_dataset, write_synthetic
from mpigd.errors import DataError

pytestmark = pytest.mark.timeout(60)


def test_a_synth_output_folder_says_to_use_its_train_split(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, "binary", rows=50, features=3)
    with pytest.raises(
        DataError,
        match=rf"^dataset path {out} holds the splits train/ and test/ .*; use {out}/train "
        rf"for --data and {out}/test for --test-data$",
    ):
        open_dataset(out)
    assert open_dataset(out / "train").n_rows == 40


def test_train_on_a_split_folder_fails_once_with_the_hint(tmp_path):
    for split in ("train", "test"):  # as data digits leaves it, without ground_truth.h5
        (tmp_path / "digits" / split).mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "mpigd", "train", "--data", str(tmp_path / "digits"),
         "--model", "logreg", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=50, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("mpigd: error") == 1
    assert f"--data {tmp_path / 'digits'} holds the splits train/ and test/" in result.stderr
    assert f"use {tmp_path / 'digits' / 'train'} for --data" in result.stderr
