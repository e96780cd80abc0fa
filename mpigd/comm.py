"""Rank information and error-safe collectives: the one MPI module outside strategies.

Every rank of a run must end the same way. Two mechanisms guarantee it:

* :func:`agree` is a collective that every rank calls at a point where an error may
  have struck some ranks but not others (reading data, validating it). Each rank
  contributes its exception or ``None``; if any rank failed, *every* rank raises the
  same :class:`~mpigd.errors.MpigdError`, carrying the lowest failing rank's message,
  so all ranks leave the collective phase together and exit non-zero.
* :func:`run_guarded` wraps a rank's whole program: an agreed ``MpigdError`` is printed
  once (by rank 0) and every rank exits with status 2; any other exception is printed
  with its rank and traceback, and ``MPI_Abort`` ends the whole job (exit status 1), so
  no rank is ever left waiting in a collective that a dead peer will never join.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from mpi4py import MPI

from mpigd.errors import MpigdError

EXIT_USER_ERROR = 2
EXIT_ABORT = 1


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
    raise MpigdError(first_message) from error


def _describe(error: BaseException) -> str:
    """One line for an exception: its message, with its type unless it is ours."""
    if isinstance(error, MpigdError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_guarded(main: Callable[[], int | None], rank_info: RankInfo | None = None) -> int:
    """Run ``main`` on this rank; end the whole job cleanly whatever it raises.

    Returns the exit status for ``sys.exit`` (0 on success, 2 on an ``MpigdError``,
    which every rank is expected to raise together after :func:`agree`). Any other
    exception calls ``MPI_Abort``, which does not return.
    """
    info = rank_info or world()
    try:
        return int(main() or 0)
    except MpigdError as exc:
        if info.is_root or info.size == 1:
            print(f"mpigd: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        info.comm.Abort(EXIT_ABORT)
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank
        if isinstance(exc, SystemExit) and not exc.code:
            return 0
        prefix = f"mpigd: rank {info.rank} of {info.size} failed: "
        print(prefix + _describe(exc), file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        if info.size == 1:
            return EXIT_ABORT
        info.comm.Abort(EXIT_ABORT)
    return EXIT_ABORT


def sum_across(comm: MPI.Comm, values):
    """Collective: element-wise sum of a float64 or int64 numpy array over ranks, in place."""
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
    return values


def host_names(comm: MPI.Comm) -> list[str]:
    """Collective: the host name of every rank, in rank order (on every rank)."""
    return comm.allgather(MPI.Get_processor_name())


def mpi_library_version() -> str:
    """The MPI library's own version string, first line."""
    return MPI.Get_library_version().strip().splitlines()[0]
