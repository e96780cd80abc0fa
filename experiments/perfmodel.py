"""A latency-bandwidth (alpha-beta) model of data-parallel training, fitted to measurements.

Usage (from the repository root)::

    python -m experiments.perfmodel results/STUDY --commbench results/commbench/p2.csv ...
        [--max-ranks 4096] [--model logreg --backend numba]
        [--total-rows N] [--rows-per-rank N]

It fits the model to a study's ``points.csv`` and any number of ``commbench`` CSVs (more
rank counts pin the P-dependence better), predicts the time per epoch of every strategy
in :data:`STRATEGY_COSTS` for strong and weak scaling up to ``--max-ranks``, and writes
``model.json`` (fitted parameters, the rank counts the fit rests on, the residuals at
the fitted points and the held-out validation), ``model.csv`` (the curves, each row
marked ``extrapolated`` outside the fitted rank counts) and the ``model_speedup`` /
``model_time`` figures (:mod:`experiments.perfmodel_figures`) into the study directory.

The model
---------
Collectives, fitted by weighted least squares (relative error, non-negative) over every
measured rank count P and message size m (bytes), each with the shape of the algorithm
MPI libraries use for it::

    op         t(P, m) = alpha A(P) + beta B(P) m     A(P)          B(P)
    allreduce  recursive doubling + Rabenseifner       ceil(log2 P)  2 (P - 1) / P
    reduce     binomial tree                           ceil(log2 P)  ceil(log2 P)
    bcast      binomial tree                           ceil(log2 P)  ceil(log2 P)
    sendrecv   one message (ping-pong, one way)        1             1

The formula and its fit live in :mod:`mpigd.alphabeta`, shared with ``--exchange auto``.
An epoch on P ranks with ``n`` rows per rank and ``s`` steps costs::

    T(P) = c n + s t_strategy(P) + r0 + r1 log2 P

with ``c`` the compute seconds per row and epoch (fitted through the origin to the
busiest rank's ``compute_s_max``, or ``compute_s`` in records without it),
``t_strategy`` below, and ``r0 + r1 log2 P`` (``r1 >= 0``) the rest: Python between
phases, synchronisation and imbalance, fitted to what the other terms leave of the
measured ``time_s``. Per step, with ``g = 8 n_params`` bytes of gradient:

- ``allreduce``: every rank computes on N / P rows; one Allreduce of ``g + 16`` bytes
  (gradient, loss, rows).
- ``ps-sync``: rank 0 is the parameter server and holds no rows; the P - 1 workers
  compute on N / (P - 1) rows each; one Reduce to rank 0 and one Bcast back, each of
  ``g + 24`` bytes, as binomial trees inside MPI. The root is the bottleneck twice:
  its link carries ``ceil(log2 P)`` full gradients in and parameter vectors out (where
  the Allreduce moves ``2 (P - 1) / P`` of one per rank), and it computes nothing.
- ``ps-async``: the same split of rows, but workers push gradients and pull parameters
  with point-to-point messages, each at its own pace; the root serves the messages one
  at a time, so a round of P - 1 worker steps takes the longer of one worker's step
  ``c n_w / s + 2 (alpha_s + beta_s g)`` and the root's ``2 (P - 1)(alpha_s + beta_s g)``
  (sendrecv alpha-beta): a bottleneck linear in P.

Both parameter-server strategies need P >= 2 and are modelled without
``--server-computes`` (the default); the server's own update time is left out (it is
O(n_params) per step, small beside a gradient over the rows).

The speedup baseline of every strategy is the model's one-rank time without
communication, ``c N + r0``.

Validation
----------
How close the model comes to the points it was fitted to says little: with two rank
counts the overhead ``r0 + r1 log2 P`` alone can pass through both. The model is
validated by leaving one rank count out (:func:`held_out_checks`): fit on the study's
other rank counts (and the commbench rows of other rank counts, where every collective
keeps some), predict the held-out one, and record the relative error of each strategy
there. That needs at least :data:`MIN_RANK_COUNTS` rank counts; with fewer,
``model.json`` and the report say that no held-out validation is possible. Predictions
outside the study's smallest to largest rank count are extrapolations, and are marked so
in ``model.csv``, the report and the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from experiments.perfmodel_figures import plot_model
from experiments.scaling import read_csv, write_csv
from mpigd.alphabeta import AlphaBeta, fit_alpha_beta

#: Fewest rank counts a study needs for leave-one-out validation: the fit needs two.
MIN_RANK_COUNTS = 3
COLLECTIVES = ("allreduce", "reduce", "bcast", "sendrecv")


@dataclass(frozen=True)
class EpochModel:
    """Everything the prediction needs; see the module docstring for the formula."""

    collectives: dict  # op -> AlphaBeta
    compute_s_per_row: float
    overhead_s: float  # r0
    overhead_log2_s: float  # r1
    n_params: int
    steps: float


def fit_collectives(rows: list[dict]) -> dict[str, AlphaBeta]:
    """Alpha and beta of every op in :data:`COLLECTIVES` from commbench rows.

    Parameters
    ----------
    rows : dicts with ``op``, ``ranks``, ``bytes``, ``avg_us`` (as in the commbench CSV).

    Minimises the squared relative error with alpha, beta >= 0, so that small messages
    pin the latency and large ones the bandwidth.
    """
    fits = {}
    for op in COLLECTIVES:
        mine = [r for r in rows if r["op"] == op and int(r["ranks"]) > 1]
        if not mine:
            raise ValueError(f"no commbench rows for {op} on 2 or more ranks")
        fits[op] = fit_alpha_beta(op, [float(r["ranks"]) for r in mine],
                                  [float(r["bytes"]) for r in mine],
                                  [float(r["avg_us"]) * 1e-6 for r in mine])  # fmt: skip
    return fits


def comm_per_step(strategy: str, collectives: dict, ranks, n_params: int) -> np.ndarray:
    """Communication seconds per step of ``strategy`` (ps-async: the root's per round)."""
    ranks = np.asarray(ranks, dtype=float)
    gradient = 8.0 * n_params
    if strategy == "allreduce":
        return collectives["allreduce"].time("allreduce", ranks, gradient + 16.0)
    if strategy == "ps-sync":
        reduce, bcast = collectives["reduce"], collectives["bcast"]
        return reduce.time("reduce", ranks, gradient + 24.0) + bcast.time(
            "bcast", ranks, gradient + 24.0
        )
    if strategy == "ps-async":
        return 2.0 * (ranks - 1.0) * collectives["sendrecv"].message(gradient)
    raise KeyError(strategy)


#: Strategies the model can predict; any other name in a study is left out of the fit.
STRATEGY_COSTS = ("allreduce", "ps-sync", "ps-async")
#: Strategies whose rank 0 serves and holds no rows.
SERVER_STRATEGIES = ("ps-sync", "ps-async")


def predict(model: EpochModel, strategy: str, ranks, rows_per_rank) -> dict[str, np.ndarray]:
    """Predicted seconds per epoch and its parts at each rank count.

    Parameters
    ----------
    ranks : (k,) rank counts.
    rows_per_rank : scalar or (k,) training rows per rank, N / P (the parameter-server
        strategies spread the same N rows over P - 1 workers).

    Returns
    -------
    dict of (k,) arrays ``time_s``, ``compute_s`` (of one computing rank), ``comm_s``
    (including waiting for the server) and ``overhead_s``; NaN where the strategy is
    undefined (parameter server on one rank).
    """
    ranks = np.asarray(ranks, dtype=float)
    rows = np.broadcast_to(np.asarray(rows_per_rank, dtype=float), ranks.shape)
    overhead = model.overhead_s + model.overhead_log2_s * np.log2(ranks)
    comm = model.steps * comm_per_step(strategy, model.collectives, ranks, model.n_params)
    if strategy not in SERVER_STRATEGIES:
        compute = model.compute_s_per_row * rows
        return _parts(overhead + compute + comm, compute, comm, overhead)
    workers = np.where(ranks > 1, ranks - 1.0, np.nan)
    compute = model.compute_s_per_row * rows * ranks / workers
    if strategy == "ps-sync":
        return _parts(overhead + compute + comm, compute, comm, overhead)
    # ps-async: a worker's own messages per epoch are comm / (P - 1); the root's, comm.
    busy = np.maximum(compute + comm / workers, comm)
    return _parts(overhead + busy, compute, busy - compute, overhead)


def _parts(time_s, compute_s, comm_s, overhead_s) -> dict[str, np.ndarray]:
    return {"time_s": time_s, "compute_s": compute_s, "comm_s": comm_s, "overhead_s": overhead_s}


def compute_rows(strategy: str, ranks: float, rows: float) -> float:
    """Rows one computing rank holds: ``rows / P``, or ``rows / (P - 1)`` with a server."""
    return rows / (ranks - 1) if strategy in SERVER_STRATEGIES and ranks > 1 else rows / ranks


def fit_epoch_model(points: list[dict], collectives: dict[str, AlphaBeta]) -> EpochModel:
    """Fit compute cost and overhead to a study's points (one model and backend).

    Parameters
    ----------
    points : completed points.csv rows (numbers as numbers) whose strategy is in
        :data:`STRATEGY_COSTS`; fitted on the median over repeats of each point.
    collectives : from :func:`fit_collectives`.
    """
    medians = _medians(points)
    rows = np.array([compute_rows(s, p, m["rows"]) for (s, p), m in medians.items()])
    compute = np.array([m["compute_s_max"] for m in medians.values()])
    model = EpochModel(
        collectives=collectives,
        compute_s_per_row=float(np.dot(compute, rows) / np.dot(rows, rows)),
        overhead_s=0.0,
        overhead_log2_s=0.0,
        n_params=int(points[0]["n_params"]),
        steps=float(np.median([p["steps_per_epoch"] for p in points])),
    )
    residual, log_ranks = [], []
    for (strategy, ranks), m in medians.items():
        modelled = predict(model, strategy, [ranks], m["rows"] / ranks)["time_s"][0]
        residual.append(m["time_s"] - modelled)
        log_ranks.append(np.log2(ranks))
    design = np.column_stack([np.ones(len(log_ranks)), log_ranks])
    (r0, r1), _ = nnls(design, np.array(residual))
    return replace(model, overhead_s=float(r0), overhead_log2_s=float(r1))


def _medians(points: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (strategy, ranks), medians over the repeats of ``rows``, ``time_s`` and the
    busiest rank's compute time ``compute_s_max`` (``compute_s`` in records without it)."""
    medians = {}
    for key in sorted({(p["strategy"], p["ranks"]) for p in points}):
        repeats = [p for p in points if (p["strategy"], p["ranks"]) == key]
        busiest = [p.get("compute_s_max") or p["compute_s"] for p in repeats]
        medians[key] = {
            "rows": float(np.median([p["rows"] for p in repeats])),
            "time_s": float(np.median([p["time_s"] for p in repeats])),
            "compute_s_max": float(np.median(busiest)),
        }
    return medians


def fit_residuals(model: EpochModel, points: list[dict]) -> list[dict]:
    """Each measured (strategy, ranks) median of ``points`` beside the model's prediction.

    Returns dicts with ``strategy``, ``ranks``, ``rows`` (median total rows),
    ``measured_s``, ``predicted_s`` (seconds per epoch) and ``relative_error``
    (predicted / measured - 1). On the points the model was fitted to these are
    residuals, not a validation: see :func:`held_out_checks`.
    """
    checks = []
    for (strategy, ranks), m in _medians(points).items():
        predicted = float(predict(model, strategy, [ranks], m["rows"] / ranks)["time_s"][0])
        checks.append(
            {
                "strategy": strategy,
                "ranks": ranks,
                "rows": m["rows"],
                "measured_s": m["time_s"],
                "predicted_s": predicted,
                "relative_error": predicted / m["time_s"] - 1.0,
            }
        )
    return checks


def held_out_checks(points: list[dict], bench_rows: list[dict]) -> list[dict]:
    """Leave-one-rank-count-out validation of the whole fit.

    For each rank count P of ``points``: fit the collectives and the epoch model without
    P (commbench rows at P are dropped too, unless some collective would have no rows
    left), predict every strategy measured at P, and compare with its median.

    Parameters
    ----------
    points : completed points.csv rows, as for :func:`fit_epoch_model`.
    bench_rows : commbench CSV rows, as for :func:`fit_collectives`.

    Returns
    -------
    The :func:`fit_residuals` dicts of the held-out points, each with ``fitted_ranks``
    (the study's rank counts that fit used), ``commbench_ranks`` (the commbench's) and
    ``beyond_fitted`` (P outside the fitted ones: an extrapolation). Empty when
    ``points`` has fewer than :data:`MIN_RANK_COUNTS` rank counts.
    """
    ranks = sorted({p["ranks"] for p in points})
    if len(ranks) < MIN_RANK_COUNTS:
        return []
    checks = []
    for held in ranks:
        kept = [p for p in points if p["ranks"] != held]
        bench = _bench_without(bench_rows, held)
        model = fit_epoch_model(kept, fit_collectives(bench))
        fitted = sorted({p["ranks"] for p in kept})
        for check in fit_residuals(model, [p for p in points if p["ranks"] == held]):
            check["fitted_ranks"] = fitted
            check["commbench_ranks"] = sorted({int(r["ranks"]) for r in bench})
            check["beyond_fitted"] = not fitted[0] <= held <= fitted[-1]
            checks.append(check)
    return checks


def validation_summary(held_out: list[dict], fitted_ranks: list[int]) -> str:
    """One sentence for the report and the figures: the largest held-out error, or why
    there is no held-out validation."""
    if not held_out:
        return (
            f"No held-out validation possible: the fit rests on {len(fitted_ranks)} rank "
            f"count(s) ({_rank_list(fitted_ranks)}); leaving one out needs at least "
            f"{MIN_RANK_COUNTS}."
        )
    worst = max(held_out, key=lambda c: abs(c["relative_error"]))
    each = ", ".join(
        f"{c['strategy']} P={c['ranks']} {100 * c['relative_error']:+.1f}%" for c in held_out
    )
    largest = f"{100 * abs(worst['relative_error']):.1f}% ({worst['strategy']} P={worst['ranks']})"
    return f"Held-out validation (fit without that P, then predict it): {each}; largest {largest}."


def _bench_without(bench_rows: list[dict], ranks: int) -> list[dict]:
    """``bench_rows`` without those at ``ranks``, or all of them if a collective would
    then have no rows on 2 or more ranks."""
    kept = [r for r in bench_rows if int(r["ranks"]) != ranks]
    covered = {r["op"] for r in kept if int(r["ranks"]) > 1}
    return kept if covered >= set(COLLECTIVES) else bench_rows


def baseline_s(model: EpochModel, rows: float) -> float:
    """The speedup baseline: one rank on ``rows`` rows without communication, c rows + r0."""
    return model.compute_s_per_row * rows + model.overhead_s


def curves(
    model: EpochModel, ranks, total_rows: float, rows_per_rank: float, fitted_ranks
) -> list[dict]:
    """model.csv rows: every strategy, strong (``total_rows``) and weak (``rows_per_rank``).

    Each row is marked ``extrapolated`` when its rank count lies outside the smallest to
    largest of ``fitted_ranks`` (the study's rank counts the model was fitted to).
    """
    ranks = np.asarray(ranks, dtype=float)
    table = []
    for mode, rows in (("strong", total_rows / ranks), ("weak", rows_per_rank)):
        serial = baseline_s(model, total_rows if mode == "strong" else rows_per_rank)
        for strategy in STRATEGY_COSTS:
            parts = predict(model, strategy, ranks, rows)
            speedup = (1.0 if mode == "strong" else ranks) * serial / parts["time_s"]
            for i, p in enumerate(ranks):
                row = {"mode": mode, "strategy": strategy, "ranks": int(p)}
                row["rows_per_rank"] = float(np.broadcast_to(rows, ranks.shape)[i])
                row.update({key: float(value[i]) for key, value in parts.items()})
                row.update(speedup=float(speedup[i]), efficiency=float(speedup[i] / p))
                row["extrapolated"] = not min(fitted_ranks) <= p <= max(fitted_ranks)
                table.append(row)
    return table


def half_efficiency_ranks(table: list[dict]) -> dict[str, dict[str, int | None]]:
    """Per mode and strategy, the smallest rank count whose efficiency is below 0.5."""
    found: dict[str, dict[str, int | None]] = {}
    for row in table:
        slot = found.setdefault(row["mode"], {}).setdefault(row["strategy"], None)
        if slot is None and row["efficiency"] < 0.5:
            found[row["mode"]][row["strategy"]] = row["ranks"]
    return found


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path, help="a study's results (holds points.csv)")
    parser.add_argument("--commbench", type=Path, nargs="+", required=True, help="CSV files")
    parser.add_argument("--max-ranks", type=int, default=4096)
    parser.add_argument("--model", help="model of the points to fit (default: the first)")
    parser.add_argument("--backend", help="backend of the points to fit (default: the first)")
    parser.add_argument("--total-rows", type=float, help="strong scaling N (default: largest)")
    parser.add_argument("--rows-per-rank", type=float, help="weak scaling rows (default: median)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Fit, predict, and write model.json, model.csv and the figures into the study dir."""
    args = parse_args(argv)
    missing = [str(f) for f in (args.study_dir / "points.csv", *args.commbench) if not f.is_file()]
    if missing:
        print(f"perfmodel: error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    points = [p for p in read_csv(args.study_dir / "points.csv") if p["status"] == "completed"]
    if not points:
        print(f"perfmodel: error: no completed runs in {args.study_dir}", file=sys.stderr)
        return 2
    model_name, backend = args.model or points[0]["model"], args.backend or points[0]["backend"]
    chosen = [
        p
        for p in points
        if (p["model"], p["backend"]) == (model_name, backend) and p["strategy"] in STRATEGY_COSTS
    ]
    if not chosen:
        print(
            f"perfmodel: error: no {model_name}/{backend} runs of a modelled strategy",
            file=sys.stderr,
        )
        return 2
    unmodelled = sorted({p["strategy"] for p in points} - set(STRATEGY_COSTS))
    if unmodelled:
        print(f"perfmodel: not modelled, left out: {', '.join(unmodelled)}")
    crowded = [p for p in chosen if p.get("oversubscribed")]
    chosen = [p for p in chosen if not p.get("oversubscribed")]
    if crowded:
        left_out = _rank_list(sorted({p["ranks"] for p in crowded}))
        print(f"perfmodel: left out of the fit, oversubscribed (more ranks per node than "
              f"cores: they measure time-slicing): P = {left_out}")  # fmt: skip
    if not chosen:
        print("perfmodel: error: every run oversubscribed its node's cores; nothing to fit",
              file=sys.stderr)  # fmt: skip
        return 2
    bench_rows = [row for path in args.commbench for row in read_csv(path)]
    collectives = fit_collectives(bench_rows)
    model = fit_epoch_model(chosen, collectives)
    fitted_ranks = sorted({p["ranks"] for p in chosen})
    ranks = {2**k for k in range(int(np.log2(args.max_ranks)) + 1)} | set(fitted_ranks)
    total_rows = args.total_rows or max(p["rows"] for p in chosen)
    rows_per_rank = args.rows_per_rank or float(np.median([p["rows_per_rank"] for p in chosen]))
    table = curves(model, sorted(ranks), total_rows, rows_per_rank, fitted_ranks)
    held_out = held_out_checks(chosen, bench_rows)
    residuals = fit_residuals(model, chosen)
    worst = max(abs(check["relative_error"]) for check in residuals)
    record = {
        "study": str(args.study_dir),
        "mode": chosen[0]["mode"],
        "model": model_name,
        "backend": backend,
        "commbench": [str(path) for path in args.commbench],
        "commbench_ranks": sorted({int(r["ranks"]) for r in bench_rows}),
        "collectives": {op: asdict(fit) for op, fit in collectives.items()},
        **{key: value for key, value in asdict(model).items() if key != "collectives"},
        "total_rows": total_rows,
        "rows_per_rank": rows_per_rank,
        "baseline_s": {
            "strong": baseline_s(model, total_rows),
            "weak": baseline_s(model, rows_per_rank),
        },
        "fitted_ranks": fitted_ranks,
        "fit_residuals": residuals,
        "worst_residual": worst,
        "fits": worst <= MAX_RESIDUAL,
        "oversubscribed": fit_residuals(model, crowded),
        "held_out": held_out,
        "validation": validation_summary(held_out, fitted_ranks),
        "half_efficiency_ranks": half_efficiency_ranks(table),
    }
    out = args.study_dir
    write_csv(table, out / "model.csv", list(table[0]))
    (out / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    figures = plot_model(record, table, out)
    _print_report(record)
    print(f"model: {out / 'model.json'} {out / 'model.csv'}")
    print("figures: " + " ".join(str(path) for path in figures))
    return 0


def _print_report(record: dict) -> None:
    """The fitted parameters, where the fit holds, its validation and the half-efficiency
    points, for people."""
    for op, fit in record["collectives"].items():
        print(
            f"{op:<10} alpha {1e6 * fit['alpha_s']:8.2f} us   "
            f"beta {1e9 * fit['beta_s']:7.3f} ns/byte ({1e-9 / max(fit['beta_s'], 1e-30):.2f} GB/s)"
        )
    print(
        f"compute {1e9 * record['compute_s_per_row']:.1f} ns/row/epoch, overhead "
        f"{1e3 * record['overhead_s']:.3f} ms + {1e3 * record['overhead_log2_s']:.3f} ms log2 P"
    )
    fitted = record["fitted_ranks"]
    print(
        f"the fit rests on P = {_rank_list(fitted)} (commbench: P = "
        f"{_rank_list(record['commbench_ranks'])}); outside P = {fitted[0]}..{fitted[-1]} "
        "every prediction is an extrapolation"
    )
    print("residuals at the fitted points (in-sample, not a validation):")
    for check in record["fit_residuals"]:
        print(f"  {_versus(check)}")
    if not record["fits"]:
        print(f"WARNING: the model misses the very points it was fitted to by up to "
              f"{100 * record['worst_residual']:.0f}% (more than {100 * MAX_RESIDUAL:.0f}%): "
              "it does not describe these runs; do not trust its predictions")  # fmt: skip
    for check in record["oversubscribed"]:
        print(f"  oversubscribed, not fitted: {_versus(check)}")
    if record["held_out"]:
        print("held-out validation (fit without that P, then predict it):")
        for check in record["held_out"]:
            kind = "extrapolation" if check["beyond_fitted"] else "interpolation"
            print(f"  {_versus(check)} from P = {_rank_list(check['fitted_ranks'])}, {kind}")
    print(record["validation"])
    for mode, by_strategy in record["half_efficiency_ranks"].items():
        for strategy, ranks in by_strategy.items():
            where = f"below 50% from P={ranks}" if ranks else "above 50% throughout"
            beyond = ranks is not None and not fitted[0] <= ranks <= fitted[-1]
            print(f"{mode} {strategy}: efficiency {where}{' (extrapolated)' if beyond else ''}")


#: The largest in-sample relative residual of a model that describes its runs; beyond it
#: the report and the figures say the model does not fit.
MAX_RESIDUAL = 0.25


def _versus(check: dict) -> str:
    return (
        f"{check['strategy']} P={check['ranks']}: measured {1e3 * check['measured_s']:.3f} ms, "
        f"model {1e3 * check['predicted_s']:.3f} ms ({100 * check['relative_error']:+.1f}%)"
    )


def _rank_list(ranks) -> str:
    return ", ".join(str(r) for r in ranks)


if __name__ == "__main__":
    sys.exit(main())
