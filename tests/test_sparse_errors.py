"""A corrupt CSR shard fails `mpigd train` on every rank with one message, even when only
one rank's rows are bad, and leaves no model behind."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import rank_statuses, run_mpigd, write_csr_h5

from mpigd.comm import EXIT_USER_ERROR


def rows(n, d=8, seed=0):
    X = sp.random(n, d, density=0.4, format="csr", random_state=seed)
    X.sort_indices()
    return X, (np.arange(n) % 2).astype(np.int64)


def corrupted(X, how):
    """``X`` with its CSR arrays broken as ``how`` says (scipy would refuse to build it)."""
    X = X.copy()
    if how == "column out of range":
        X.indices[-1] = X.shape[1] + 5
    elif how == "indptr decreasing":
        X.indptr[-3] = X.indptr[-2] + 1
        X.indptr[-4] = X.indptr[-2] + 1
    return X


@pytest.mark.parametrize(
    "how, message",
    [("column out of range", "column"), ("indptr decreasing", "indptr")],
)
def test_a_corrupt_shard_read_by_one_rank_fails_every_rank_once(tmp_path, how, message):
    good, y = rows(30)
    bad, y_bad = rows(30, seed=1)
    write_csr_h5(tmp_path / "data" / "part-00000.h5", good, y, "binary", 2)
    write_csr_h5(tmp_path / "data" / "part-00001.h5", corrupted(bad, how), y_bad, "binary", 2)
    out, statuses = tmp_path / "run", tmp_path / "statuses"
    flags = ["--data", str(tmp_path / "data"), "--model", "logreg", "--epochs", "1"]
    result = run_mpigd(2, "train", *flags, "--out", str(out), "--quiet", statuses=statuses)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert rank_statuses(statuses, 2) == [EXIT_USER_ERROR] * 2
    lines = [line for line in result.stderr.splitlines() if "part-00001.h5" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "model.h5").exists()
