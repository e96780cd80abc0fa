"""Per-point medians and spread, speedup, efficiency and the scaling-law fit of a study.

A point is one (strategy, model, backend, ranks) of a study; its repeats are summarised
by the median and the min-max range. With T the per-epoch time and P0 the series'
smallest rank count (its baseline), ranks count in units of the baseline, ``p = P / P0``
(with P0 = 1 these are the textbook definitions):

- strong scaling: speedup ``S = T(P0) / T(P)``, ideal ``p``;
- weak scaling: scaled speedup ``S = p T(P0) / T(P)``, ideal ``p``;
- efficiency ``E = S / p``, ideal 1; Karp-Flatt serial fraction from S and p
  (:func:`experiments.fits.karp_flatt`): the serial fraction of the P0-rank run;
- ranges (``*_min``, ``*_max``): S and E computed from the slowest and the fastest
  repeat (the baseline at its median).

Each series is measured against its own baseline: its speedup says how that series
scales, not how fast it is. ``common_baseline`` puts every series on one: the fastest
series' median time at the smallest rank count any series measured, from which the
time-per-epoch figure draws the ideal ``T(P0) P0 / P`` (strong) or ``T(P0)`` (weak).

Each series gets an Amdahl fit of its median times (strong) or a Gustafson fit of its
speedups (weak), inside the laws' domain (:mod:`experiments.fits`), over the rank counts
that were not oversubscribed (``fitted_ranks``; time-slicing is no part of either law),
when there are at least three (:data:`MIN_FIT_RANKS`); ``fits`` says whether the law
describes the data.

A point is ``oversubscribed`` when any of its repeats was, and ``loaded_repeats`` counts
the repeats that started on a loaded machine (:mod:`experiments.contention`); both are
None when no repeat recorded them.
"""

from __future__ import annotations

import numpy as np

from experiments.fits import fit_amdahl, fit_gustafson, karp_flatt

SUMMARY_FIELDS = (
    "strategy",
    "model",
    "backend",
    "ranks",
    "baseline_ranks",
    "repeats",
    "rows_per_rank",
    "time_median_s",
    "time_min_s",
    "time_max_s",
    "speedup",
    "speedup_min",
    "speedup_max",
    "efficiency",
    "efficiency_min",
    "efficiency_max",
    "karp_flatt",
    "compute_s",
    "comm_s",
    "io_s",
    "eval_s",
    "other_s",
    "samples_per_s",
    "cores",
    "ranks_per_node",
    "oversubscribed",
    "loaded_repeats",
)
BREAKDOWN = ("compute_s", "comm_s", "io_s", "eval_s", "other_s")


def summarize(points: list[dict], mode: str) -> dict:
    """Summarise the completed points of a study.

    Parameters
    ----------
    points : points.csv rows (dicts) as the harness builds them.
    mode : ``strong`` or ``weak``.

    Returns
    -------
    dict with ``mode``, ``fields`` (summary.csv columns), ``rows`` (one per point, sorted
    by series and ranks), ``series`` (per series: names, baseline ranks, fit) and
    ``common_baseline`` (``ranks``, ``time_s`` and the series' names; None without rows).
    """
    done = [p for p in points if p.get("status") == "completed" and p.get("time_s")]
    rows, series = [], []
    for strategy, model, backend in sorted({series_key(p) for p in done}):
        mine = [p for p in done if series_key(p) == (strategy, model, backend)]
        ranks = sorted({p["ranks"] for p in mine})
        stats = [_point_stats([p for p in mine if p["ranks"] == r]) for r in ranks]
        _add_speedups(stats, ranks, mode)
        for r, row in zip(ranks, stats, strict=True):
            rows.append(dict(strategy=strategy, model=model, backend=backend, ranks=r, **row))
        series.append(
            {
                "strategy": strategy,
                "model": model,
                "backend": backend,
                "baseline_ranks": ranks[0],
                "fit": _fit(ranks, stats, mode),
            }
        )
    return {
        "mode": mode,
        "fields": list(SUMMARY_FIELDS),
        "rows": rows,
        "series": series,
        "common_baseline": common_baseline(rows),
    }


