"""Benchmark the training strategies against each other on one logistic regression.

On one synthetic binary problem (400,000 training rows x 100 float64 features, created once
and cached under ``build/bench/``) it trains ``logreg`` with mini-batch SGD under
``mpirun -n P`` for each P in ``--procs`` and each configuration: ``allreduce``,
``ps-sync``, ``ps-async`` with ``--max-staleness`` 0, 2 and unbounded, and ``local-sgd``
with ``--sync-every`` 1 and 8, ``--repeats`` times (repeats outermost, so that drifts of
the machine spread over all configurations). Each run keeps its record in
``build/bench/strategies/<config>-P<P>/r<repeat>/``; everything reported is read from its
``run.json`` and ``metrics.jsonl``, never from console output. Per configuration:

- time per epoch (``time_s``): median over the epochs of all repeats, with quartiles, min
  and max;
- its split, medians over those epochs: ``compute_s``, ``comm_s``, ``eval_s`` (test
  evaluation) and other = time_s - compute_s - comm_s - io_s - eval_s (Python overhead and
  waiting outside MPI). ``compute_s`` and ``comm_s`` are each the maximum over ranks, and
  ``comm_s`` includes waiting inside MPI for slower ranks; when the slowest computing rank
  and the longest waiting rank differ (a server waits while its workers compute) the two
  overlap in time and other comes out negative;
- updates per second: optimiser steps applied per second of epoch time (median over the
  epochs): ``steps`` (per epoch, the same on every rank) for the synchronous strategies and
  local SGD, workers x ``steps`` for ``ps-async``, whose server applies every worker's
  gradient;
- time to target: cumulative ``time_s`` until ``train_loss`` <= the target (median over
  the repeats), which is the loss ``allreduce`` reaches after epoch ``TARGET_EPOCH`` with
  the smallest P in the first repeat of the same invocation, plus ``TARGET_SLACK``
  (relative); data loading and start-up are not counted;
- for ``ps-async``, the staleness mean and max over all updates.

It prints one table, writes ``results/bench_strategies.csv`` and ``.json``, and one figure
``results/bench_strategies.png`` (and ``.pdf``). One MPI rank is one core (BLAS and Numba
are limited to one thread); a P larger than the core count is oversubscribed, and the
output says so.

Usage::

    python experiments/bench_strategies.py [--procs 2 4] [--rows N] [--batch-size B]
        [--epochs E] [--repeats R] [--lr F] [--quick] [--out PREFIX]
"""

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script, too
from experiments.launch import flags, mpirun, one_thread_env, synthetic_dataset  # noqa: E402
from mpigd.record import read_run  # noqa: E402

WORK = Path("build/bench")
FEATURES = 100
TEST_FRACTION = 0.1
TARGET_EPOCH = 2
#: The target loss is the reference loss times (1 + TARGET_SLACK): runs on an equivalent
#: trajectory with another mini-batch order then count as reaching it in the same epoch.
TARGET_SLACK = 1e-3
RUN_TIMEOUT_S = 600
#: A negative "other" beyond this share of the epoch time is reported as overlap.
OVERLAP_TOLERANCE = 0.02
#: A 1-minute load average above this before the runs means the machine was not idle.
BUSY_LOAD = 0.5
#: (name, --strategy, extra train flags) of each benchmarked configuration.
CONFIGS = (
    ("allreduce", "allreduce", ()),
    ("ps-sync", "ps-sync", ()),
    ("ps-async-S0", "ps-async", ("--max-staleness", "0")),
    ("ps-async-S2", "ps-async", ("--max-staleness", "2")),
    ("ps-async-Sinf", "ps-async", ()),
    ("local-sgd-H1", "local-sgd", ("--sync-every", "1")),
    ("local-sgd-H8", "local-sgd", ("--sync-every", "8")),
)
#: Parts of an epoch's time, as (CSV column, legend label, colour).
PARTS = (
    ("compute_s", "compute", "tab:blue"),
    ("comm_s", "comm (incl. waiting in MPI)", "tab:orange"),
    ("eval_s", "test eval", "tab:green"),
    ("other_s", "other (overhead, waiting outside MPI)", "tab:gray"),
)
CSV_FIELDS = (
    "config",
    "strategy",
    "procs",
    "oversubscribed",
    "epochs",
    "repeats",
    "steps_per_epoch",
    "time_per_epoch_median_s",
    "time_per_epoch_min_s",
    "time_per_epoch_p25_s",
    "time_per_epoch_p75_s",
    "time_per_epoch_max_s",
    "compute_s",
    "comm_s",
    "io_s",
    "eval_s",
    "other_s",
    "updates_per_s",
    "worker_updates_per_s",
    "time_to_target_s",
    "epochs_to_target",
    "final_train_loss",
    "staleness_mean",
    "staleness_max",
    "run_dirs",
)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[2, 4], help="rank counts")
    parser.add_argument("--rows", type=int, default=400_000, help="training rows (400000)")
    parser.add_argument("--batch-size", type=int, default=512, help="global batch (512)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (0.05)")
    parser.add_argument(
        "--quick", action="store_true", help="small data, 3 epochs, 1 repeat: a smoke run"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/bench_strategies"),
        help="output prefix: writes PREFIX.csv, .json, .png, .pdf",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.repeats = 40_000, 3, 1
    if args.epochs < TARGET_EPOCH:
        parser.error(f"--epochs must be at least {TARGET_EPOCH} (the target's epoch)")
    args.procs = sorted(set(args.procs))
    return args


def run_dir_of(name, procs, repeat):
    """The run directory of configuration ``name`` on ``procs`` ranks, repeat ``repeat``."""
    return WORK / "strategies" / f"{name}-P{procs}" / f"r{repeat}"


def train(config, procs, repeat, data, args):
    """Run one configuration on ``procs`` ranks (repeat number ``repeat``); its run directory."""
    name, strategy, extra = config
    run_dir = run_dir_of(name, procs, repeat)
    options = flags(
        data=data / "train",
        test_data=data / "test",
        model="logreg",
        optimizer="sgd",
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        strategy=strategy,
    )
    launch = [mpirun(), "-n", str(procs), sys.executable, "-m", "mpigd", "train"]
    command = [*launch, *options, *extra, "--quiet", "--overwrite", "--out", str(run_dir)]
    done = subprocess.run(
        command, env=one_thread_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)}\nfailed with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return run_dir


