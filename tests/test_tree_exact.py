"""The exact grid of mpigd.trees.exact: sums of rounded statistics do not depend on the
order of addition, which is what makes trees the same on every rank count."""

from __future__ import annotations

import numpy as np

from mpigd.trees import exact


def test_every_order_of_summation_gives_the_same_bits():
    rng = np.random.default_rng(0)
    stats = np.column_stack([np.ones(100_000), rng.standard_normal(100_000) * 1e3,
                             rng.random(100_000) * 1e-6])  # fmt: skip
    exact.round_to_grid(stats, exact.exponents(np.abs(stats).sum(axis=0)))
    reference = stats.sum(axis=0)
    for _ in range(5):
        shuffled = stats[rng.permutation(len(stats))]
        chunks = np.array_split(shuffled, rng.integers(2, 50))
        by_parts = np.sum([chunk.sum(axis=0) for chunk in chunks], axis=0)
        np.testing.assert_array_equal(by_parts, reference)
        np.testing.assert_array_equal(np.cumsum(shuffled, axis=0)[-1], reference)


def test_raw_values_do_round_differently_so_the_grid_is_needed():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(100_000)
    sums = {float(values[rng.permutation(len(values))].cumsum()[-1]) for _ in range(5)}
    assert len(sums) > 1


def test_the_rounding_error_is_tiny_and_integers_are_kept():
    rng = np.random.default_rng(2)
    g = rng.uniform(-1, 1, 1_000_000)
    counts = rng.poisson(1.0, 1_000_000).astype(np.float64)
    stats = np.column_stack([counts, g])
    rounded = exact.round_to_grid(stats.copy(), exact.exponents(np.abs(stats).sum(axis=0)))
    np.testing.assert_array_equal(rounded[:, 0], counts)
    assert np.max(np.abs(rounded[:, 1] - g)) < 1e-9
