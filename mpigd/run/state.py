"""Where a run is: the small record the loop, the checkpoints and the hooks share.

The same on every rank. Order of updates in one epoch ``e`` (:mod:`mpigd.run.loop`):
``epoch`` is set to ``e`` before its first step; before each step ``step_in_epoch`` is
set to the steps of ``e`` already taken, the hooks run (a step checkpoint records
``epochs_done`` and ``step_in_epoch``) with ``global_step`` the index of the step about
to be taken, then ``global_step`` is incremented; once the strategy returns,
``step_in_epoch`` is the steps taken in ``e`` (read by the checkpoint of an epoch a stop
signal cut short); after a completed epoch ``epochs_done = e`` and ``step_in_epoch = 0``,
before the metrics line reaches the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunState:
    """Progress of a run (replicated on every rank)."""

    #: The epoch being trained (from 1); 0 before the first.
    epoch: int = 0
    #: Steps of ``epoch`` taken so far (see the update order above).
    step_in_epoch: int = 0
    #: Optimiser steps taken in the whole run, resumed ones included.
    global_step: int = 0
    #: The first epoch this process trains (a resumed run: the checkpoint's + 1).
    start_epoch: int = 1
    #: Steps of ``start_epoch`` already taken before a resume (0 at an epoch boundary).
    first_step: int = 0
    #: ``global_step`` of the last checkpoint written (or resumed from); -1: none.
    last_checkpoint_step: int = -1
    #: Epochs completed, resumed ones included.
    epochs_done: int = 0

    def steps_already_taken(self, epoch: int) -> int:
        """Steps of ``epoch`` that a resumed run skips (its checkpoint took them)."""
        return self.first_step if epoch == self.start_epoch else 0