def updates(epoch, strategy, world_size):
    """Optimiser steps applied in one epoch (``ps-async``: one per worker gradient)."""
    workers = world_size - 1 if strategy == "ps-async" else 1
    return workers * epoch["steps"]


def time_to_target(epochs, target):
    """Cumulative ``time_s`` and epoch count until ``train_loss`` <= ``target``, or Nones."""
    elapsed = 0.0
    for count, epoch in enumerate(epochs, start=1):
        elapsed += epoch["time_s"]
        if epoch["train_loss"] <= target:
            return elapsed, count
    return None, None


def time_split(epochs):
    """Median seconds per epoch in compute, comm, io, eval and other (the rest of time_s).

    Medians resist the odd epoch slowed by another process on a shared machine; they need
    not add up to the median epoch time exactly.
    """
    parts = ("compute_s", "comm_s", "io_s", "eval_s")
    split = {key: statistics.median(e[key] for e in epochs) for key in parts}
    split["other_s"] = statistics.median(e["time_s"] - sum(e[k] for k in parts) for e in epochs)
    return split


def staleness(epochs):
    """``ps-async``: staleness mean over all updates and max, and the summed worker rates.

    Every epoch applies the same number of updates, so the mean of the epoch means is the
    mean over all updates. The worker rate counts each worker's updates per second of its
    own busy time (epoch start to its last gradient), without the epoch-end loss pass.
    """
    return {
        "staleness_mean": statistics.fmean(e["staleness_mean"] for e in epochs),
        "staleness_max": max(e["staleness_max"] for e in epochs),
        "worker_updates_per_s": statistics.fmean(
            sum(e["updates_per_s_per_worker"]) for e in epochs
        ),
    }


def median_or_none(values):
    """Median of ``values`` in which None means never (infinity); None if that is the median."""
    middle = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(middle) else middle


def summarize(config, procs, run_dirs, target):
    """One result row (see ``CSV_FIELDS``) from the records of a configuration's repeats.

    Epoch times and their split pool the epochs of all repeats; the time to target is the
    median over the repeats.
    """
    name, strategy, _ = config
    runs = [read_run(run_dir) for run_dir in run_dirs]
    epochs = [epoch for _, run_epochs in runs for epoch in run_epochs]
    times = [e["time_s"] for e in epochs]
    quartiles = statistics.quantiles(times, n=4)
    rates = [
        updates(e, strategy, info["world_size"]) / e["time_s"]
        for info, run_epochs in runs
        for e in run_epochs
    ]
    reached = [time_to_target(run_epochs, target) for _, run_epochs in runs]
    row = {
        "config": name,
        "strategy": strategy,
        "procs": procs,
        "oversubscribed": procs > os.cpu_count(),
        "repeats": len(runs),
        "epochs": len(epochs),
        "steps_per_epoch": epochs[0]["steps"],
        "time_per_epoch_median_s": statistics.median(times),
        "time_per_epoch_min_s": min(times),
        "time_per_epoch_p25_s": quartiles[0],
        "time_per_epoch_p75_s": quartiles[2],
        "time_per_epoch_max_s": max(times),
        **time_split(epochs),
        "updates_per_s": statistics.median(rates),
        "worker_updates_per_s": None,
        "time_to_target_s": median_or_none(seconds for seconds, _ in reached),
        "epochs_to_target": median_or_none(count for _, count in reached),
        "final_train_loss": statistics.median(
            run_epochs[-1]["train_loss"] for _, run_epochs in runs
        ),
        "staleness_mean": None,
        "staleness_max": None,
        "run_dirs": " ".join(map(str, run_dirs)),
    }
    if strategy == "ps-async":
        row.update(staleness(epochs))
    return row


