"""Test-only fault injection, switched on by the environment variable ``MPIGD_FAULT``.

``MPIGD_FAULT=ACTION@RANK:STEP`` makes rank RANK perform ACTION just before global
optimiser step STEP (counted from 0 over the whole run):

===================  ==========================================================
ACTION               what happens
===================  ==========================================================
raise                ``RuntimeError("injected fault ...")`` (an unexpected crash)
kill                 the process kills itself with SIGKILL (a node dying)
sigterm              the process sends itself SIGTERM (a preemption notice)
checkpoint-crash     the first checkpoint written at global step >= STEP dies after
                     writing its temporary file, before the rename (``os._exit(99)``)
===================  ==========================================================

Unset (the normal case) it costs one dictionary lookup at start-up.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ACTIONS = ("raise", "kill", "sigterm", "checkpoint-crash")


@dataclass(frozen=True)
class Fault:
    action: str
    rank: int
    step: int


def configured() -> Fault | None:
    """The fault requested by ``MPIGD_FAULT``, or None. Malformed values raise ValueError."""
    spec = os.environ.get("MPIGD_FAULT")
    if not spec:
        return None
    try:
        action, where = spec.split("@")
        rank, step = (int(part) for part in where.split(":"))
    except ValueError as exc:
        raise ValueError(f"MPIGD_FAULT={spec!r} is not ACTION@RANK:STEP") from exc
    if action not in ACTIONS:
        raise ValueError(f"MPIGD_FAULT action {action!r} is not one of {', '.join(ACTIONS)}")
    return Fault(action, rank, step)


def before_step(fault: Fault | None, rank: int, step: int) -> None:
    """Carry out a ``raise``, ``kill`` or ``sigterm`` fault due at this rank and step."""
    if fault is None or fault.rank != rank or fault.step != step:
        return
    if fault.action == "raise":
        raise RuntimeError(f"injected fault (MPIGD_FAULT) at step {step}")
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)


def crash_in_checkpoint(fault: Fault | None, rank: int, step: int) -> None:
    """Die mid-checkpoint (after the temporary file, before the rename) if so configured."""
    if fault is None or fault.action != "checkpoint-crash" or fault.rank != rank:
        return
    if step >= fault.step:
        os._exit(99)


def step_delay(rank: int) -> float:
    """Seconds rank ``rank`` sleeps before each step: ``MPIGD_TEST_DELAY=RANK:SECONDS``.

    Test-only: makes one worker slow, to show staleness and the absence of deadlocks.
    """
    spec = os.environ.get("MPIGD_TEST_DELAY")
    if not spec:
        return 0.0
    try:
        slow_rank, seconds = spec.split(":")
        return float(seconds) if int(slow_rank) == rank else 0.0
    except ValueError as exc:
        raise ValueError(f"MPIGD_TEST_DELAY={spec!r} is not RANK:SECONDS") from exc
