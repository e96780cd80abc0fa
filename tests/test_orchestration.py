"""The orchestration layer's contracts: resume fingerprints, run-scoped process state,
errors that are bugs, and who may import MPI. See docs/architecture.md."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from pathlib import Path

import h5py
import pytest
from helpers import REPO, make_problem, mpirun_command, write_h5

from mpigd import comm, preemption
from mpigd.config import TrainConfig
from mpigd.errors import AgreedError, CollectiveError
from mpigd.run import Hook, train

pytestmark = pytest.mark.timeout(120)

#: For every option that changes the trajectory, another value the base run accepts.
CHANGED = {
    "model": "svm", "svm_loss": "squared-hinge", "hidden": [64], "dropout": 0.1,
    "strategy": "local-sgd", "optimizer": "momentum", "lr": 0.2, "lr_schedule": "step",
    "lr_step_epochs": 5, "lr_gamma": 0.5, "momentum": 0.5, "nesterov": True,
    "batch_size": 100, "lbfgs_memory": 5, "lbfgs_precondition": "none", "l2": 0.01,
    "class_weight": "balanced",
    "seed": 7, "sync_every": 4, "max_staleness": 2, "server_computes": True,
    "accumulate": 2, "epochs": 3, "max_depth": 3, "max_leaves": 8, "min_rows_leaf": 2,
    "min_hessian_leaf": 0.1, "features_per_node": "sqrt", "criterion": "entropy",
    "bootstrap": False, "subsample": 0.5, "colsample": 0.5, "max_bins": 64,
}  # fmt: skip


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    X, y = make_problem("binary", n_rows=400, d=4)
    return str(write_h5(tmp_path_factory.mktemp("data") / "train.h5", X, y, "binary", 2))


def base_config(data, out, **changes) -> TrainConfig:
    options = dict(data=data, out=str(out), model="logreg", optimizer="sgd", lr=0.1,
                   lr_schedule="cosine", batch_size=50, epochs=2, progress="quiet")  # fmt: skip
    return TrainConfig(**{**options, **changes})


def test_a_resume_after_changing_any_trajectory_option_is_refused(binary, tmp_path):
    base = base_config(binary, tmp_path / "run")
    assert set(base.trajectory_fingerprint()) == set(CHANGED), "give every option a case"
    train(base)
    for key, value in CHANGED.items():
        resumed = base_config(binary, tmp_path / "run", resume=True, **{key: value})
        with pytest.raises(CollectiveError, match=f"config {key}: checkpoint"):
            train(resumed)
    forced = base_config(binary, tmp_path / "run", resume=True, force_resume=True,
                         sync_every=4, strategy="local-sgd")  # fmt: skip
    train(forced)


def test_a_resume_that_changes_only_other_options_continues(binary, tmp_path):
    train(base_config(binary, tmp_path / "run"))
    train(base_config(binary, tmp_path / "run", resume=True, backend="numpy",
                      checkpoint_every=1, tol=1e-3))  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "completed" and run["resumed_from"]["epoch"] == 2


def test_a_checkpoint_from_before_an_option_was_fingerprinted_still_resumes(binary, tmp_path):
    """Its run used the option's default, and the resume is no other trajectory."""
    train(base_config(binary, tmp_path / "run"))
    with h5py.File(tmp_path / "run" / "checkpoint.h5", "r+") as handle:
        saved = json.loads(handle.attrs["config"])
        for key in ("sync_every", "max_staleness", "server_computes", "accumulate"):
            del saved[key]
        handle.attrs["config"] = json.dumps(saved)
    train(base_config(binary, tmp_path / "run", resume=True, epochs=2))
    with pytest.raises(CollectiveError, match="config sync_every: checkpoint 8, now 4"):
        train(base_config(binary, tmp_path / "run", resume=True, sync_every=4))


class FailsAtTheEnd(Hook):
    def run_ended(self, run, status):
        raise AgreedError("the hook could not write its file")


def test_a_hook_failing_at_the_end_fails_the_run_and_says_why(binary, tmp_path):
    with pytest.raises(AgreedError):
        train(base_config(binary, tmp_path / "run"), hooks=[FailsAtTheEnd()])
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "could not write" in record["stop_reason"]
    assert not (tmp_path / "run" / "model.h5").exists()


def test_local_sgd_refuses_a_convergence_test_it_cannot_agree_on(binary, tmp_path):
    for options in ({"tol": 1e-3, "batch_size": None, "optimizer": "gd"},
                    {"optimizer": "lbfgs", "batch_size": None}):  # fmt: skip
        with pytest.raises(CollectiveError, match="local-sgd: each rank's optimiser"):
            train(base_config(binary, tmp_path / "run", strategy="local-sgd", overwrite=True,
                              lr_schedule="constant", **options))  # fmt: skip


