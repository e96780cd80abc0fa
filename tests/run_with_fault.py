"""``python tests/run_with_fault.py SPEC ARGS...``: ``python -m mpigd ARGS`` with one
injected fault, for tests under mpirun.

SPEC is ``none``, a hook fault ``ACTION@RANK:STEP`` (``tests/fault_hooks.py``), or
``sigterm-at-start@RANK``: rank RANK sends itself SIGTERM while it still imports, before
the run begins. The program starts as ``python -m mpigd`` does (listening for stop
signals before the heavy imports). With ``MPIGD_TEST_STATUS_DIR`` set, each rank writes
its exit status to ``rank-R`` there (R: the launcher's ``PMI_RANK``), so that a test
can check every rank's status; a rank ended by ``MPI_Abort`` or a signal writes none.
"""

import os
import signal
import sys
from pathlib import Path

from mpigd import preemption  # light: nothing heavy is imported before the listening

if __name__ == "__main__":
    preemption.listen_from_start()
    spec, rank = sys.argv[1], os.environ.get("PMI_RANK", "0")
    hooks = []
    if spec.startswith("sigterm-at-start@"):
        if spec.split("@")[1] == rank:
            os.kill(os.getpid(), signal.SIGTERM)
    elif spec != "none":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fault_hooks import Fault

        hooks.append(Fault.parse(spec))
    from mpigd.__main__ import run

    status = run(sys.argv[2:], hooks=hooks)
    status_dir = os.environ.get("MPIGD_TEST_STATUS_DIR")
    if status_dir:
        Path(status_dir, f"rank-{rank}").write_text(str(status))
    sys.exit(status)
