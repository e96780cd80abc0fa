"""Scaling laws fitted to measured times: Amdahl (strong), Gustafson (weak), Karp-Flatt.

Conventions: times are seconds per epoch; a speedup is a dimensionless ratio. Strong
scaling keeps the total problem fixed, so the speedup is ``S(P) = T(1) / T(P)``; weak
scaling keeps the rows per rank fixed, so the work grows with P and the scaled speedup
is ``S(P) = P T(1) / T(P)``. In both cases the parallel efficiency is ``S(P) / P``. A
study whose smallest rank count P0 is above 1 counts ranks in units of P0
(``p = P / P0``, :mod:`experiments.summary`); Gustafson and Karp-Flatt take those units.

Both laws are fitted inside their domain, serial fraction ``0 <= f <= 1``, by bounded
least squares on relative errors (each point counts alike, whatever its time). Where
the data lie outside the law (times that rise with P, superlinear speedups) the fit ends
on a bound and misses the points: ``max_relative_error`` says by how much, and
``fits`` whether that is within :data:`FIT_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

#: A law describes the data when it reproduces every fitted value within this share.
FIT_TOLERANCE = 0.10


@dataclass(frozen=True)
class AmdahlFit:
    """Amdahl's law ``T(P) = T1 (f + (1 - f) / P)``, hence ``S(P) = 1 / (f + (1 - f) / P)``.

    Attributes
    ----------
    serial_fraction : f in [0, 1], the share of the one-rank time that does not
        parallelise (extrapolated to P = 1 when the smallest measured P is larger).
    t1_s : T1, the fitted one-rank time in seconds.
    max_relative_error : worst ``|fitted - measured| / measured`` over the fitted times.
    """

    serial_fraction: float
    t1_s: float
    max_relative_error: float

    @property
    def fits(self) -> bool:
        """Whether the law reproduces every fitted time within :data:`FIT_TOLERANCE`."""
        return self.max_relative_error <= FIT_TOLERANCE

    def speedup(self, ranks) -> np.ndarray:
        """Predicted speedup over one rank at each rank count (array like ``ranks``)."""
        ranks = np.asarray(ranks, dtype=float)
        return 1.0 / (self.serial_fraction + (1.0 - self.serial_fraction) / ranks)


@dataclass(frozen=True)
class GustafsonFit:
    """Gustafson's law ``S(p) = p - a (p - 1)`` for the scaled (weak-scaling) speedup.

    Attributes
    ----------
    serial_fraction : a in [0, 1], the share of the p-unit run's time that is serial.
    max_relative_error : worst ``|fitted - measured| / measured`` over the speedups.
    """

    serial_fraction: float
    max_relative_error: float

    @property
    def fits(self) -> bool:
        """Whether the law reproduces every fitted speedup within :data:`FIT_TOLERANCE`."""
        return self.max_relative_error <= FIT_TOLERANCE

    def speedup(self, ranks) -> np.ndarray:
        """Predicted scaled speedup at each rank count (array like ``ranks``)."""
        ranks = np.asarray(ranks, dtype=float)
        return ranks - self.serial_fraction * (ranks - 1.0)


def fit_amdahl(ranks, times_s) -> AmdahlFit:
    """Fit ``T(P) = a + b / P`` with ``a, b >= 0`` to strong-scaling times.

    Parameters
    ----------
    ranks : (n,) rank counts P, at least two distinct.
    times_s : (n,) seconds per epoch at those rank counts (medians, or every repeat).

    Returns
    -------
    AmdahlFit with ``t1_s = a + b`` and ``serial_fraction = a / (a + b)``: minimises the
    squared relative errors ``(a + b / P - T) / T``.
    """
    ranks, times_s = _check_pairs(ranks, times_s)
    design = np.column_stack([np.ones_like(ranks), 1.0 / ranks]) / times_s[:, None]
    serial_s, parallel_s = lsq_linear(
        design, np.ones_like(ranks), bounds=(0.0, np.inf), method="bvls"
    ).x
    t1_s = serial_s + parallel_s
    fitted = serial_s + parallel_s / ranks
    return AmdahlFit(
        serial_fraction=float(serial_s / t1_s),
        t1_s=float(t1_s),
        max_relative_error=_worst(fitted, times_s),
    )


def fit_gustafson(ranks, scaled_speedups) -> GustafsonFit:
    """Fit ``S(p) = p - a (p - 1)`` with ``0 <= a <= 1``, i.e. ``p - S = a (p - 1)``.

    Parameters
    ----------
    ranks : (n,) rank counts p (in units of the baseline), at least two distinct.
    scaled_speedups : (n,) weak-scaling speedups ``p T(P0) / T(P)``.

    Returns
    -------
    GustafsonFit minimising the squared relative errors of the speedups.
    """
    ranks, scaled_speedups = _check_pairs(ranks, scaled_speedups)
    design = ((ranks - 1.0) / scaled_speedups)[:, None]
    target = (ranks - scaled_speedups) / scaled_speedups
    (serial,) = lsq_linear(design, target, bounds=(0.0, 1.0), method="bvls").x
    fitted = GustafsonFit(float(serial), 0.0).speedup(ranks)
    return GustafsonFit(float(serial), _worst(fitted, scaled_speedups))


def karp_flatt(ranks, speedups) -> np.ndarray:
    """The experimentally determined serial fraction ``e = (1/S - 1/p) / (1 - 1/p)``.

    Parameters
    ----------
    ranks : (n,) rank counts p (in units of the baseline).
    speedups : (n,) measured speedups at those rank counts.

    Returns
    -------
    (n,) float array, NaN where p = 1 (undefined). A serial fraction that grows with p
    points to overhead (communication, imbalance) rather than to serial code.
    """
    ranks = np.asarray(ranks, dtype=float)
    speedups = np.asarray(speedups, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        serial = (1.0 / speedups - 1.0 / ranks) / (1.0 - 1.0 / ranks)
    return np.where(ranks > 1, serial, np.nan)


def _worst(fitted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.max(np.abs(fitted - measured) / measured))


def _check_pairs(ranks, values) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.asarray(ranks, dtype=float)
    values = np.asarray(values, dtype=float)
    if ranks.shape != values.shape or ranks.ndim != 1:
        raise ValueError(f"ranks {ranks.shape} and values {values.shape} must be equal 1-D")
    if len(np.unique(ranks)) < 2:
        raise ValueError("a scaling fit needs at least two distinct rank counts")
    if np.any(values <= 0) or not np.all(np.isfinite(values)):
        raise ValueError("a scaling fit needs positive, finite times or speedups")
    return ranks, values
