"""The communication layer: rank information, error-safe collectives, abort, MPI facts.

With :mod:`mpigd.strategies` (which owns every collective of training) this is the only
place that imports mpi4py: device placement, checkpoint agreement, sweeps and the
timeline reach MPI through the small functions here (docs/architecture.md, "Layers").

Every rank of a run must end the same way. Two mechanisms guarantee it:

* :func:`agree` is a collective that every rank calls at a point where an error may
  have struck some ranks but not others (reading data, validating it). Each rank
  contributes its exception or ``None``; if any rank failed, *every* rank raises the
  same :class:`~mpigd.errors.MpigdError`, carrying the lowest failing rank's message,
  so all ranks leave the collective phase together and exit non-zero.
* :func:`run_guarded` wraps a rank's whole program: an agreed ``MpigdError`` is printed
  once (by rank 0) and every rank exits with status 2; an agreed stop for a signal
  exits with :data:`EXIT_PREEMPTED` (75), or :data:`EXIT_INTERRUPTED` (130) for
  Ctrl-C; any other exception, in the main thread or
  any other, is a bug: the rank that raised it prints its traceback, the abort hooks
  registered by the current run run (:func:`abort_hook`; a run's marks its ``run.json``
  aborted) and ``MPI_Abort`` ends the whole job (exit status 1), so no rank is ever
  left waiting in a collective that a dead peer will never join. A rank killed outright
  is noticed by the launcher (``mpirun``, ``srun``), which ends the others.

:func:`collectively` agrees on ``MpigdError`` only (bad input, bad configuration):
anything else escaping ``work`` is a bug and takes the abort path above, traceback and
all, instead of being turned into a one-line user error.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from mpi4py import MPI

from mpigd.errors import AgreedError, CollectiveError, MpigdError
from mpigd.preemption import Interrupted, Preempted, Terminated

T = TypeVar("T")

EXIT_ABORT = 1
#: Seconds a failing rank waits, output flushed, before MPI_Abort (see :func:`abort`).
ABORT_GRACE_S = 0.5
EXIT_USER_ERROR = 2
#: A run stopped by SIGTERM/SIGUSR1 after writing its checkpoint; resume with --resume.
#: (75 is EX_TEMPFAIL from sysexits.h: "try again later"; the Slurm scripts requeue on it.)
EXIT_PREEMPTED = 75
#: A run stopped by Ctrl-C (SIGINT) after writing its checkpoint: 128 + SIGINT, as a
#: shell reports a program that Ctrl-C ended; not requeued.
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job: ``rank`` in ``0..size-1`` of ``comm``."""

    comm: MPI.Comm
    rank: int
    size: int

    @property
    def is_root(self) -> bool:
        """True on rank 0, the only rank that prints progress and writes run records."""
        return self.rank == 0


def world() -> RankInfo:
    """The rank information of ``MPI.COMM_WORLD``."""
    comm = MPI.COMM_WORLD
    return RankInfo(comm, comm.Get_rank(), comm.Get_size())


def agree(comm: MPI.Comm, error: BaseException | None) -> None:
    """Collective: raise the same ``MpigdError`` on every rank if any rank had ``error``.

    Parameters
    ----------
    comm : the communicator all of whose ranks call this.
    error : this rank's exception, or ``None`` if it succeeded.

    The message is the lowest failing rank's, prefixed with that rank when the job has
    more than one rank and the error is not the same on every rank.
    """
    message = None if error is None else _describe(error)
    messages = comm.allgather(message)
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if not failed:
        return
    first_rank, first_message = failed[0]
    everywhere_alike = len(failed) == len(messages) and len({m for _, m in failed}) == 1
    if not everywhere_alike:
        first_message = f"rank {first_rank}: {first_message}"
    raise AgreedError(first_message) from error


