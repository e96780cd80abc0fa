"""Options that size the run beyond any machine (``--hidden``, ``--accumulate``) are one
clear error naming them (exit 2 on every rank), not a MemoryError traceback.

The sizes are chosen to fail at once: a model of 10^16-wide layers needs ~500 PiB,
more than any address space, so numpy refuses it without touching memory.
"""

from __future__ import annotations

import pytest
from helpers import make_problem, run_mpigd, write_h5

from mpigd.config import TrainConfig
from mpigd.errors import MpigdError
from mpigd.run import train

pytestmark = pytest.mark.timeout(120)

#: ~7·10^16 parameters: numpy's MemoryError, at once, on any machine.
UNALLOCATABLE = 10**16
#: More parameters than a float64 array can have at all (numpy: ValueError).
UNREPRESENTABLE = 10**21


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """200 binary rows of 5 features."""
    X, y = make_problem("binary", n_rows=200, d=5)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


def refused(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("mpigd: error") == 1
    for word in words:
        assert word in result.stderr, result.stderr


def train_cli(n_ranks, data, out, *options):
    return run_mpigd(n_ranks, "train", "--data", data, "--out", str(out), "--progress", "quiet",
                     "--epochs", "1", *options, timeout=60)  # fmt: skip


@pytest.mark.parametrize("n_ranks", [1, 2])
def test_an_mlp_too_wide_for_memory_is_refused_naming_hidden(data, tmp_path, n_ranks):
    result = train_cli(n_ranks, data, tmp_path / "run", "--model", "mlp", "--hidden",
                       f"4,{UNALLOCATABLE}")  # fmt: skip
    refused(result, "out of memory for a model of", f"--hidden 4,{UNALLOCATABLE}",
            "--model-parallel M")  # fmt: skip


def test_a_split_mlp_too_wide_for_memory_is_refused(data, tmp_path):
    result = train_cli(2, data, tmp_path / "run", "--model", "mlp", "--hidden",
                       str(UNALLOCATABLE), "--model-parallel", "2")  # fmt: skip
    refused(result, "out of memory for a model of", "than --model-parallel 2")


@pytest.mark.parametrize("model_parallel", ["1", "2"])
def test_an_mlp_larger_than_any_array_is_refused_before_allocating(data, tmp_path,
                                                                   model_parallel):  # fmt: skip
    result = train_cli(2, data, tmp_path / "run", "--model", "mlp", "--hidden",
                       f"{UNREPRESENTABLE},4", "--model-parallel", model_parallel)  # fmt: skip
    refused(result, "is more than an array can hold", f"--hidden {UNREPRESENTABLE},4")


@pytest.mark.parametrize("n_ranks", [1, 2])
def test_an_absurd_accumulate_is_refused(data, tmp_path, n_ranks):
    rows = 200 // n_ranks
    result = train_cli(n_ranks, data, tmp_path / "run", "--model", "logreg", "--accumulate",
                       "1000000000000")  # fmt: skip
    refused(result, "--accumulate 1000000000000 splits each step's rows",
            f"full batch is {rows} rows", f"use --accumulate {rows} or less")  # fmt: skip


def test_the_largest_accumulate_a_config_file_can_give_is_refused(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data}"\nout = "{tmp_path / "run"}"\nmodel = "logreg"\n'
                      "accumulate = 9223372036854775807\n")  # fmt: skip
    refused(run_mpigd(2, "train", "--config", str(config), timeout=60),
            "--accumulate 9223372036854775807", "use --accumulate 100 or less")  # fmt: skip


def mini_batch(data, out, accumulate):
    """A config: 200 rows in steps of 32 (7 steps, so at most 29 rows a step)."""
    return TrainConfig(data=data, out=str(out), model="logreg", optimizer="sgd", batch_size=32,
                       epochs=1, accumulate=accumulate, progress="quiet")  # fmt: skip


def test_accumulate_up_to_the_rows_of_a_step_trains(data, tmp_path):
    train(mini_batch(data, tmp_path / "run", accumulate=29))


def test_accumulate_beyond_the_rows_of_a_step_is_refused(data, tmp_path):
    words = r"--accumulate 30 .* a step gives this rank at most 29 rows \(200 rows over 7 steps"
    with pytest.raises(MpigdError, match=words):
        train(mini_batch(data, tmp_path / "run", accumulate=30))
