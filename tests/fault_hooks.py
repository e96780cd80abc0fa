"""Hooks that tests install into a run: injected faults, a slow rank, an observer.

The package has no test switches; a test hands these to ``mpigd.run.train(..., hooks=)``
or, for a run under ``mpirun``, to ``tests/run_with_fault.py``, which runs the normal
command line with one fault hook added.

A fault spec ``ACTION@RANK:STEP`` makes rank RANK perform ACTION just before global
optimiser step STEP (counted from 0 over the whole run):

===================  ==========================================================
ACTION               what happens
===================  ==========================================================
raise                ``RuntimeError("injected fault ...")`` (an unexpected crash)
kill                 the process kills itself with SIGKILL (a node dying)
sigterm              the process sends itself SIGTERM (a preemption notice)
checkpoint-crash     the first checkpoint written at global step >= STEP dies after
                     writing its temporary file, before the rename (``os._exit(99)``)
model-write-fails    writing model.h5 at the end fails (STEP unused): after the last
                     epoch a directory blocks the path of its temporary file, as a
                     full disk or a quota would fail the write
record-write-fails   the same for the final run.json
file-size-limit      from the run's start, writes past 64 KiB fail with EFBIG
                     (``RLIMIT_FSIZE``; Python ignores SIGXFSZ), as a quota would
===================  ==========================================================
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

from mpigd.run.hooks import Hook

ACTIONS = ("raise", "kill", "sigterm", "checkpoint-crash", "model-write-fails",
           "record-write-fails", "file-size-limit")  # fmt: skip
#: The file whose final write each ``*-write-fails`` action breaks.
_BROKEN_WRITES = {"model-write-fails": "model.h5", "record-write-fails": "run.json"}


class Fault(Hook):
    """One injected fault (see the module docstring)."""

    def __init__(self, action: str, rank: int, step: int) -> None:
        if action not in ACTIONS:
            raise ValueError(f"fault action {action!r} is not one of {', '.join(ACTIONS)}")
        self.action, self.rank, self.step = action, rank, step

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``ACTION@RANK:STEP`` as a Fault."""
        action, where = spec.split("@")
        rank, step = (int(part) for part in where.split(":"))
        return cls(action, rank, step)

    def before_step(self, run) -> None:
        if run.ranks.rank != self.rank or run.state.global_step != self.step:
            return
        if self.action == "raise":
            raise RuntimeError(f"injected fault at step {self.step}")
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)

    def run_started(self, run) -> None:
        if self.action == "file-size-limit" and run.ranks.rank == self.rank:
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    def epoch_ended(self, run, row: dict) -> None:
        if self.action not in _BROKEN_WRITES or run.ranks.rank != self.rank:
            return
        if row["epoch"] == run.config.epochs:  # the atomic write's temporary file
            (Path(run.config.out) / f".{_BROKEN_WRITES[self.action]}.tmp-{os.getpid()}").mkdir()

    def before_checkpoint_rename(self, run) -> None:
        if self.action != "checkpoint-crash" or run.ranks.rank != self.rank:
            return
        if run.state.global_step >= self.step:
            os._exit(99)


class SlowRank(Hook):
    """Rank ``rank`` sleeps ``seconds`` before each of its steps (a straggler)."""

    def __init__(self, rank: int, seconds: float) -> None:
        self.rank, self.seconds = rank, seconds

    def before_step(self, run) -> None:
        if run.ranks.rank == self.rank:
            time.sleep(self.seconds)


class ApplyOrder(Hook):
    """Records ``(epoch, worker, step)`` of every gradient an asynchronous server applies,
    in the order applied (on the server)."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, int, int]] = []

    def gradient_applied(self, run, worker: int, step: int, lag: int) -> None:
        self.applied.append((run.state.epoch, worker, step))
