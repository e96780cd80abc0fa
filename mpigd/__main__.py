"""``python -m mpigd`` (and the ``mpigd`` script): the command line, :mod:`mpigd.cli`.

Listening for stop signals comes before the heavy imports (numpy, h5py, mpi4py and
Numba take most of a second): a SIGTERM or Ctrl-C while the ranks start is then kept
for the run, which stops cleanly, instead of killing the ranks with status 143.
"""

import sys

from mpigd import preemption


def run(argv: list[str] | None = None, hooks=()) -> int:
    """Listen for stop signals, then import and run the command line (``argv`` and
    ``hooks`` as :func:`mpigd.cli.main` takes them)."""
    preemption.listen_from_start()
    from mpigd.cli import main

    return main(argv, hooks)


if __name__ == "__main__":
    sys.exit(run())
