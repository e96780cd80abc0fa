"""Learning-rate schedules: the rate as a function of the global step count.

=================  ==============================================================
``--lr-schedule``  rate at step t (t = 0, 1, ...; one step = one global batch)
=================  ==============================================================
constant           lr
step               lr * gamma ** floor(epoch / step_epochs)
cosine             lr * ½ (1 + cos(π t / T)), T = total steps of the run
invsqrt            lr / sqrt(1 + t / warmup), ``warmup`` = steps per epoch
=================  ==============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine", "invsqrt")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule (see module table); all quantities in steps or epochs."""

    lr: float
    kind: str = "constant"
    steps_per_epoch: int = 1
    total_steps: int = 1
    step_epochs: int = 10
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")

    def rate(self, step: int) -> float:
        """Learning rate for global step ``step``."""
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** ((step // self.steps_per_epoch) // self.step_epochs)
        if self.kind == "cosine":
            progress = min(step / max(self.total_steps, 1), 1.0)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr / math.sqrt(1.0 + step / self.steps_per_epoch)
