"""Scaling laws fitted to measured times: Amdahl (strong), Gustafson (weak), Karp-Flatt.

Conventions: ``ranks`` are MPI rank counts P; times are seconds per epoch; a speedup is a
dimensionless ratio. Strong scaling keeps the total problem fixed, so the speedup is
``S(P) = T(1) / T(P)``; weak scaling keeps the rows per rank fixed, so the work grows with
P and the scaled speedup is ``S(P) = P T(1) / T(P)``. In both cases the parallel
efficiency is ``S(P) / P``. (:mod:`experiments.summary` says how a study whose smallest
rank count is above 1 takes its baseline.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AmdahlFit:
    """Amdahl's law ``T(P) = T1 (f + (1 - f) / P)``, hence ``S(P) = 1 / (f + (1 - f) / P)``.

    Attributes
    ----------
    serial_fraction : f, the share of the one-rank time that does not parallelise.
        Negative when the measurements scale superlinearly (for example, caches).
    t1_s : T1, the fitted one-rank time in seconds.
    """

    serial_fraction: float
    t1_s: float

    def speedup(self, ranks) -> np.ndarray:
        """Predicted speedup at each rank count (array like ``ranks``)."""
        ranks = np.asarray(ranks, dtype=float)
        return 1.0 / (self.serial_fraction + (1.0 - self.serial_fraction) / ranks)


@dataclass(frozen=True)
class GustafsonFit:
    """Gustafson's law ``S(P) = P - a (P - 1)`` for the scaled (weak-scaling) speedup.

    Attributes
    ----------
    serial_fraction : a, the share of the P-rank run's time that is serial.
    """

    serial_fraction: float

    def speedup(self, ranks) -> np.ndarray:
        """Predicted scaled speedup at each rank count (array like ``ranks``)."""
        ranks = np.asarray(ranks, dtype=float)
        return ranks - self.serial_fraction * (ranks - 1.0)


def fit_amdahl(ranks, times_s) -> AmdahlFit:
    """Least-squares fit of ``T(P) = a + b / P`` to strong-scaling times.

    Parameters
    ----------
    ranks : (n,) rank counts, at least two distinct.
    times_s : (n,) seconds per epoch at those rank counts (medians, or every repeat).

    Returns
    -------
    AmdahlFit with ``t1_s = a + b`` and ``serial_fraction = a / (a + b)``.
    """
    ranks, times_s = _check_pairs(ranks, times_s)
    design = np.column_stack([np.ones_like(ranks), 1.0 / ranks])
    (serial_s, parallel_s), *_ = np.linalg.lstsq(design, times_s, rcond=None)
    t1_s = serial_s + parallel_s
    return AmdahlFit(serial_fraction=float(serial_s / t1_s), t1_s=float(t1_s))


def fit_gustafson(ranks, scaled_speedups) -> GustafsonFit:
    """Least-squares fit of ``S(P) = P - a (P - 1)``, i.e. ``P - S = a (P - 1)``.

    Parameters
    ----------
    ranks : (n,) rank counts, at least two distinct.
    scaled_speedups : (n,) weak-scaling speedups ``P T(1) / T(P)``.
    """
    ranks, scaled_speedups = _check_pairs(ranks, scaled_speedups)
    excess = ranks - 1.0
    serial = np.dot(excess, ranks - scaled_speedups) / np.dot(excess, excess)
    return GustafsonFit(serial_fraction=float(serial))


def karp_flatt(ranks, speedups) -> np.ndarray:
    """The experimentally determined serial fraction ``e = (1/S - 1/P) / (1 - 1/P)``.

    Parameters
    ----------
    ranks : (n,) rank counts.
    speedups : (n,) measured speedups at those rank counts.

    Returns
    -------
    (n,) float array, NaN where P = 1 (undefined). A serial fraction that grows with P
    points to overhead (communication, imbalance) rather than to serial code.
    """
    ranks = np.asarray(ranks, dtype=float)
    speedups = np.asarray(speedups, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        serial = (1.0 / speedups - 1.0 / ranks) / (1.0 - 1.0 / ranks)
    return np.where(ranks > 1, serial, np.nan)


def _check_pairs(ranks, values) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.asarray(ranks, dtype=float)
    values = np.asarray(values, dtype=float)
    if ranks.shape != values.shape or ranks.ndim != 1:
        raise ValueError(f"ranks {ranks.shape} and values {values.shape} must be equal 1-D")
    if len(np.unique(ranks)) < 2:
        raise ValueError("a scaling fit needs at least two distinct rank counts")
    return ranks, values