def series_key(row: dict) -> tuple[str, str, str]:
    """(strategy, model, backend) of a points or summary row."""
    return row["strategy"], row["model"], row["backend"]


def common_baseline(rows: list[dict]) -> dict | None:
    """The fastest series at the smallest rank count measured: one baseline for all."""
    if not rows:
        return None
    least = min(r["ranks"] for r in rows)
    best = min((r for r in rows if r["ranks"] == least), key=lambda r: r["time_median_s"])
    return {
        "ranks": least,
        "time_s": best["time_median_s"],
        **dict(zip(("strategy", "model", "backend"), series_key(best), strict=True)),
    }


def _point_stats(repeats: list[dict]) -> dict:
    times = np.array([p["time_s"] for p in repeats])
    per_node = [p["ranks_per_node"] for p in repeats if p.get("ranks_per_node")]
    stats = {
        "repeats": len(repeats),
        "rows_per_rank": repeats[0].get("rows_per_rank"),
        "time_median_s": float(np.median(times)),
        "time_min_s": float(times.min()),
        "time_max_s": float(times.max()),
        "samples_per_s": float(np.median([p["samples_per_s"] for p in repeats])),
        "cores": repeats[0].get("cores"),
        "ranks_per_node": max(per_node) if per_node else None,
    }
    for key in BREAKDOWN:
        stats[key] = float(np.median([p[key] for p in repeats]))
    crowded = [p["oversubscribed"] for p in repeats if p.get("oversubscribed") is not None]
    stats["oversubscribed"] = any(crowded) if crowded else None
    loaded = [p["loaded"] for p in repeats if p.get("loaded") is not None]
    stats["loaded_repeats"] = sum(loaded) if loaded else None
    return stats


def _add_speedups(stats: list[dict], ranks: list[int], mode: str) -> None:
    """Baseline, speedup and efficiency with their ranges, and Karp-Flatt, in place."""
    base_ranks, base_time = ranks[0], stats[0]["time_median_s"]
    for r, row in zip(ranks, stats, strict=True):
        units = r / base_ranks
        work = units if mode == "weak" else 1.0
        row["baseline_ranks"] = base_ranks
        for suffix, time_key in (
            ("", "time_median_s"),
            ("_min", "time_max_s"),
            ("_max", "time_min_s"),
        ):
            row["speedup" + suffix] = work * base_time / row[time_key]
            row["efficiency" + suffix] = row["speedup" + suffix] / units
        row["karp_flatt"] = float(karp_flatt([units], [row["speedup"]])[0])


#: The fewest rank counts without oversubscription a scaling-law fit rests on: a law
#: through the baseline and one more point passes through both whatever the code does
#: (Amdahl's two parameters, t1 and f, fit any two times exactly), so it says nothing.
MIN_FIT_RANKS = 3


def _fit(ranks: list[int], stats: list[dict], mode: str) -> dict | None:
    """The series' scaling-law fit over its rank counts that were not oversubscribed.

    None with fewer than two rank counts in all; ``fits`` False and no serial fraction
    when fewer than :data:`MIN_FIT_RANKS` were clean.
    """
    if len(ranks) < 2:
        return None
    law = "amdahl" if mode == "strong" else "gustafson"
    clean = [(r, row) for r, row in zip(ranks, stats, strict=True) if not row["oversubscribed"]]
    fitted_ranks = [r for r, _ in clean]
    if len(fitted_ranks) < MIN_FIT_RANKS:
        return {"law": law, "fitted_ranks": fitted_ranks, "serial_fraction": None, "fits": False}
    if law == "amdahl":
        fit = fit_amdahl(fitted_ranks, [row["time_median_s"] for _, row in clean])
        extra = {"t1_s": fit.t1_s}
    else:
        units = np.asarray(fitted_ranks, dtype=float) / ranks[0]
        fit = fit_gustafson(units, [row["speedup"] for _, row in clean])
        extra = {}
    return {
        "law": law,
        "fitted_ranks": fitted_ranks,
        "serial_fraction": fit.serial_fraction,
        **extra,
        "max_relative_error": fit.max_relative_error,
        "fits": fit.fits,
    }