def target_loss(run_dir):
    """The target: the training loss of ``run_dir`` after epoch ``TARGET_EPOCH``, plus slack."""
    _, epochs = read_run(run_dir)
    reference = next(e["train_loss"] for e in epochs if e["epoch"] == TARGET_EPOCH)
    return reference * (1 + TARGET_SLACK)


def run_all(args, data):
    """Train every configuration for every P, repeats outermost; the target and result rows.

    Repeats form the outer loop, so slow drifts of the machine spread over all configurations.
    """
    target, run_dirs = None, {}
    for repeat in range(1, args.repeats + 1):
        for procs in args.procs:
            for config in CONFIGS:
                started = time.perf_counter()
                run_dir = train(config, procs, repeat, data, args)
                seconds = time.perf_counter() - started
                print(f"  r{repeat} {config[0]:<14} P={procs}: {seconds:6.1f} s", flush=True)
                if target is None:  # allreduce with the smallest P comes first
                    target = target_loss(run_dir)
                run_dirs.setdefault((config, procs), []).append(run_dir)
    rows = [summarize(config, procs, dirs, target) for (config, procs), dirs in run_dirs.items()]
    return target, rows


def fmt(value, spec):
    """``value`` formatted with ``spec``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def format_table(rows):
    """The results as a fixed-width text table."""
    header = (
        f"{'config':<14}{'P':>2}{'s/epoch':>9}{'p25':>7}{'p75':>7}{'max':>7}"
        f"{'compute':>9}{'comm':>8}"
        f"{'eval':>7}{'other':>8}{'updates/s':>11}{'to target s':>12}{'(ep)':>5}"
        f"{'stale mean':>11}{'max':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['config']:<14}{r['procs']:>2}{r['time_per_epoch_median_s']:>9.3f}"
            f"{r['time_per_epoch_p25_s']:>7.3f}{r['time_per_epoch_p75_s']:>7.3f}"
            f"{r['time_per_epoch_max_s']:>7.3f}"
            f"{r['compute_s']:>9.3f}{r['comm_s']:>8.3f}{r['eval_s']:>7.3f}{r['other_s']:>8.3f}"
            f"{r['updates_per_s']:>11.0f}{fmt(r['time_to_target_s'], '.3f'):>12}"
            f"{fmt(r['epochs_to_target'], 'g'):>5}{fmt(r['staleness_mean'], '.2f'):>11}"
            f"{fmt(r['staleness_max'], 'd'):>5}"
        )
    return "\n".join(lines)


def notes(rows, target, args, load):
    """What the table's columns mean, and warnings about the measurement.

    ``load`` is the machine's 1-minute load average before the runs started.
    """
    cores = os.cpu_count()
    lines = [
        f"s/epoch: median time_s over {args.repeats} runs x {args.epochs} epochs (quartiles, max); "
        "compute .. other: median seconds per epoch; other = time_s - compute - comm - io - eval",
        "updates/s: optimiser steps applied per second of time_s, median over the epochs "
        "(ps-async: workers x steps, every worker gradient is an update)",
        f"to target: cumulative time_s until train_loss <= {target:.6f}, the loss allreduce "
        f"reaches after epoch {TARGET_EPOCH} with P={args.procs[0]} plus {TARGET_SLACK:.1%}, "
        "median over the runs ('-': not reached); (ep): epochs it took",
    ]
    if load > BUSY_LOAD:
        lines.append(
            f"NOTE: load average {load:.1f} before the runs: other processes share the cores "
            "and inflate the times"
        )
    crowded = [p for p in args.procs if p > cores]
    if crowded:
        lines.append(
            f"NOTE: P={', '.join(map(str, crowded))} on {cores} cores is oversubscribed: ranks "
            "share cores, so waiting (comm_s) is inflated by time-slicing"
        )
    overlapping = [
        f"{r['config']} P={r['procs']}"
        for r in rows
        if r["other_s"] < -OVERLAP_TOLERANCE * r["time_per_epoch_median_s"]
    ]
    if overlapping:
        lines.append(
            f"NOTE: other < -{OVERLAP_TOLERANCE:.0%} of the epoch time for "
            + ", ".join(overlapping)
            + ": compute_s and comm_s are maxima over different ranks that overlap in time "
            "(a server, or a rank that got its core, waits in MPI while others compute)"
        )
    return lines


def plot(rows, target, args, prefix):
    """Stacked time-per-epoch split (top) and time to target (bottom), one column per P."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(args.procs), 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(args.procs), squeeze=False)
    for column, procs in enumerate(args.procs):
        chosen = [r for r in rows if r["procs"] == procs]
        crowded = " (oversubscribed)" if procs > os.cpu_count() else ""
        plot_split(axes[0][column], chosen, f"P = {procs} ranks on {os.cpu_count()} cores{crowded}")
        plot_target(axes[1][column], chosen, target)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle(
        f"mpigd strategies: logreg, {args.rows:,} x {FEATURES} float64, SGD batch "
        f"{args.batch_size}, lr {args.lr}, {args.repeats} runs x {args.epochs} epochs\n"
        "compute and comm are maxima over ranks; where they overlap in time their stack "
        "exceeds the epoch time"
    )
    for suffix in ("png", "pdf"):
        fig.savefig(prefix.with_suffix(f".{suffix}"), dpi=150)


