"""``python tests/run_with_fault.py SPEC ARGS...``: ``python -m mpigd ARGS`` with one
injected fault (``tests/fault_hooks.py``: ``ACTION@RANK:STEP``), for tests under mpirun."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_hooks import Fault  # noqa: E402

from mpigd.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], hooks=[Fault.parse(sys.argv[1])]))
