"""The rules a train option's value must follow, as data the option metadata holds.

:mod:`mpigd.config` gives each numeric option a :class:`Range` (the values that mean
something: a momentum in [0, 1), a decay factor in (0, 1]), gives an option that only
some configurations read an :class:`Applies` (``--nesterov`` only with ``--optimizer
momentum``), and lists the option combinations no run can honour as
:class:`Contradiction` rows. ``TrainConfig.validate`` refuses a value outside its range
and a contradiction; an option set where it does not apply is a warning, printed once
by rank 0 and kept in run.json, because the run is still well defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The values from ``low`` to ``high`` (None: unbounded), each end closed unless
    ``*_open``. A float must also be finite: ``inf`` and ``nan`` are never meaningful."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """The range in words for an error message: ``in [0, 1)``, ``>= 1``, ``> 0``."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return "a finite number"


def _number(value: float) -> str:
    """``1`` for 1.0, ``2**32`` for 4294967296: bounds as a user would type them."""
    if isinstance(value, int) and value > 2**20 and (value & (value - 1)) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Applies:
    """When an option is read: ``holds(config)``; ``text`` says when, for a warning
    (``"with --optimizer momentum"``)."""

    holds: Callable[[object], bool]
    text: str

    def __and__(self, other: Applies) -> Applies:
        return Applies(lambda c: self.holds(c) and other.holds(c), f"{self.text} and {other.text}")


def when(name: str, *values) -> Applies:
    """The option applies while option ``name`` has one of ``values``."""
    return Applies(lambda config: getattr(config, name) in values, f"with {_setting(name, values)}")


def unless(name: str, *values) -> Applies:
    """The option applies unless option ``name`` has one of ``values``."""
    flag = "--" + name.replace("_", "-")
    return Applies(lambda config: getattr(config, name) not in values,
                   f"with {flag} other than {' or '.join(map(str, values))}")  # fmt: skip


def _setting(name: str, values) -> str:
    """``--optimizer momentum`` for ``("optimizer", ("momentum",))``; ``--resume`` for
    a switch that must be on."""
    flag = "--" + name.replace("_", "-")
    if values == (True,):
        return flag
    return f"{flag} {' or '.join(map(str, values))}"


@dataclass(frozen=True)
class Contradiction:
    """Options no run can honour together: refused when ``holds(config)``, with
    ``message`` saying which flags and what to do instead."""

    holds: Callable[[object], bool]
    message: str
