"""Wall-clock accounting of where an epoch's time goes: compute, communication, I/O."""

from __future__ import annotations

import time
from contextlib import contextmanager

PHASES = ("compute", "comm", "io")


class PhaseTimer:
    """Accumulates seconds spent in each phase on this rank.

    ``with timer.phase("comm"): ...`` adds the block's wall time (``time.perf_counter``,
    seconds) to that phase. Phases nest: a ``comm`` block inside a ``compute`` block
    (a non-blocking Allreduce started during backpropagation) pauses the compute clock,
    so every second is booked to exactly one phase. ``take()`` returns the totals since
    the previous ``take()`` and restarts them, which is how the trainer gets per-epoch
    figures.
    """

    def __init__(self) -> None:
        self._seconds = dict.fromkeys(PHASES, 0.0)
        self._open: list[str] = []
        self._since = 0.0

    @contextmanager
    def phase(self, name: str):
        now = time.perf_counter()
        if self._open:
            self._seconds[self._open[-1]] += now - self._since
        self._open.append(name)
        self._since = now
        try:
            yield
        finally:
            now = time.perf_counter()
            self._seconds[self._open.pop()] += now - self._since
            self._since = now

    def take(self) -> dict[str, float]:
        """Seconds per phase since the last call, keyed ``compute_s``, ``comm_s``, ``io_s``."""
        taken = {f"{name}_s": seconds for name, seconds in self._seconds.items()}
        self._seconds = dict.fromkeys(PHASES, 0.0)
        return taken