def test_a_run_leaves_no_process_state_behind(binary, tmp_path):
    handlers = {signum: signal.getsignal(signum) for signum in preemption.STOP_SIGNALS}
    train(base_config(binary, tmp_path / "ok"))
    with pytest.raises(CollectiveError):
        train(base_config(binary, tmp_path / "bad", epochs=500, lr=1e6, lr_schedule="constant",
                          optimizer="gd", batch_size=None, model="linreg"))  # fmt: skip
    assert comm._abort_hooks == []
    assert {signum: signal.getsignal(signum) for signum in preemption.STOP_SIGNALS} == handlers
    before = threading.excepthook
    assert comm.run_guarded(lambda: 0) == 0 and threading.excepthook is before


def test_a_bug_inside_collectively_aborts_with_its_traceback():
    """A non-MpigdError is no user error: the raising rank prints its traceback and the
    job ends through MPI_Abort (exit 1), not as an agreed one-line error (exit 2)."""
    script = (
        "from mpigd import comm\n"
        "ranks = comm.world()\n"
        "def work():\n"
        "    if ranks.rank == 1:\n"
        "        {}['missing']\n"
        "def main():\n"
        "    comm.collectively(ranks.comm, work)\n"
        "raise SystemExit(comm.run_guarded(main, ranks))\n"
    )
    result = subprocess.run(mpirun_command(2)[:-2] + ["-c", script], capture_output=True,
                            text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == comm.EXIT_ABORT, result.stderr
    assert "Traceback" in result.stderr and "KeyError: 'missing'" in result.stderr
    assert "rank 1 of 2 failed" in result.stderr


SWEEP_WITH_A_CRASH = """
import sys
sys.path.insert(0, {tests!r})
from mpigd import comm
from mpigd.run.hooks import Hook
from mpigd.sweep import run_sweep

class CrashInConfig(Hook):
    def before_step(self, run):
        if run.config.out.endswith("cfg-001") and run.ranks.rank == 1:
            raise RuntimeError("crash in config 1")

ranks = comm.world()
raise SystemExit(comm.run_guarded(
    lambda: run_sweep(ranks, {grid!r}, {out!r}, hooks=[CrashInConfig()]) and 0, ranks))
"""


def test_a_failing_abort_hook_still_ends_the_job():
    script = (
        "from mpigd import comm\n"
        "ranks = comm.world()\n"
        "def broken(message):\n"
        "    raise OSError('disk gone')\n"
        "def main():\n"
        "    with comm.abort_hook(broken):\n"
        "        if ranks.rank == 1:\n"
        "            raise RuntimeError('bug')\n"
        "        comm.barrier(ranks.comm)\n"
        "raise SystemExit(comm.run_guarded(main, ranks))\n"
    )
    result = subprocess.run(mpirun_command(2)[:-2] + ["-c", script], capture_output=True,
                            text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == comm.EXIT_ABORT, result.stderr
    assert "an abort hook failed: OSError: disk gone" in result.stderr


def test_a_sweep_whose_config_aborts_leaves_the_earlier_configs_completed(binary, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'data = "{binary}"\nmodel = "logreg"\nepochs = 2\n[grid]\n'
                    "lr = [0.1, 0.2, 0.3]\n")  # fmt: skip
    out = tmp_path / "sweep"
    script = SWEEP_WITH_A_CRASH.format(tests=str(REPO / "tests"), grid=str(grid), out=str(out))
    result = subprocess.run(mpirun_command(2)[:-2] + ["-c", script], capture_output=True,
                            text=True, timeout=90, cwd=REPO)  # fmt: skip
    assert result.returncode == comm.EXIT_ABORT, result.stderr
    status = {d.name: json.loads((d / "run.json").read_text())["status"]
              for d in sorted(out.iterdir())}  # fmt: skip
    assert status == {"cfg-000": "completed", "cfg-001": "aborted"}
    assert (out / "cfg-000" / "model.h5").exists()


def test_only_the_communication_layer_and_the_strategies_import_mpi4py():
    allowed = {Path("mpigd/comm.py"), *Path("mpigd/strategies").glob("*.py")}
    for path in Path(REPO, "mpigd").rglob("*.py"):
        relative = path.relative_to(REPO)
        text = path.read_text()
        if re.search(r"^\s*(from|import) mpi4py", text, re.MULTILINE):
            assert relative in allowed, f"{relative} imports mpi4py"
        assert "MPIGD_TEST_" not in text, f"{relative} reads a test switch"
        assert not re.search(r"class \w*Mixin\b", text), f"{relative} defines a mixin"


def test_the_loop_never_names_a_layout_or_a_strategy():
    loop = (REPO / "mpigd/run/loop.py").read_text()
    for name in ("TensorParallel", "DataParallel", "SplitMLP", "ParameterServer", "LocalSGD",
                 "model_parallel", "mpi4py"):  # fmt: skip
        assert name not in loop
