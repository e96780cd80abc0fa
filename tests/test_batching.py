"""Mini-batch schedules: every row once per epoch, the same step count on every rank."""

from __future__ import annotations

import numpy as np
import pytest

from mpigd.data import row_range
from mpigd.run.batching import epoch_batches, steps_per_epoch


@pytest.mark.parametrize("n_rows, size, batch", [(1001, 3, 64), (10, 2, 1), (7, 4, 3), (50, 1, 50)])
def test_each_epoch_uses_every_row_once_in_balanced_global_batches(n_rows, size, batch):
    n_steps = steps_per_epoch(n_rows, batch)
    per_step = np.zeros(n_steps, dtype=int)
    for rank in range(size):
        start, stop = row_range(n_rows, rank, size)
        batches = epoch_batches(stop - start, rank, size, n_rows, batch, seed=3, epoch=2)
        assert len(batches) == n_steps
        used = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(used), np.arange(stop - start))
        per_step += [len(b) for b in batches]
    assert per_step.sum() == n_rows
    assert per_step.min() >= 1
    assert per_step.max() - per_step.min() <= size


def test_batches_are_reproducible_and_change_between_epochs():
    first = epoch_batches(100, 1, 4, 400, 40, seed=7, epoch=1)
    again = epoch_batches(100, 1, 4, 400, 40, seed=7, epoch=1)
    other = epoch_batches(100, 1, 4, 400, 40, seed=7, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_full_batch_is_one_step_over_all_rows():
    assert epoch_batches(10, 0, 2, 20, None, seed=0, epoch=1) == [None]
    assert steps_per_epoch(20, None) == 1
    assert steps_per_epoch(20, 1000) == 1
