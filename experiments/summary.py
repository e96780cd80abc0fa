"""Per-point medians and spread, speedup, efficiency and the scaling-law fit of a study.

A point is one (strategy, model, backend, ranks) of a study; its repeats are summarised
by the median and the min-max range. With T the per-epoch time and P0 the series'
smallest rank count (its baseline, assumed to scale perfectly from one rank):

- strong scaling: speedup ``S = P0 T(P0) / T(P)``;
- weak scaling: scaled speedup ``S = P T(P0) / T(P)``;
- efficiency ``S / P``; Karp-Flatt serial fraction from S (:func:`experiments.fits.karp_flatt`);
- speedup range: S computed from the slowest and the fastest repeat.

Each series gets an Amdahl fit (strong) or a Gustafson fit (weak) of the medians when it
has at least two rank counts.
"""

from __future__ import annotations

import numpy as np

from experiments.fits import fit_amdahl, fit_gustafson, karp_flatt

SUMMARY_FIELDS = (
    "strategy",
    "model",
    "backend",
    "ranks",
    "repeats",
    "rows_per_rank",
    "time_median_s",
    "time_min_s",
    "time_max_s",
    "speedup",
    "speedup_min",
    "speedup_max",
    "efficiency",
    "karp_flatt",
    "compute_s",
    "comm_s",
    "io_s",
    "eval_s",
    "other_s",
    "samples_per_s",
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
    by series and ranks) and ``series`` (per series: names, baseline ranks, fit).
    """
    done = [p for p in points if p.get("status") == "completed" and "time_s" in p]
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
    return {"mode": mode, "fields": list(SUMMARY_FIELDS), "rows": rows, "series": series}


def series_key(row: dict) -> tuple[str, str, str]:
    """(strategy, model, backend) of a points or summary row."""
    return row["strategy"], row["model"], row["backend"]


def _point_stats(repeats: list[dict]) -> dict:
    times = np.array([p["time_s"] for p in repeats])
    stats = {
        "repeats": len(repeats),
        "rows_per_rank": repeats[0].get("rows_per_rank"),
        "time_median_s": float(np.median(times)),
        "time_min_s": float(times.min()),
        "time_max_s": float(times.max()),
        "samples_per_s": float(np.median([p["samples_per_s"] for p in repeats])),
    }
    for key in BREAKDOWN:
        stats[key] = float(np.median([p[key] for p in repeats]))
    return stats


def _add_speedups(stats: list[dict], ranks: list[int], mode: str) -> None:
    """Speedup, its range, efficiency and Karp-Flatt of each point, in place."""
    base_ranks, base_time = ranks[0], stats[0]["time_median_s"]
    for r, row in zip(ranks, stats, strict=True):
        work = r if mode == "weak" else base_ranks
        for key, time_key in (
            ("speedup", "time_median_s"),
            ("speedup_min", "time_max_s"),
            ("speedup_max", "time_min_s"),
        ):
            row[key] = work * base_time / row[time_key]
        row["efficiency"] = row["speedup"] / r
        row["karp_flatt"] = float(karp_flatt([r], [row["speedup"]])[0])


def _fit(ranks: list[int], stats: list[dict], mode: str) -> dict | None:
    if len(ranks) < 2:
        return None
    if mode == "strong":
        amdahl = fit_amdahl(ranks, [row["time_median_s"] for row in stats])
        return {"law": "amdahl", "serial_fraction": amdahl.serial_fraction, "t1_s": amdahl.t1_s}
    gustafson = fit_gustafson(ranks, [row["speedup"] for row in stats])
    return {"law": "gustafson", "serial_fraction": gustafson.serial_fraction}
