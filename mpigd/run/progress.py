"""Rank 0's console output: what the :class:`~mpigd.run.hooks.Progress` hook prints.

Per ``--progress`` mode:

- ``bar``: one line per epoch on stdout; during an epoch an :class:`EpochMeter` (a bar
  redrawn in place on a terminal, else a plain line every ``--progress-every`` seconds);
  at the end of a completed run one line saying why it stopped.
- ``json``: each epoch's metrics line as JSON, then one final status object
  (:func:`final_status`).
- ``quiet``: nothing.

:func:`note` is a one-off message about the run itself, on stderr in every mode.
"""

from __future__ import annotations

import json
import os
import sys

#: Seconds between two redraws of the live bar: a few a second look live and cost nothing.
REDRAW_S = 0.2
#: Characters of the live bar between its brackets.
BAR_WIDTH = 24


def report(mode: str, row: dict, epochs: int) -> None:
    """Print one epoch's metrics ``row`` in the chosen ``--progress`` mode."""
    if mode == "quiet":
        return
    if mode == "json":
        print(json.dumps(row), flush=True)
        return
    parts = [
        f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train_loss {row['train_loss']:.6g}",
    ]
    for key in ("test_loss", "test_accuracy", "test_r2"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4g}")
    if "staleness_mean" in row:  # ps-async: how many versions old the applied gradients were
        parts.append(f"staleness mean {row['staleness_mean']:.3g} max {row['staleness_max']}")
    parts.append(
        f"{row['time_s']:.3f} s (compute {row['compute_s']:.3f}, "
        f"comm {row['comm_s']:.3f}, io {row['io_s']:.3f})"
    )
    print("  ".join(parts), flush=True)


def final_status(status: str, stop_reason: str | None, epochs_run: int,
                 final_train_loss: float | None) -> dict:  # fmt: skip
    """The run's last console record: how it ended (``status``: completed, failed,
    preempted, interrupted), why (None unless completed: the error message on stderr and
    run.json say it), the epochs completed, and the training loss at the end (None unless
    completed)."""
    return {"status": status, "stop_reason": stop_reason, "epochs_run": epochs_run,
            "final_train_loss": final_train_loss}  # fmt: skip


def print_final(mode: str, final: dict) -> None:
    """Print the :func:`final_status` ``final``: a JSON line (``json``); in ``bar`` mode,
    for a completed run, why it stopped (otherwise the error message says it)."""
    if mode == "json":
        print(json.dumps(final), flush=True)
    elif mode == "bar" and final["status"] == "completed":
        loss = final["final_train_loss"]
        tail = "" if loss is None else f", final train loss {loss:.6g}"
        print(f"stopped: {final['stop_reason']} ({final['epochs_run']} epochs{tail})", flush=True)


class EpochMeter:
    """How far the current epoch is, shown while it runs (bar mode, rank 0).

    The caller reports progress with :meth:`at` (``done`` of ``total`` units per epoch:
    steps, or gradients applied by an asynchronous server); each call costs one clock
    read and a comparison unless a redraw is due. If ``stderr`` is a terminal the line
    is redrawn there in place with ``\\r``, at most every :data:`REDRAW_S` seconds, and
    wiped by :meth:`end`, so that the epoch's own line takes its place; otherwise a
    plain line goes to ``stdout`` every ``every_s`` seconds, to be read in a batch log
    (beside the epoch lines: a launcher that forwards stdout and stderr separately
    keeps the order within each). Under ``mpirun`` a rank's stderr is a pipe, not a
    terminal, so launched runs get the plain lines.

    Parameters
    ----------
    epochs : int
        The run's ``--epochs``, for ``epoch e/E``.
    total : int
        Units of progress in one epoch.
    rows : int
        Training rows one epoch steps through (for rows per second).
    unit : str
        What a unit is, plural (``steps``), for the plain line.
    every_s : float
        Seconds between plain lines (> 0).
    stderr, stdout : file
        Where the live bar and the plain lines go.
    clock : callable
        Seconds, monotonic (``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, epochs, total, rows, unit, every_s, stderr, stdout, clock) -> None:
        self.epochs, self.total, self.rows, self.unit = epochs, max(total, 1), rows, unit
        self.live = stderr.isatty()
        self.stream, self.clock = (stderr if self.live else stdout), clock
        self.interval = REDRAW_S if self.live else every_s
        self.epoch = None  # the epoch shown; None between epochs
        self.start = self.start_done = self.next_draw = 0.0
        self.drawn = 0  # characters of the live line now on screen

    def at(self, epoch: int, done: int) -> None:
        """``done`` units of ``epoch`` are complete (the first call of an epoch starts it)."""
        if epoch != self.epoch:
            self.epoch, self.start_done = epoch, done
            self.start = self.clock()
            self.next_draw = self.start + self.interval
            return
        now = self.clock()
        if now < self.next_draw:
            return
        self.next_draw = now + self.interval
        self._draw(self.describe(done, now - self.start))

    def end(self) -> None:
        """The epoch is over (or the run): wipe the live line, leaving the cursor at the
        start of the empty line."""
        if self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
        self.epoch, self.drawn = None, 0

    def describe(self, done: int, elapsed_s: float) -> str:
        """The progress text after ``elapsed_s`` seconds of the epoch with ``done`` units
        complete: fraction, rows per second and time left, each measured from the
        epoch's first report (a resumed epoch's skipped steps are not counted)."""
        fraction = min(done / self.total, 1.0)
        rate = (done - self.start_done) / elapsed_s if elapsed_s > 0 else 0.0  # units/s
        speed = f"{_si(rate * self.rows / self.total)} rows/s" if rate > 0 else "- rows/s"
        left = f"{_duration((self.total - done) / rate)} left" if rate > 0 else "time left -"
        head = f"epoch {self.epoch:>{len(str(self.epochs))}}/{self.epochs}"
        if self.live:
            filled = round(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            return f"{head} [{bar}] {fraction:4.0%}  {speed}  {left}"
        return f"{head}  {fraction:.0%} ({done}/{self.total} {self.unit})  {speed}  {left}"

    def _draw(self, text: str) -> None:
        if not self.live:
            self.stream.write(text + "\n")
        else:
            text = text[: _columns(self.stream) - 1]  # a wrapped line cannot be redrawn
            self.stream.write("\r" + text.ljust(self.drawn))
            self.drawn = len(text)
        self.stream.flush()


def _si(value: float) -> str:
    """``850``, ``62.4k``, ``1.23M``: a rate in three significant digits (999.7 is
    ``1k``: the prefix is chosen after rounding)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale * 0.9995:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    """``0:41``, ``12:05``, ``2:03:09``: a duration as a clock reads it."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _columns(stream) -> int:
    """The width of the terminal behind ``stream``; 80 if it has none or reports none
    (a pseudo-terminal without a window says 0)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def note(message: str) -> None:
    """A one-off message about the run itself (resume) to stderr, in every mode."""
    print(f"mpigd: {message}", file=sys.stderr, flush=True)
