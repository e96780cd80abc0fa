"""Hooks: what a run does besides training, as objects handed to the loop.

The loop (:mod:`mpigd.run.loop`) calls every hook at fixed points of a run; a hook
that has nothing to do at a point inherits the base class's no-op. The default hooks
of a run (:func:`mpigd.run.default_hooks`) are the progress display, the checkpoint
policy, the abort marker and, with ``--timeline``, the step timeline; tests add their
own (a slow rank, a fault, a crash before a checkpoint's rename) without any switch in
the package. The shortest example is :class:`CheckpointPolicy`.

Every method gets the :class:`~mpigd.run.loop.Run` (config, ranks, timer, parts,
state, record) first. Where a method is called:

=========================  ==============================================================
method                     called
=========================  ==============================================================
``run_started(run)``       every rank, once set-up has succeeded, before the first epoch
``before_step(run)``       every rank, before each of its optimiser steps;
                           ``run.state.global_step`` is the index of the step about to
                           be taken (from 0, whole run). An asynchronous server calls it
                           for all of an epoch's steps at the epoch's start
``epoch_ended(run, row)``  every rank, after each completed epoch; ``row`` is its
                           metrics line as this rank computed it (rank 0's is the one
                           written; times and server-only fields differ across ranks)
``before_checkpoint_``     rank 0, between writing (and fsyncing) the temporary
``rename(run)``            checkpoint file and renaming it over ``checkpoint.h5``
``gradient_applied(run,``  the server of an asynchronous strategy, after applying the
``worker, step, lag)``     gradient of ``worker``'s ``step``-th batch, ``lag`` versions stale
``aborting(run, msg)``     the failing rank, just before ``MPI_Abort`` ends the job
                           (``run`` is None if that happens during set-up)
``run_ended(run, status)`` every rank, in reverse order, when the ranks end the run
                           together: ``completed``, ``failed`` (an agreed error),
                           ``preempted`` or ``interrupted``. Not after an abort.
``run_recorded(run,``      every rank, after a completed run's model.h5 and final
``summary)``               run.json are written; ``summary`` is what ``train`` returns
                           (``stop_reason``, ``epochs_run``, ``final_train_loss``)
=========================  ==============================================================

Hooks may call collectives only in ``run_started``, ``epoch_ended`` and ``run_ended``,
where every rank is; ``before_step`` may checkpoint (collective) only while the
strategy keeps the ranks in step (``run.parts.strategy.replicated``).
"""

from __future__ import annotations

import sys
import time

from mpigd.run import progress
from mpigd.run.batching import steps_per_epoch


class Hook:
    """Base class: every hook point is a no-op (see the module docstring for when each
    is called)."""

    def run_started(self, run) -> None:
        pass

    def before_step(self, run) -> None:
        pass

    def epoch_ended(self, run, row: dict) -> None:
        pass

    def before_checkpoint_rename(self, run) -> None:
        pass

    def gradient_applied(self, run, worker: int, step: int, lag: int) -> None:
        pass

    def aborting(self, run, message: str) -> None:
        pass

    def run_ended(self, run, status: str) -> None:
        pass

    def run_recorded(self, run, summary: dict) -> None:
        pass


class Hooks:
    """The run's hooks in order, called as one (``hooks.before_step()``).

    Holds the :class:`~mpigd.run.loop.Run` once it exists (:meth:`bind`), so that parts
    which only see this object (a strategy reporting ``gradient_applied``) need not.
    """

    def __init__(self, hooks) -> None:
        self.hooks = list(hooks)
        self.run = None

    def bind(self, run) -> None:
        self.run = run

    def run_started(self) -> None:
        for hook in self.hooks:
            hook.run_started(self.run)

    def before_step(self) -> None:
        for hook in self.hooks:
            hook.before_step(self.run)

    def epoch_ended(self, row: dict) -> None:
        for hook in self.hooks:
            hook.epoch_ended(self.run, row)

    def before_checkpoint_rename(self) -> None:
        for hook in self.hooks:
            hook.before_checkpoint_rename(self.run)

    def gradient_applied(self, worker: int, step: int, lag: int) -> None:
        for hook in self.hooks:
            hook.gradient_applied(self.run, worker, step, lag)

    def aborting(self, message: str) -> None:
        for hook in self.hooks:
            hook.aborting(self.run, message)

    def run_ended(self, status: str) -> None:
        for hook in reversed(self.hooks):
            hook.run_ended(self.run, status)

    def run_recorded(self, summary: dict) -> None:
        for hook in self.hooks:
            hook.run_recorded(self.run, summary)


