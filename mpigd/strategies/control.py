"""The control word: two float64 slots that ride at the end of a strategy's messages.

``[stop vote, diverged]``. Before a message leaves, each rank writes its own word
(:func:`fill`): 1.0 in the first slot once it has received a stop signal
(SIGTERM/SIGUSR1, :mod:`mpigd.preemption`), 1.0 in the second if its numbers are not
finite. Summed by an Allreduce or Reduce, or sent on by a server's Bcast, the word then
tells every rank that receives it whether ANY rank asked to stop and whether ANY rank
diverged, at no cost of a message of its own. :func:`settle` reads it the same way on
every rank, so all ranks stop after the same step, and all raise the one
:class:`~mpigd.errors.DivergenceError` at the same point.

Divergence is reported one way by every strategy: :func:`check_finite` on numbers
every rank shares, or the diverged slot for numbers only some rank has seen. The loop
adds where it happened (epoch, step) and what to try.
"""

from __future__ import annotations

import numpy as np

from mpigd import preemption
from mpigd.errors import DivergenceError

#: Slots of the control word.
SIZE = 2
_STOP, _DIVERGED = 0, 1


def fill(word: np.ndarray, diverged: bool = False) -> None:
    """Write this rank's stop vote and divergence flag into ``word`` (2 slots)."""
    word[_STOP] = 1.0 if preemption.requested() else 0.0
    word[_DIVERGED] = 1.0 if diverged else 0.0


def settle(word: np.ndarray) -> bool:
    """Whether any rank voted to stop; DivergenceError if any rank diverged."""
    if word[_DIVERGED] > 0:
        raise diverged()
    return bool(word[_STOP] > 0)


def finite(loss: float, grad: np.ndarray | None = None) -> bool:
    """Whether ``loss`` (and ``grad``, if given) hold no NaN or Inf."""
    return bool(np.isfinite(loss) and (grad is None or np.isfinite(grad).all()))


def check_finite(loss: float, grad: np.ndarray | None = None) -> float:
    """``loss``, once it and ``grad`` are known finite; else DivergenceError.

    Call it on numbers every rank holds alike (reduced sums), so that every rank
    raises together.
    """
    if not finite(loss, grad):
        raise diverged("loss" if not np.isfinite(loss) else "gradient", loss)
    return loss


def diverged(what: str = "loss or gradient", loss: float | None = None) -> DivergenceError:
    """The error every strategy raises when training has diverged (``what`` was not
    finite; ``loss`` its value, where known)."""
    value = "" if loss is None else f" (loss={loss})"
    return DivergenceError(f"the {what} is not finite{value}")


def step_unless_diverged(optimizer, params: np.ndarray, finish, timer) -> bool:
    """One optimiser step on a gradient that arrived from another rank (an asynchronous
    server's update); whether it was taken. ``finish(point, grad_out)`` returns the loss
    and writes the gradient. A non-finite one leaves ``params`` as they were (False):
    the server then marks the run diverged for the epoch's end to report."""

    def received(point: np.ndarray, grad_out: np.ndarray) -> float:
        loss = finish(point, grad_out)
        if not finite(loss, grad_out):
            raise diverged()
        return loss

    with timer.phase("compute"):
        try:
            optimizer.step(params, received)
        except DivergenceError:
            return False
    return True
