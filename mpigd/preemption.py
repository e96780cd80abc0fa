"""Stop requests from the batch system: SIGTERM and SIGUSR1 set a flag, nothing more.

Slurm sends SIGTERM when a job is cancelled or preempted, and the signal chosen with
``--signal`` (typically USR1) some time before the time limit; ``mpirun`` forwards both
to every rank. The handler only records the request. The strategies carry each rank's
flag inside the step's own collective (no extra message), so all ranks see the same
agreed answer after the same step, stop together at that step boundary, write the
checkpoint and exit with :data:`mpigd.comm.EXIT_PREEMPTED`.
"""

from __future__ import annotations

import signal

from mpigd.errors import CollectiveError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[str] = []


def install() -> None:
    """Route SIGTERM and SIGUSR1 to :func:`_record` (call once, from the main thread)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)


def _record(signum, frame) -> None:
    del frame
    _received.append(signal.Signals(signum).name)


def requested() -> bool:
    """Whether this rank has received a stop signal since :func:`install`."""
    return bool(_received)


def received() -> list[str]:
    """Names of the stop signals this rank has received, in order."""
    return list(_received)


class Preempted(CollectiveError):
    """Raised on every rank once all agree to stop for a signal (after checkpointing)."""
