"""Wall-clock accounting of where an epoch's time goes: compute, communication, I/O."""

from __future__ import annotations

import time
from contextlib import contextmanager

PHASES = ("compute", "comm", "io")
#: The timeline category of a :meth:`PhaseTimer.span` given no ``cat``, by the first
#: word of its label (``"checkpoint write"``: ``checkpoint``); any other is ``span``.
SPAN_CATS = {
    "evaluation": "eval",
    "train_loss": "eval",
    "checkpoint": "checkpoint",
    "read": "io",
}


class PhaseTimer:
    """Accumulates seconds spent in each phase on this rank.

    ``with timer.phase("comm"): ...`` adds the block's wall time (``time.perf_counter``,
    seconds) to that phase. Phases nest: a ``comm`` block inside a ``compute`` block
    (a non-blocking Allreduce started during backpropagation) pauses the compute clock,
    so every second is booked to exactly one phase. ``take()`` returns the totals since
    the previous ``take()`` and restarts them, which is how the loop gets per-epoch
    figures.

    ``label`` names the call inside a phase (``"Allreduce"``, ``"bucket 2"``) and
    ``nbytes`` the bytes this rank sends in it; :meth:`span` marks a stretch that is no
    phase of its own (an evaluation, a checkpoint write). Both matter only to
    :attr:`trace`, a per-rank event sink that the timeline hook attaches; without it
    they cost nothing more than a plain phase.
    """

    def __init__(self) -> None:
        self._seconds = dict.fromkeys(PHASES, 0.0)
        self._open: list[str] = []
        self._since = 0.0
        #: None, or a list (attached by :mod:`mpigd.run.timeline`) to which every phase
        #: block and span appends ``(cat, label, start_s, end_s, extra)`` when it ends:
        #: ``perf_counter`` seconds; for a phase ``cat`` is its name, ``label`` may be
        #: None and ``extra`` is ``nbytes`` (or None); for a span ``extra`` is its args
        #: dict. Inner blocks end, and so are appended, before the blocks around them.
        self.trace: list | None = None

    @contextmanager
    def phase(self, name: str, label: str | None = None, nbytes: int | None = None):
        start = time.perf_counter()
        if self._open:
            self._seconds[self._open[-1]] += start - self._since
        self._open.append(name)
        self._since = start
        try:
            yield
        finally:
            end = time.perf_counter()
            self._seconds[self._open.pop()] += end - self._since
            self._since = end
            if self.trace is not None:
                self.trace.append((name, label, start, end, nbytes))

    @contextmanager
    def span(self, label: str, cat: str | None = None, **args):
        """A stretch of time shown on the timeline only (booked to no phase).

        ``cat`` is its timeline category (``eval``, ``checkpoint``, ``io``), by default
        looked up from the first word of ``label`` in :data:`SPAN_CATS`; ``args`` are
        shown with it.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.trace is not None:
                cat = cat or SPAN_CATS.get(label.partition(" ")[0], "span")
                self.trace.append((cat, label, start, time.perf_counter(), args))

    def take(self) -> dict[str, float]:
        """Seconds per phase since the last call, keyed ``compute_s``, ``comm_s``, ``io_s``."""
        taken = {f"{name}_s": seconds for name, seconds in self._seconds.items()}
        self._seconds = dict.fromkeys(PHASES, 0.0)
        return taken
