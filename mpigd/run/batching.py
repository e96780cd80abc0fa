"""Which local rows each rank uses in each step of an epoch.

``--batch-size B`` is the GLOBAL batch. With N training rows an epoch has
S = ceil(N / B) steps, the same on every rank (so no rank waits for a step another
never takes). Each rank shuffles its own n_r rows (seeded by seed, epoch and rank, so
the schedule is reproducible and needs no saved generator state) and spreads them over
the S steps: its k-th row goes to step floor((k + r/P) · S / n_r). Every step then
takes about n_r / S rows from rank r, about B in all; the r/P phase interleaves ranks
whose shares are smaller than S so that no global batch is left empty needlessly.
"""

from __future__ import annotations

import math

import numpy as np


def steps_per_epoch(n_rows: int, batch_size: int | None) -> int:
    """Number of optimiser steps in one epoch (1 for full batch)."""
    if batch_size is None:
        return 1
    return max(1, math.ceil(n_rows / batch_size))


def epoch_batches(
    n_local: int, rank: int, size: int, n_rows: int, batch_size: int | None, seed: int, epoch: int
) -> list[np.ndarray | None]:
    """This rank's local row indices for each step of ``epoch``.

    Returns a list of S int64 arrays (S from :func:`steps_per_epoch`), some possibly
    empty, or ``[None]`` for full-batch training (all local rows, unshuffled).
    """
    if batch_size is None:
        return [None]
    n_steps = steps_per_epoch(n_rows, batch_size)
    rng = np.random.default_rng([seed, epoch, rank])
    order = rng.permutation(n_local)
    step_of_row = ((np.arange(n_local) + rank / size) * n_steps / max(n_local, 1)).astype(np.int64)
    bounds = np.searchsorted(step_of_row, np.arange(n_steps + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(n_steps)]
