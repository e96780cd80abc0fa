"""``python -m mpigd``: the command line (see :mod:`mpigd.cli`)."""

import sys

from mpigd.cli import main

sys.exit(main())
