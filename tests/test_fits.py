"""Scaling-law fits recover known parameters from synthetic timings."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.fits import AmdahlFit, GustafsonFit, fit_amdahl, fit_gustafson, karp_flatt
from experiments.summary import summarize

RANKS = np.array([1, 2, 4, 8, 16, 32, 64])


@pytest.mark.parametrize("serial_fraction", [0.0, 0.02, 0.1, 0.5])
def test_amdahl_fit_recovers_serial_fraction_and_t1(serial_fraction):
    times = 3.0 * (serial_fraction + (1 - serial_fraction) / RANKS)
    fit = fit_amdahl(RANKS, times)
    assert fit.serial_fraction == pytest.approx(serial_fraction, abs=1e-12)
    assert fit.t1_s == pytest.approx(3.0)
    assert fit.speedup(RANKS) == pytest.approx(times[0] / times)


def test_amdahl_fit_is_robust_to_small_noise():
    rng = np.random.default_rng(0)
    times = 2.0 * (0.05 + 0.95 / RANKS) * (1 + 0.01 * rng.standard_normal(len(RANKS)))
    assert fit_amdahl(RANKS, times).serial_fraction == pytest.approx(0.05, abs=0.01)


@pytest.mark.parametrize("serial_fraction", [0.0, 0.03, 0.3])
def test_gustafson_fit_recovers_serial_fraction(serial_fraction):
    scaled = RANKS - serial_fraction * (RANKS - 1)
    fit = fit_gustafson(RANKS, scaled)
    assert fit.serial_fraction == pytest.approx(serial_fraction, abs=1e-12)
    assert GustafsonFit(serial_fraction).speedup(RANKS) == pytest.approx(scaled)


def test_karp_flatt_of_an_amdahl_speedup_is_its_serial_fraction():
    speedups = AmdahlFit(0.07, 1.0).speedup(RANKS)
    serial = karp_flatt(RANKS, speedups)
    assert np.isnan(serial[0])
    assert serial[1:] == pytest.approx(0.07)


def test_fits_refuse_a_single_rank_count():
    with pytest.raises(ValueError, match="two distinct"):
        fit_amdahl([2, 2], [1.0, 1.1])


def point(ranks, time_s, repeat=0, strategy="allreduce"):
    return {
        "strategy": strategy,
        "model": "logreg",
        "backend": "numba",
        "ranks": ranks,
        "repeat": repeat,
        "status": "completed",
        "rows_per_rank": 1000 / ranks,
        "time_s": time_s,
        "compute_s": 0.8 * time_s,
        "comm_s": 0.1 * time_s,
        "io_s": 0.0,
        "eval_s": 0.0,
        "other_s": 0.1 * time_s,
        "samples_per_s": 1000 / time_s,
    }


def test_summary_takes_medians_and_spread_and_fits_amdahl():
    f = 0.1
    points = [
        point(p, (f + (1 - f) / p) * scale, repeat)
        for p in (1, 2, 4)
        for repeat, scale in enumerate((1.0, 1.2, 0.9))
    ]
    points.append(dict(point(8, 0.001), status="failed"))  # failed runs are left out
    summary = summarize(points, "strong")
    rows = summary["rows"]
    assert [r["ranks"] for r in rows] == [1, 2, 4]
    assert all(r["repeats"] == 3 for r in rows)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert rows[2]["speedup"] == pytest.approx(1 / (f + (1 - f) / 4))
    assert rows[2]["time_min_s"] == pytest.approx(0.9 * (f + (1 - f) / 4))
    assert rows[2]["speedup_min"] < rows[2]["speedup"] < rows[2]["speedup_max"]
    assert rows[2]["karp_flatt"] == pytest.approx(f)
    assert summary["series"][0]["fit"]["serial_fraction"] == pytest.approx(f)


def test_weak_summary_uses_the_scaled_speedup():
    points = [point(p, 1.0 + 0.1 * np.log2(p)) for p in (2, 4, 8)]
    rows = summarize(points, "weak")["rows"]
    assert rows[0]["speedup"] == pytest.approx(2.0)  # baseline P0 = 2, assumed ideal
    assert rows[2]["efficiency"] == pytest.approx(1.1 / 1.3)
    assert rows[2]["speedup"] == pytest.approx(8 * 1.1 / 1.3)
