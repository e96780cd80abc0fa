"""Scaling-law fits recover known parameters, stay in their domain, and say when they miss;
the summary's baselines, spreads and marks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import study_point

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
    assert GustafsonFit(serial_fraction, 0.0).speedup(RANKS) == pytest.approx(scaled)
    assert fit.fits


def test_karp_flatt_of_an_amdahl_speedup_is_its_serial_fraction():
    speedups = AmdahlFit(0.07, 1.0, 0.0).speedup(RANKS)
    serial = karp_flatt(RANKS, speedups)
    assert np.isnan(serial[0])
    assert serial[1:] == pytest.approx(0.07)


def test_amdahl_fit_of_times_that_rise_with_p_stays_in_its_domain_and_says_it_misses():
    # ps-sync-like: each rank count slower than the last. Unbounded, f came out 10.185.
    fit = fit_amdahl([2, 4, 8, 16], [1.0, 1.3, 1.8, 2.5])
    assert 0.0 <= fit.serial_fraction <= 1.0
    assert fit.serial_fraction == pytest.approx(1.0)  # the best the law can do: no speedup
    assert not fit.fits and fit.max_relative_error > 0.4


def test_amdahl_fit_of_superlinear_times_ends_at_zero_serial_fraction():
    fit = fit_amdahl([1, 2, 4, 8], [1.0, 0.4, 0.2, 0.1])
    assert fit.serial_fraction == pytest.approx(0.0, abs=1e-12)
    assert not fit.fits


def test_gustafson_fit_stays_in_its_domain():
    superlinear = fit_gustafson([1, 2, 4], [1.0, 2.4, 5.0])
    assert superlinear.serial_fraction == pytest.approx(0.0, abs=1e-12) and not superlinear.fits
    slower = fit_gustafson([1, 2, 4], [1.0, 0.8, 0.6])  # scaled speedup below 1
    assert slower.serial_fraction == pytest.approx(1.0) and not slower.fits


def test_fits_weigh_relative_errors_alike():
    # One point 5% off at a long time and one 5% off at a short time miss alike.
    times = 2.0 * (0.1 + 0.9 / RANKS)
    times[0] *= 1.05
    times[-1] *= 1.05
    fit = fit_amdahl(RANKS, times)
    assert fit.fits and fit.max_relative_error < 0.05


def test_fits_refuse_a_single_rank_count():
    with pytest.raises(ValueError, match="two distinct"):
        fit_amdahl([2, 2], [1.0, 1.1])


def test_summary_takes_medians_and_spread_and_fits_amdahl():
    f = 0.1
    points = [
        study_point(p, (f + (1 - f) / p) * scale, repeat)
        for p in (1, 2, 4)
        for repeat, scale in enumerate((1.0, 1.2, 0.9))
    ]
    points.append(dict(study_point(8, 0.001), status="failed"))  # failed runs are left out
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
    points = [study_point(p, 1.0 + 0.1 * np.log2(p)) for p in (2, 4, 8)]
    rows = summarize(points, "weak")["rows"]
    assert rows[0]["speedup"] == pytest.approx(1.0)  # baseline P0 = 2 is the unit
    assert rows[2]["efficiency"] == pytest.approx(1.1 / 1.3)
    assert rows[2]["speedup"] == pytest.approx(8 / 2 * 1.1 / 1.3)  # (P/P0) T(P0) / T(P)


def test_efficiency_has_the_spread_of_the_speedup():
    points = [study_point(p, t / p, r) for p in (1, 2, 4) for r, t in enumerate((1.0, 1.2, 0.9))]
    for row in summarize(points, "strong")["rows"]:
        units = row["ranks"] / row["baseline_ranks"]
        assert row["efficiency_min"] == pytest.approx(row["speedup_min"] / units)
        assert row["efficiency_max"] == pytest.approx(row["speedup_max"] / units)
        assert row["efficiency_min"] < row["efficiency"] < row["efficiency_max"]


def test_strong_speedup_is_over_the_series_own_baseline_and_says_which():
    points = [study_point(p, 4.0 / p) for p in (2, 4, 8)]
    rows = summarize(points, "strong")["rows"]
    assert [r["baseline_ranks"] for r in rows] == [2, 2, 2]
    assert [r["speedup"] for r in rows] == pytest.approx([1.0, 2.0, 4.0])  # T(2) / T(P)
    assert [r["efficiency"] for r in rows] == pytest.approx([1.0, 1.0, 1.0])
    assert np.isnan(rows[0]["karp_flatt"]) and rows[2]["karp_flatt"] == pytest.approx(0.0)


def test_common_baseline_is_the_fastest_series_at_the_smallest_rank_count():
    points = [study_point(p, 1.0 / p) for p in (1, 2, 4)]
    points += [study_point(p, 3.0 / (p - 1), strategy="ps-sync") for p in (2, 4)]
    summary = summarize(points, "strong")
    assert summary["common_baseline"] == {
        "ranks": 1,
        "time_s": 1.0,
        "strategy": "allreduce",
        "model": "logreg",
        "backend": "numba",
    }
    ps_sync = [r for r in summary["rows"] if r["strategy"] == "ps-sync"]
    assert ps_sync[0]["baseline_ranks"] == 2 and ps_sync[0]["speedup"] == pytest.approx(1.0)


def test_a_point_is_marked_when_any_of_its_repeats_was():
    points = [
        study_point(1, 1.0, 0, oversubscribed=False, loaded=False, cores=2, ranks_per_node=1),
        study_point(4, 1.0, 0, oversubscribed=True, loaded=False, cores=2, ranks_per_node=4),
        study_point(4, 1.0, 1, oversubscribed=True, loaded=True, cores=2, ranks_per_node=4),
        study_point(8, 1.0, 0),  # an older harness recorded neither
    ]
    rows = summarize(points, "weak")["rows"]
    assert [r["oversubscribed"] for r in rows] == [False, True, None]
    assert [r["loaded_repeats"] for r in rows] == [0, 1, None]
    assert [r["ranks_per_node"] for r in rows] == [1, 4, None]


def test_the_fit_leaves_out_oversubscribed_rank_counts():
    f = 0.1
    points = [study_point(p, f + (1 - f) / p, oversubscribed=False) for p in (1, 2, 4)]
    points.append(study_point(8, 1.0, oversubscribed=True))  # time-slicing: slower than P = 4
    fit = summarize(points, "strong")["series"][0]["fit"]
    assert fit["fitted_ranks"] == [1, 2, 4]
    assert fit["serial_fraction"] == pytest.approx(f) and fit["fits"]


def test_no_fit_when_oversubscription_leaves_one_rank_count():
    points = [study_point(1, 1.0, oversubscribed=False), study_point(4, 0.5, oversubscribed=True)]
    fit = summarize(points, "weak")["series"][0]["fit"]
    assert fit == {"law": "gustafson", "fitted_ranks": [1], "serial_fraction": None, "fits": False}
