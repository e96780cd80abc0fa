"""Benchmark the cost of ``--timeline``: epoch time with and without the step trace.

Two workloads, each on 1 and 2 ranks (``--procs``), trained ``--repeats`` times with the
timeline off and on in alternation (off, on, then on, off, ...: a drift of the machine
hits both modes alike):

- ``logreg``: logistic regression, SGD at global batch 512, on synthetic binary data of
  200,000 training rows x 100 float64 features (the cheapest steps we have, so the trace's
  per-step cost weighs most);
- ``mlp``: the MLP ``--hidden 256,256``, SGD at global batch 512 with the default
  overlapped bucketed Iallreduce, on synthetic 10-class data of 50,000 x 100.

Both with test data, so every epoch also has its ``train_loss`` pass and evaluation.
Datasets are made once and cached under ``build/bench/``; run records stay in
``build/bench/timeline/<workload>-P<P>-<off|on>/r<repeat>/``. Everything is read from the
records (``metrics.jsonl`` through :func:`mpigd.record.read_run`, and the trace itself),
never from console output. Per workload and P it prints the median epoch time
(``time_s``, over all epochs of all repeats) off and on, their ratio, the spread of the
ratio over the repeat pairs (the i-th run on over the i-th run off, each a median over
its epochs: min, median, max), the trace's events per epoch, and whether the ratio is
within the budget of 2% of the epoch time. It also writes ``results/bench_timeline.json``.

A difference of 2% between two medians needs a quiet machine; on a shared one the
kernels' times swing by tens of percent from run to run. Two figures are steadier:

- ``est.``: what recording adds per phase block (a traced ``with timer.phase(...)``
  against an untraced one) and per step mark (``before_step``), measured in this
  process in CPU seconds (:func:`recording_cost`), times the phase blocks and steps per
  epoch counted in the trace, over the median epoch time off. It leaves out cache
  effects of the growing record list, which the ratio includes.
- ``unbooked``: the change of the median time that no phase holds (``time_s -
  compute_s - comm_s - io_s - eval_s``), over the median epoch time off. Recording a
  top-level phase or a step mark lands there (a nested phase's record lands in its
  parent), while the kernels' share of the load noise stays out.

One MPI rank is one core (BLAS, OpenMP and Numba limited to one thread); a P larger than
the core count is oversubscribed, and a loaded machine inflates the spread: the output
says so.

Usage::

    python experiments/bench_timeline.py [--procs 1 2] [--repeats R] [--epochs E]
        [--workloads logreg mlp] [--quick] [--out FILE]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script, too
from experiments.launch import flags, mpirun, one_thread_env, synthetic_dataset  # noqa: E402
from mpigd.record import read_run  # noqa: E402
from mpigd.run.timeline import TimelineHook  # noqa: E402
from mpigd.timing import PHASES, PhaseTimer  # noqa: E402

WORK = Path("build/bench")
TEST_FRACTION = 0.1
BATCH_SIZE = 512
#: The overhead allowed: the timeline on must cost at most this share of the epoch time.
BUDGET = 0.02
RUN_TIMEOUT_S = 900
#: A 1-minute load average above this before the runs means the machine was not idle.
BUSY_LOAD = 0.5
#: name -> (``data synth`` options, ``train`` options) of each workload.
WORKLOADS = {
    "logreg": (
        {"task": "binary", "train_rows": 200_000, "features": 100},
        {"model": "logreg", "optimizer": "sgd", "lr": 0.05},
    ),
    "mlp": (
        {"task": "multiclass", "train_rows": 50_000, "features": 100, "classes": 10},
        {"model": "mlp", "hidden": "256,256", "optimizer": "sgd", "lr": 0.05},
    ),
}
MODES = ("off", "on")
#: Calls per timed loop, and timed loops of each kind, of the recording costs.
COST_CALLS = 20_000
COST_REPEATS = 15


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="rank counts")
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode (5)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (4)")
    parser.add_argument(
        "--in-process-epochs", type=int, default=10,
        help="epochs of each mode in the in-process comparison (10)",
    )  # fmt: skip
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=list(WORKLOADS)
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs, 2 repeats: a smoke run, no verdict"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/bench_timeline.json"), help="result file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.in_process_epochs = 2, 2, 2
    args.procs = sorted(set(args.procs))
    return args


def train(workload, procs, mode, repeat, data, args):
    """One run of ``workload`` on ``procs`` ranks with the timeline ``mode``; its run dir."""
    run_dir = WORK / "timeline" / f"{workload}-P{procs}-{mode}" / f"r{repeat}"
    options = flags(data=data / "train", test_data=data / "test", batch_size=BATCH_SIZE,
                    epochs=args.epochs, **WORKLOADS[workload][1])  # fmt: skip
    if mode == "on":
        options.append("--timeline")
    launch = [mpirun(), "-n", str(procs), sys.executable, "-m", "mpigd", "train"]
    command = [*launch, *options, "--quiet", "--overwrite", "--out", str(run_dir)]
    done = subprocess.run(
        command, env=one_thread_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)}\nfailed with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return run_dir


def epoch_times(run_dir):
    """``time_s`` of every epoch of one run, and the part of it booked to no phase:
    ``time_s - compute_s - comm_s - io_s - eval_s`` (seconds)."""
    _, epochs = read_run(run_dir)
    booked = ("compute_s", "comm_s", "io_s", "eval_s")
    return [(e["time_s"], e["time_s"] - sum(e[key] for key in booked)) for e in epochs]


def recording_cost():
    """Seconds that recording adds per phase block and per step mark, in this process.

    ``COST_REPEATS`` loops of ``COST_CALLS`` calls of each kind, the kinds in turn: a
    phase block with the trace attached, one without, and ``TimelineHook.before_step``.
    Timed in CPU seconds of this process (``process_time``, which a loaded machine's
    preemptions do not inflate); the phase cost is the median over the repeats of the
    traced loop's time minus the untraced one's, the step mark's the median of its own.
    """

    def phase_loop(traced):
        timer = PhaseTimer()
        timer.trace = [] if traced else None
        start = time.process_time()
        for _ in range(COST_CALLS):
            with timer.phase("comm", "Allreduce", 808):
                pass
        return (time.process_time() - start) / COST_CALLS

    def step_loop():
        hook, run = TimelineHook(), SimpleNamespace(state=SimpleNamespace(global_step=0, epoch=1))
        start = time.process_time()
        for _ in range(COST_CALLS):
            hook.before_step(run)
        return (time.process_time() - start) / COST_CALLS

    loops = {"plain": lambda: phase_loop(False), "traced": lambda: phase_loop(True),
             "step": step_loop}  # fmt: skip
    times = {name: [] for name in loops}
    for _ in range(COST_REPEATS):
        for name, loop in loops.items():
            times[name].append(loop())
    added = [traced - plain for traced, plain in zip(times["traced"], times["plain"], strict=True)]
    return {"phase_s": statistics.median(added), "step_mark_s": statistics.median(times["step"])}


def trace_counts(run_dir, epochs):
    """Phase blocks, step marks and all complete events of ``run_dir``'s trace, per rank
    and epoch (the mean over ranks)."""
    trace = json.loads((run_dir / "timeline.json").read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    per = trace["otherData"]["ranks"] * epochs
    return {
        "phases": sum(e["cat"] in PHASES for e in events) / per,
        "steps": sum(e["cat"] == "step" for e in events) / per,
        "events": len(events) / per,
    }


def summarize(workload, procs, runs, args, cost):
    """One result row from ``runs[mode]``, the run directories of each mode in order, and
    ``cost`` (:func:`recording_cost`)."""
    epochs = {mode: [epoch_times(d) for d in runs[mode]] for mode in MODES}
    median, unbooked = {}, {}
    for mode in MODES:
        median[mode] = statistics.median(t for run in epochs[mode] for t, _ in run)
        unbooked[mode] = statistics.median(u for run in epochs[mode] for _, u in run)
    pairs = [
        statistics.median(t for t, _ in on) / statistics.median(t for t, _ in off)
        for off, on in zip(epochs["off"], epochs["on"], strict=True)
    ]
    ratio = median["on"] / median["off"]
    counts = trace_counts(runs["on"][-1], args.epochs)
    estimate = counts["phases"] * cost["phase_s"] + counts["steps"] * cost["step_mark_s"]
    return {
        "workload": workload,
        "procs": procs,
        "oversubscribed": procs > os.cpu_count(),
        "repeats": len(pairs),
        "epochs": args.epochs,
        "epoch_s_off": median["off"],
        "epoch_s_on": median["on"],
        "ratio": ratio,
        "ratio_pairs_min": min(pairs),
        "ratio_pairs_median": statistics.median(pairs),
        "ratio_pairs_max": max(pairs),
        "ratio_pairs": pairs,
        "events_per_rank_epoch": counts["events"],
        "phases_per_rank_epoch": counts["phases"],
        "steps_per_epoch": counts["steps"],
        "estimated_overhead": estimate / median["off"],
        "unbooked_s_off": unbooked["off"],
        "unbooked_s_on": unbooked["on"],
        "unbooked_increase": (unbooked["on"] - unbooked["off"]) / median["off"],
        "within_budget": ratio <= 1 + BUDGET,
        "run_dirs": {mode: [str(d) for d in runs[mode]] for mode in MODES},
    }


def in_process_ratio(workload, epochs):
    """Epoch time with the timeline's recording on over off, in one process (1 rank).

    The run's own parts (:func:`mpigd.run.builder.build_parts`) on in-memory synthetic
    rows of the workload's shape take whole epochs of the loop's steps, alternately with
    the recording on (``timer.trace`` attached, a step mark before every step, as the
    hook does) and off: same process, data and kernels, so the machine's drift hits
    both alike. Returns the median epoch seconds of each and the ratio of the medians,
    with the spread of the ratios of consecutive on/off pairs.
    """
    import numpy as np

    import kernels
    from mpigd.comm import world
    from mpigd.config import TrainConfig
    from mpigd.run.batching import epoch_batches
    from mpigd.run.builder import build_parts
    from mpigd.run.hooks import Hooks
    from mpigd.run.layouts import layout_for

    synth, train_options = WORKLOADS[workload]
    rows, features, classes = synth["train_rows"], synth["features"], synth.get("classes", 2)
    options = dict(train_options)
    if "hidden" in options:  # the flag's "256,256" as the config's list
        options["hidden"] = [int(width) for width in options["hidden"].split(",")]
    config = TrainConfig(data="-", out="-", batch_size=BATCH_SIZE, epochs=2 * epochs,
                         **options)  # fmt: skip
    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, features))
    y = rng.integers(0, classes, rows)
    task = "binary" if classes == 2 and config.model != "mlp" else "multiclass"
    info = SimpleNamespace(n_features=features, task=task, n_classes=classes, n_rows=rows)
    timer = PhaseTimer()
    parts = build_parts(config, layout_for(config), world(), kernels.get_backend("numba"),
                        info, SimpleNamespace(X=X, y=y), timer, Hooks([]))  # fmt: skip
    hook = TimelineHook()
    run = SimpleNamespace(state=SimpleNamespace(global_step=0, epoch=1))

    def epoch(number, traced):
        batches = epoch_batches(rows, 0, 1, rows, BATCH_SIZE, 0, number)
        timer.trace = [] if traced else None
        mark = (lambda i: hook.before_step(run)) if traced else (lambda i: None)
        start = time.perf_counter()
        parts.strategy.run_epoch(parts.optimizer, parts.params, batches, mark)
        seconds = time.perf_counter() - start
        timer.take()
        return seconds

    epoch(0, False)  # compile and warm the caches
    seconds = {"off": [], "on": []}
    for number in range(1, epochs + 1):
        for mode in MODES if number % 2 else reversed(MODES):
            seconds[mode].append(epoch(number, mode == "on"))
    pairs = [on / off for off, on in zip(seconds["off"], seconds["on"], strict=True)]
    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    return {"workload": workload, "epochs": epochs, "epoch_s_off": median["off"],
            "epoch_s_on": median["on"], "ratio": median["on"] / median["off"],
            "ratio_pairs_min": min(pairs), "ratio_pairs_median": statistics.median(pairs),
            "ratio_pairs_max": max(pairs)}  # fmt: skip


def format_in_process(rows):
    """The in-process table (:func:`in_process_ratio`)."""
    lines = ["in one process, 1 rank, steps only (recording on vs off, interleaved epochs):",
             f"{'workload':<9} {'epochs':>6} {'off s/ep':>9} {'on s/ep':>9} {'on/off':>7} "
             f"{'pairs min':>9} {'median':>7} {'max':>7}"]  # fmt: skip
    for row in rows:
        lines.append(
            f"{row['workload']:<9} {row['epochs']:>6} {row['epoch_s_off']:>9.4f} "
            f"{row['epoch_s_on']:>9.4f} {row['ratio']:>7.4f} {row['ratio_pairs_min']:>9.4f} "
            f"{row['ratio_pairs_median']:>7.4f} {row['ratio_pairs_max']:>7.4f}"
        )
    return "\n".join(lines)


def run_all(args, cost):
    """Every workload, P and repeat, off and on in alternation; the result rows."""
    rows = []
    for workload in args.workloads:
        data = synthetic_dataset(WORK, **WORKLOADS[workload][0], test_fraction=TEST_FRACTION)
        for procs in args.procs:
            runs = {mode: [] for mode in MODES}
            for repeat in range(1, args.repeats + 1):
                for mode in MODES if repeat % 2 else reversed(MODES):
                    started = time.perf_counter()
                    runs[mode].append(train(workload, procs, mode, repeat, data, args))
                    seconds = time.perf_counter() - started
                    print(f"  r{repeat} {workload} P={procs} timeline {mode:<3}: "
                          f"{seconds:6.1f} s", flush=True)  # fmt: skip
            rows.append(summarize(workload, procs, runs, args, cost))
    return rows


def format_table(rows):
    """The results as a fixed-width text table."""
    header = (
        f"{'workload':<9}{'P':>2}{'off s/ep':>10}{'on s/ep':>10}{'on/off':>8}"
        f"{'pairs min':>10}{'median':>8}{'max':>8}{'events/ep':>11}{'est.':>8}"
        f"{'unbooked':>10}  within 2%"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['workload']:<9}{r['procs']:>2}{r['epoch_s_off']:>10.4f}{r['epoch_s_on']:>10.4f}"
            f"{r['ratio']:>8.4f}{r['ratio_pairs_min']:>10.4f}{r['ratio_pairs_median']:>8.4f}"
            f"{r['ratio_pairs_max']:>8.4f}{r['events_per_rank_epoch']:>11.0f}"
            f"{r['estimated_overhead']:>8.2%}{r['unbooked_increase']:>+10.2%}  "
            f"{'yes' if r['within_budget'] else 'NO'}"
        )
    return "\n".join(lines)


def notes(args, load, cost):
    """What the columns mean, and warnings about the measurement (``load``: before it)."""
    lines = [
        f"s/ep: median time_s over {args.repeats} runs x {args.epochs} epochs; on/off: their "
        "ratio; pairs: the i-th run on over the i-th run off (medians over its epochs); "
        "events/ep: trace events per rank and epoch",
        f"est.: phase blocks x {cost['phase_s'] * 1e9:.0f} ns + steps x "
        f"{cost['step_mark_s'] * 1e9:.0f} ns (recording costs measured in this process), "
        "per epoch, over the median epoch time off",
        "unbooked: the change of the median time booked to no phase (time_s - compute - comm "
        "- io - eval, where recording a top-level phase or a step lands), over the median "
        "epoch time off: the kernels' share of the load noise left out",
    ]
    if args.quick:
        lines.append("NOTE: --quick: too few repeats for a verdict")
    if load > BUSY_LOAD:
        lines.append(
            f"NOTE: load average {load:.1f} before the runs: other processes share the cores "
            "and widen the spread"
        )
    crowded = [p for p in args.procs if p > os.cpu_count()]
    if crowded:
        lines.append(
            f"NOTE: P={', '.join(map(str, crowded))} on {os.cpu_count()} cores is "
            "oversubscribed: ranks share cores"
        )
    return lines


def environment(args, rows, load, cost):
    """Provenance and parameters of the measurement."""
    info, _ = read_run(rows[0]["run_dirs"]["off"][0])
    return {
        "procs": args.procs,
        "repeats": args.repeats,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "workloads": {name: WORKLOADS[name] for name in args.workloads},
        "budget": BUDGET,
        "recording_cost_s": cost,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "machine": platform.machine(),
        "processor": platform.processor(),
        "mpi_library": info["mpi_library"],
        "versions": info["versions"],
        "git_commit": info["git_commit"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None):
    """Run the benchmark, print the table, write the JSON record."""
    args = parse_args(argv)
    load = os.getloadavg()[0]
    runs = len(args.workloads) * len(args.procs) * len(MODES) * args.repeats
    cost = recording_cost()
    in_process = [in_process_ratio(workload, args.in_process_epochs)
                  for workload in args.workloads]  # fmt: skip
    print(format_in_process(in_process), flush=True)
    print(f"{runs} runs:", flush=True)
    rows = run_all(args, cost)
    print(format_table(rows))
    for line in notes(args, load, cost):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "timeline", "environment": environment(args, rows, load, cost),
              "in_process": in_process, "results": rows}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