def collectively(comm: MPI.Comm, work: Callable[[], T]) -> T:
    """Collective: run ``work()`` on every rank; if it raised an ``MpigdError`` anywhere,
    raise the agreed error everywhere.

    Wrap set-up steps whose failures could differ between ranks (or that should print
    one message, not one per rank) so that every rank leaves together. Any other
    exception propagates on the rank that raised it, to :func:`run_guarded`, which
    prints its traceback and aborts the job (the other ranks are then waiting in this
    collective and end with it).
    """
    result, error = None, None
    try:
        result = work()
    except MpigdError as exc:
        error = exc
    agree(comm, error)
    return result


def _describe(error: BaseException) -> str:
    """One line for an exception: its message, with its type unless it is ours."""
    if isinstance(error, MpigdError):
        return str(error)
    return f"{type(error).__name__}: {error}"


_abort_hooks: list[Callable[[str], None]] = []


@contextmanager
def abort_hook(hook: Callable[[str], None]) -> Iterator[None]:
    """Run ``hook(message)`` on a failing rank just before ``MPI_Abort``, while inside.

    Scoped to the ``with`` block (a run's lifetime), so that runs in one process (a
    sweep, the tests) never act on each other's records: the hook is removed when the
    block ends normally or with an agreed error (every rank leaves together, nothing is
    aborted). Any other exception is on its way to :func:`run_guarded`'s abort, which
    ends the process, so the hook stays for it.
    """
    _abort_hooks.append(hook)
    try:
        yield
    except CollectiveError:
        _abort_hooks.remove(hook)
        raise
    else:
        _abort_hooks.remove(hook)


def abort(info: RankInfo, message: str, status: int = EXIT_ABORT) -> None:
    """Print ``message`` with this rank's name, run the abort hooks, end every rank.

    The hooks are best effort: one that fails is reported and the job is aborted all
    the same (a peer may be waiting in a collective that this rank will never join).
    Before the abort the streams are flushed and the launcher gets
    :data:`ABORT_GRACE_S` to forward them: ``MPI_Abort`` kills the launcher's
    forwarding too, and a traceback still in a pipe would be lost.
    """
    described = f"rank {info.rank} of {info.size} failed: {message}"
    print(f"mpigd: {described}", file=sys.stderr, flush=True)
    try:
        for hook in list(_abort_hooks):
            try:
                hook(described)
            except BaseException as exc:  # noqa: BLE001 - the abort must happen
                print(f"mpigd: an abort hook failed: {_describe(exc)}", file=sys.stderr)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        time.sleep(ABORT_GRACE_S)
        info.comm.Abort(status)


def run_guarded(main: Callable[[], int | None], rank_info: RankInfo | None = None) -> int:
    """Run ``main`` on this rank; end the whole job cleanly whatever it raises.

    Returns the exit status for ``sys.exit``: 0 on success, 2 on a ``CollectiveError``
    (raised on every rank together; rank 0 prints it), 75 when the ranks agreed to stop
    for a signal (130 if a rank got SIGINT). An ``MpigdError`` that may be this rank's
    alone is printed with the rank and ends the job with ``MPI_Abort(2)``; any other
    exception with a traceback and ``MPI_Abort(1)``, and a second Ctrl-C with
    ``MPI_Abort(130)``. On one rank nothing needs aborting.
    """
    info = rank_info or world()
    previous_excepthook = threading.excepthook
    threading.excepthook = lambda args: abort(
        info, f"in thread {args.thread.name}: {_describe(args.exc_value)}"
    )
    try:
        return _run_main(main, info)
    finally:
        threading.excepthook = previous_excepthook


