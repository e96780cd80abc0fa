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
from collections.abc import Iterator
from contextlib import contextmanager

from mpigd.errors import CollectiveError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[str] = []
_depth = 0


@contextmanager
def listening() -> Iterator[None]:
    """Inside: SIGTERM and SIGUSR1 are recorded, not fatal (enter from the main thread).

    Run-scoped: the outermost ``with`` forgets earlier signals on entry and puts the
    previous handlers back on exit; nested ones (each run of a sweep) change nothing,
    so a signal between two runs of a sweep still stops the next one.
    """
    global _depth
    previous = None
    if _depth == 0:
        _received.clear()
        previous = {signum: signal.signal(signum, _record) for signum in STOP_SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if previous is not None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _record(signum, frame) -> None:
    del frame
    _received.append(signal.Signals(signum).name)


def requested() -> bool:
    """Whether this rank has received a stop signal inside :func:`listening`."""
    return bool(_received)


def received() -> list[str]:
    """Names of the stop signals this rank has received, in order."""
    return list(_received)


class Preempted(CollectiveError):
    """Raised on every rank once all agree to stop for a signal (after checkpointing)."""
