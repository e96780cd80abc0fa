"""Stop requests: SIGTERM, SIGUSR1 and SIGINT set a flag, nothing more.

Slurm sends SIGTERM when a job is cancelled or preempted, and the signal chosen with
``--signal`` (typically USR1) some time before the time limit; Ctrl-C sends SIGINT.
``mpirun`` forwards all three to every rank. The handler only records the request. The
strategies carry each rank's flag inside the step's own collective (no extra message),
so all ranks see the same agreed answer after the same step, stop together at that
step boundary and write the checkpoint; then they exit with
:data:`mpigd.comm.EXIT_PREEMPTED` (the batch system asked: requeue) or, if any rank
got SIGINT, :data:`mpigd.comm.EXIT_INTERRUPTED` (a person asked: do not requeue). A
second SIGINT is the impatient user's: it raises KeyboardInterrupt at once.

``python -m mpigd`` starts listening before it imports anything heavy
(:func:`listen_from_start`), so a signal that arrives while the ranks import is kept
for the run instead of killing them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from mpigd.errors import CollectiveError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

_received: list[str] = []
_depth = 0
#: Handlers before :func:`listen_from_start`; while set, the next ``listening`` keeps
#: the signals received so far (they were meant for the run it starts).
_from_start: dict | None = None


def listen_from_start() -> None:
    """Record stop signals from now on, for the run this process is about to start.

    Called first thing by ``python -m mpigd`` (again: no effect). The first
    :func:`listening` block takes the signals received until then over; a command that
    runs none calls :func:`stop_listening_from_start`.
    """
    global _from_start
    if _from_start is None:
        _from_start = {signum: signal.signal(signum, _record) for signum in STOP_SIGNALS}


def stop_listening_from_start() -> None:
    """For a command that does not train: SIGTERM and SIGUSR1 end it at once by raising
    :class:`Terminated` (so that its ``with`` blocks clean up: a dataset being written
    leaves no temporary directory), SIGINT gets Python's KeyboardInterrupt back; a stop
    signal received meanwhile is delivered again."""
    global _from_start
    if _from_start is None:
        return
    previous, _from_start = _from_start, None
    for signum in previous:
        signal.signal(signum, _terminate if signum != signal.SIGINT else signal.default_int_handler)
    pending = list(_received)
    _received.clear()
    for name in pending:
        signal.raise_signal(signal.Signals[name])


class Terminated(BaseException):
    """A stop signal ended a command that does not train (``signum``: which). A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


#: The stop signal that ended a command that does not train (None: none yet).
_terminated: int | None = None


def _terminate(signum, frame) -> None:
    global _terminated
    del frame
    _terminated = signum
    raise Terminated(signum)


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` again if a stop signal arrived: Python ignores an
    exception raised while it runs a finaliser or a weakref callback (the handler runs
    wherever the main thread is), so a writer calls this before it commits its output."""
    if _terminated is not None:
        raise Terminated(_terminated)


@contextmanager
def listening() -> Iterator[None]:
    """Inside: SIGTERM and SIGUSR1 are recorded, not fatal (enter from the main thread).

    Run-scoped: the outermost ``with`` forgets earlier signals on entry (except those
    since :func:`listen_from_start`) and puts the previous handlers back on exit; nested
    ones (each run of a sweep) change nothing, so a signal between two runs of a sweep
    still stops the next one.
    """
    global _depth, _from_start
    previous = None
    if _depth == 0:
        if _from_start is None:
            _received.clear()
            previous = {signum: signal.signal(signum, _record) for signum in STOP_SIGNALS}
        else:
            previous, _from_start = _from_start, None
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
    name = signal.Signals(signum).name
    if name == "SIGINT" and name in _received:
        raise KeyboardInterrupt("a second SIGINT: stopping now, without a checkpoint")
    _received.append(name)


def requested() -> bool:
    """Whether this rank has received a stop signal inside :func:`listening`."""
    return bool(_received)


def received() -> list[str]:
    """Names of the stop signals this rank has received, in order."""
    return list(_received)


def interrupted() -> bool:
    """Whether this rank's stop request includes a SIGINT (a person, not the batch system)."""
    return "SIGINT" in _received


class Preempted(CollectiveError):
    """Raised on every rank once all agree to stop for a signal (after checkpointing)."""

    status = "preempted"


class Interrupted(Preempted):
    """The agreed stop of :class:`Preempted`, asked for by SIGINT (Ctrl-C) on some rank."""

    status = "interrupted"