def _run_main(main: Callable[[], int | None], info: RankInfo) -> int:
    """:func:`run_guarded`'s body: the exit status of ``main``, or the abort."""
    try:
        return int(main() or 0)
    except Preempted as exc:
        if info.is_root:
            print(f"mpigd: {exc}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if isinstance(exc, Interrupted) else EXIT_PREEMPTED
    except CollectiveError as exc:
        if info.is_root:
            print(f"mpigd: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except MpigdError as exc:
        if info.size == 1:
            print(f"mpigd: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        abort(info, str(exc), EXIT_USER_ERROR)
    except KeyboardInterrupt:
        abort(info, "interrupted by SIGINT (Ctrl-C)", EXIT_INTERRUPTED)
    except Terminated as exc:  # a command that does not train, cleaned up on the way out
        print(f"mpigd: {exc}", file=sys.stderr, flush=True)
        return 128 + exc.signum
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank
        if isinstance(exc, SystemExit) and not exc.code:
            return 0
        traceback.print_exc(file=sys.stderr)
        abort(info, _describe(exc))
    return EXIT_ABORT


def sum_across(comm: MPI.Comm, values):
    """Collective: element-wise sum of a float64 or int64 numpy array over ranks, in place."""
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
    return values


def min_across(comm: MPI.Comm, values: np.ndarray) -> np.ndarray:
    """Collective: element-wise minimum of a float64 numpy array over ranks, in place
    (exact in any order, so the same for every rank count)."""
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MIN)
    return values


def mean_and_max(comm: MPI.Comm, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise mean and maximum over all ranks of a float64 array (every rank)."""
    total, largest = values.copy(), values.copy()
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    comm.Allreduce(MPI.IN_PLACE, largest, op=MPI.MAX)
    return total / comm.Get_size(), largest


def barrier(comm: MPI.Comm) -> None:
    """Collective: return once every rank of ``comm`` has called it."""
    comm.Barrier()


def gather_to_root(comm: MPI.Comm, value):
    """Collective: every rank's (picklable) ``value`` in rank order on rank 0; None elsewhere."""
    return comm.gather(value, root=0)


def from_root(comm: MPI.Comm, value):
    """Collective: rank 0's (picklable) ``value`` on every rank (others pass anything)."""
    return comm.bcast(value, root=0)


def gather_everywhere(comm: MPI.Comm, value) -> list:
    """Collective: every rank's (picklable) ``value`` in rank order, on every rank."""
    return comm.allgather(value)


def split(info: RankInfo, color: int, key: int | None = None) -> RankInfo:
    """Collective: the sub-communicator of the ranks passing the same ``color``.

    Ranks are ordered by ``key`` (default: their rank here). Free it with :func:`free`.
    """
    comm = info.comm.Split(color, info.rank if key is None else key)
    return RankInfo(comm, comm.Get_rank(), comm.Get_size())


def free(info: RankInfo) -> None:
    """Collective: release a communicator made by :func:`split`."""
    info.comm.Free()


def node_local_rank(comm: MPI.Comm) -> tuple[int, int]:
    """Collective: this rank's index among the ranks on its node, and their number."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def host_name() -> str:
    """The name of the node this rank runs on, as MPI reports it."""
    return MPI.Get_processor_name()


def rank_places(comm: MPI.Comm) -> list[dict]:
    """Collective: ``{"host", "pid", "cpus"}`` of every rank, in rank order (on every rank).

    Recorded in run.json, so that a launcher's report of a dead PID names its rank, and
    a scaling study sees the CPU binding each rank actually had: ``cpus`` is the set of
    CPUs the OS lets the rank run on, as ``"0-3,8"`` (every CPU: it is not bound).
    """
    return comm.allgather({"host": host_name(), "pid": os.getpid(), "cpus": _cpu_set()})


def _cpu_set() -> str:
    """This process's CPU affinity as ranges, ``"0-3,8"``; ``""`` where the OS cannot say."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return ""
    ranges, start = [], None
    for i, cpu in enumerate(cpus):
        start = cpu if start is None else start
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            ranges.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(ranges)


def mpi_library_version(full: bool = False) -> str:
    """The MPI library's own version string: its first line, or all of it (``full``)."""
    version = MPI.Get_library_version()
    return version if full else version.strip().splitlines()[0]