def plot_split(ax, rows, title):
    """Stacked bars of the median epoch split, with the median epoch time and its quartiles."""
    x = range(len(rows))
    bottom = [0.0] * len(rows)
    for key, label, colour in PARTS:
        heights = [max(r[key], 0.0) for r in rows]
        ax.bar(x, heights, bottom=bottom, color=colour, label=label, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    median = [r["time_per_epoch_median_s"] for r in rows]
    spread = [
        [m - r["time_per_epoch_p25_s"] for m, r in zip(median, rows, strict=True)],
        [r["time_per_epoch_p75_s"] - m for m, r in zip(median, rows, strict=True)],
    ]
    ax.errorbar(
        x,
        median,
        yerr=spread,
        fmt="k_",
        markersize=18,
        capsize=4,
        label="epoch time: median (quartiles)",
    )
    ax.set_xticks(list(x), [r["config"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("seconds per epoch")
    ax.set_title(title)


def plot_target(ax, rows, target):
    """Bars of the time to reach the target loss; 'not reached' where it never was."""
    x = range(len(rows))
    seconds = [r["time_to_target_s"] or 0.0 for r in rows]
    ax.bar(x, seconds, color="tab:purple", width=0.7)
    for i, r in enumerate(rows):
        label = "not reached" if r["time_to_target_s"] is None else f"ep {r['epochs_to_target']:g}"
        ax.annotate(label, (i, seconds[i]), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(list(x), [r["config"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("seconds of training")
    ax.set_title(f"time to train_loss <= {target:.5f}")


def environment(args, target, data, load):
    """Provenance and parameters of the measurement (``load``: see :func:`notes`)."""
    info, _ = read_run(run_dir_of(CONFIGS[0][0], args.procs[0], 1))
    return {
        "data": str(data),
        "train_rows": args.rows,
        "features": FEATURES,
        "procs": args.procs,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "lr": args.lr,
        "quick": args.quick,
        "target_loss": target,
        "target": (
            f"allreduce train_loss after epoch {TARGET_EPOCH} with P={args.procs[0]}, "
            f"times 1 + {TARGET_SLACK}"
        ),
        "cpu_count": os.cpu_count(),
        "load_average_before": load,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "mpi_library": info["mpi_library"],
        "versions": info["versions"],
        "git_commit": info["git_commit"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(rows, record, prefix):
    """``PREFIX.csv`` (one row per configuration and P) and ``PREFIX.json`` (everything)."""
    with open(prefix.with_suffix(".csv"), "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    prefix.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv=None):
    """Run every configuration, print the table, write CSV, JSON and the figure."""
    args = parse_args(argv)
    data = synthetic_dataset(WORK, "binary", args.rows, FEATURES, TEST_FRACTION)
    load = os.getloadavg()[0]
    print(f"{len(CONFIGS) * len(args.procs) * args.repeats} runs, data {data}:", flush=True)
    target, rows = run_all(args, data)
    print(format_table(rows))
    for line in notes(rows, target, args, load):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "strategies",
        "environment": environment(args, target, data, load),
        "results": rows,
    }
    write_results(rows, record, args.out)
    plot(rows, target, args, args.out)
    print(f"wrote {args.out}.csv, .json, .png, .pdf")


if __name__ == "__main__":
    main()
