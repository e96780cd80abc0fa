"""Rank information and error-safe collectives: the one MPI module outside strategies.

Every rank of a run must end the same way. Two mechanisms guarantee it:

* :func:`agree` is a collective that every rank calls at a point where an error may
  have struck some ranks but not others (reading data, validating it). Each rank
  contributes its exception or ``None``; if any rank failed, *every* rank raises the
  same :class:`~mpigd.errors.MpigdError`, carrying the lowest failing rank's message,
  so all ranks leave the collective phase together and exit non-zero.
* :func:`run_guarded` wraps a rank's whole program: an agreed ``MpigdError`` is printed
  once (by rank 0) and every rank exits with status 2; an agreed stop for a signal
  exits with :data:`EXIT_PREEMPTED` (75); any other exception, in the main thread or
  any other, is printed with its rank and traceback, the abort hooks run (the trainer's
  marks ``run.json`` aborted) and ``MPI_Abort`` ends the whole job (exit status 1), so
  no rank is ever left waiting in a collective that a dead peer will never join. A
  rank killed outright is noticed by the launcher (``mpirun``, ``srun``), which ends
  the others.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mpi4py import MPI

from mpigd.errors import AgreedError, CollectiveError, MpigdError
from mpigd.preemption import Preempted

T = TypeVar("T")

EXIT_ABORT = 1
EXIT_USER_ERROR = 2
#: A run stopped by SIGTERM/SIGUSR1 after writing its checkpoint; resume with --resume.
#: (75 is EX_TEMPFAIL from sysexits.h: "try again later"; the Slurm scripts requeue on it.)
EXIT_PREEMPTED = 75


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
    """Collective: run ``work()`` on every rank; if it raised anywhere, raise everywhere.

    Wrap set-up steps whose failures could differ between ranks (or that should print
    one message, not one per rank) so that every rank leaves together.
    """
    result, error = None, None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - reported on every rank by agree()
        error = exc
    agree(comm, error)
    return result


def _describe(error: BaseException) -> str:
    """One line for an exception: its message, with its type unless it is ours."""
    if isinstance(error, MpigdError):
        return str(error)
    return f"{type(error).__name__}: {error}"


_abort_hooks: list[Callable[[str], None]] = []


def on_abort(hook: Callable[[str], None]) -> None:
    """Register ``hook(message)`` to run on a failing rank just before ``MPI_Abort``."""
    _abort_hooks.append(hook)


def abort(info: RankInfo, message: str, status: int = EXIT_ABORT) -> None:
    """Print ``message`` with this rank's name, run the abort hooks, end every rank."""
    print(f"mpigd: rank {info.rank} of {info.size} failed: {message}", file=sys.stderr, flush=True)
    for hook in _abort_hooks:
        hook(f"rank {info.rank} of {info.size} failed: {message}")
    info.comm.Abort(status)


def run_guarded(main: Callable[[], int | None], rank_info: RankInfo | None = None) -> int:
    """Run ``main`` on this rank; end the whole job cleanly whatever it raises.

    Returns the exit status for ``sys.exit``: 0 on success, 2 on a ``CollectiveError``
    (raised on every rank together; rank 0 prints it), 75 when the ranks agreed to stop
    for a signal. An ``MpigdError`` that may be this rank's alone is printed with the
    rank and ends the job with ``MPI_Abort(2)``; any other exception with a traceback and
    ``MPI_Abort(1)``. On one rank nothing needs aborting.
    """
    info = rank_info or world()
    threading.excepthook = lambda args: abort(
        info, f"in thread {args.thread.name}: {_describe(args.exc_value)}"
    )
    try:
        return int(main() or 0)
    except Preempted as exc:
        if info.is_root:
            print(f"mpigd: {exc}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
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
        info.comm.Abort(EXIT_ABORT)
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


def rank_places(comm: MPI.Comm) -> list[dict]:
    """Collective: ``{"host": ..., "pid": ...}`` of every rank, in rank order (on every rank).

    Recorded in run.json, so that a launcher's report of a dead PID names its rank.
    """
    return comm.allgather({"host": MPI.Get_processor_name(), "pid": os.getpid()})


def mpi_library_version() -> str:
    """The MPI library's own version string, first line."""
    return MPI.Get_library_version().strip().splitlines()[0]