class Progress(Hook):
    """Rank 0's console in the ``--progress`` mode (bar, json, quiet): a line per epoch;
    in bar mode also the epoch's progress while it runs (without a terminal, a line
    every ``--progress-every`` seconds; 0: never; :class:`~mpigd.run.progress.EpochMeter`)
    and why the run stopped; in json mode a last line with the run's final status.

    The progress of an epoch is its steps taken, or for an asynchronous server (whose
    ``before_step`` calls all come at the epoch's start) the gradients it has applied:
    one per step of each worker, ranks 1..P-1. ``stderr``, ``stdout`` and ``clock`` are
    for tests (default: the process's streams and ``time.monotonic``).
    """

    def __init__(self, mode: str, stderr=None, stdout=None, clock=time.monotonic) -> None:
        self.mode = mode
        self.streams, self.clock = (stderr, stdout), clock
        self.meter = None  # rank 0 in bar mode with --progress-every > 0
        self.counts_gradients = False
        self.applied = 0  # gradients the asynchronous server applied in this epoch

    def run_started(self, run) -> None:
        every_s = run.config.progress_every
        if not (run.ranks.is_root and self.mode == "bar" and every_s > 0):
            return
        steps = steps_per_epoch(run.data.info.n_rows, run.config.batch_size)
        self.counts_gradients = not run.parts.strategy.steps_in_lockstep
        total, unit = steps, "steps"
        if self.counts_gradients:
            workers = run.ranks.size - run.config.servers  # their gradients, applied by the servers
            total, unit = steps * workers, "gradients"
        stderr, stdout = self.streams
        self.meter = progress.EpochMeter(
            run.config.loop_epochs[0], total, run.data.info.n_rows, unit, every_s,
            stderr or sys.stderr, stdout or sys.stdout, self.clock,
        )  # fmt: skip

    def before_step(self, run) -> None:
        if self.meter and not self.counts_gradients:
            self.meter.at(run.state.epoch, run.state.step_in_epoch)

    def gradient_applied(self, run, worker: int, step: int, lag: int) -> None:
        if self.meter:
            self.applied = self.applied + 1 if self.meter.epoch == run.state.epoch else 1
            self.meter.at(run.state.epoch, self.applied)

    def epoch_ended(self, run, row: dict) -> None:
        if run.ranks.is_root:
            if self.meter:
                self.meter.end()
            progress.report(self.mode, row, run.config.loop_epochs[0])

    def aborting(self, run, message: str) -> None:
        if self.meter:  # the abort's message starts on a clean line
            self.meter.end()

    def run_ended(self, run, status: str) -> None:
        if not run.ranks.is_root:
            return
        if self.meter:
            self.meter.end()
        if status != "completed":  # a completed run's status waits for its record
            progress.print_final(self.mode, progress.final_status(
                status, None, run.state.epochs_done, None))  # fmt: skip

    def run_recorded(self, run, summary: dict) -> None:
        if run.ranks.is_root:
            progress.print_final(self.mode, progress.final_status(
                "completed", summary["stop_reason"], summary["epochs_run"],
                summary["final_train_loss"],
            ))  # fmt: skip


class CheckpointPolicy(Hook):
    """``--checkpoint-every K`` epochs and ``--checkpoint-every-steps K`` steps.

    The loop itself checkpoints at the end of the run and when the ranks agree to stop;
    this hook adds the periodic ones. A step checkpoint is taken only where the
    strategy holds one model on every rank (``replicated``).
    """

    def __init__(self, every_epochs: int, every_steps: int) -> None:
        self.every_epochs, self.every_steps = every_epochs, every_steps

    def before_step(self, run) -> None:
        step = run.state.global_step
        if self.every_steps and step > 0 and step % self.every_steps == 0:
            if run.parts.strategy.replicated:
                run.save_checkpoint()

    def epoch_ended(self, run, row: dict) -> None:
        if self.every_epochs and row["epoch"] % self.every_epochs == 0:
            run.save_checkpoint()


class AbortMarker(Hook):
    """Marks ``run.json`` in ``out`` as aborted, with the failing rank's message, before
    MPI_Abort (also during set-up, before the Run exists), if it is the record of run
    ``run_id``: a previous run's record there is left as it was."""

    def __init__(self, out: str, run_id: str) -> None:
        self.out, self.run_id = out, run_id

    def aborting(self, run, message: str) -> None:
        from mpigd.record import mark_aborted

        mark_aborted(self.out, message, self.run_id)
