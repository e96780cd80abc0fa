"""Benchmark the MLP 784-512-512-10 on MNIST-sized data: step cost and data-parallel speed.

Data: synthetic 10-class float32 data with 784 features, 60,000 training rows (and 10,000
test rows, unused), made once with ``mpigd data synth`` and cached in
``build/bench/mnist-like/``. Global batch 512, Adam, lr 0.001, no dropout. Two parts:

1. **Step against its GEMM floor** (one rank, in-process, one BLAS thread). One training
   step exactly as the trainer takes it (``AllreduceStrategy.step`` on a one-rank world:
   ``LocalObjective`` forward + backward on a 512-row batch, ``finish``, the finiteness
   check, the optimiser update) is timed against the same eight GEMMs timed alone with
   preallocated float32 outputs: forward ``A @ W.T`` for the 3 layers, backward
   ``dZ.T @ A`` for the 3 layers and ``dZ @ W`` for the 2 upper ones (the input layer's
   ``dA`` is never formed). The rest of the step is split into what it is made of, each
   timed alone on the same shapes: the element-wise kernels (bias adds, ReLU forward and
   backward, softmax cross-entropy, bias-gradient sums), the casts of the float64 flat
   parameters to float32 layer weights, the copies of the float32 layer gradients into
   the float64 flat gradient, the batch gather ``X[rows]``, ``finish`` (mean and L2 term
   over the flat vector), the finiteness check and the optimiser update (Adam and plain
   SGD) on 669,706 parameters; what is left (``rest``) is allocation of fresh buffers,
   colder caches and Python overhead. All variants run in turn inside each repeat (so a
   shared machine's load hits them alike); medians, with min and max, after warm-up.
   Also timed: the full-batch forward + backward pass over all 60,000 rows that the
   trainer runs after every epoch for ``train_loss``.
2. **Samples per second on 1 and 2 ranks** (``mpirun -n P python -m mpigd train``), with
   overlapped bucketed ``Iallreduce`` (the default, ``--bucket-mb`` 1: two buckets, the
   two upper layers' 2.0 MiB and then the input layer's 3.1 MiB) and with
   ``--no-overlap`` (one ``Allreduce`` after backpropagation); at 2 ranks also
   ``--bucket-mb`` 0.01 (one bucket per layer) and 4 (one bucket for all) and, since
   MPICH progresses non-blocking collectives only inside MPI calls unless it runs a
   progress thread, both modes again with ``MPIR_CVAR_ASYNC_PROGRESS=1``. Everything is
   read from each run's ``metrics.jsonl`` (medians over all epochs of all repeats):
   ``samples_per_s``, ``time_s``, ``compute_s``, ``comm_s`` (maximum over ranks;
   includes waiting for the slower rank), ``other`` (the optimiser update and Python
   overhead, booked in no phase), the communication share ``comm_s / (time_s -
   eval_s)``, and the reduction of visible communication time by overlap: ``comm_s``
   without over ``comm_s`` with it. ``comm_s`` of a training run is mostly waiting for
   the slower rank, which no overlap can hide, so two more measurements separate the
   transfer from the waiting: one gradient-sized ``Allreduce`` alone, and steps of the
   trainer's own strategy with and without overlap, each after a barrier (both under
   ``mpirun`` by this script's worker modes). ``time_s`` (hence ``samples_per_s``)
   includes the per-epoch ``train_loss`` pass.

Targets (issue 4): step / GEMM floor <= 1.3 at one rank; overlap at least halves the
visible communication time at 2 ranks. The script prints a table and writes
``results/bench_mlp.json``; run records stay in ``build/bench/mlp/<config>/r<repeat>/``.
Ratios matter, not absolute times; on a shared or oversubscribed machine (the load
average and the busy share of the cores before and after are recorded) the spreads say
how far to trust them.

Usage::

    python experiments/bench_mlp.py [--part {all,step,train}] [--repeats R]
        [--step-repeats N] [--epochs E] [--procs 1 2] [--bucket-mb 0.01 4]
        [--no-async-progress] [--profile] [--quick] [--out FILE]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script, too
from experiments.launch import THREAD_VARIABLES, mpirun  # noqa: E402

WORK = Path("build/bench")
DATA = WORK / "mnist-like"
RUNS = WORK / "mlp"
FEATURES = 784
CLASSES = 10
HIDDEN = (512, 512)
TRAIN_ROWS = 60_000
TEST_ROWS = 10_000
BATCH = 512
LR = 0.001
SEED = 1
TARGET_STEP_OVER_FLOOR = 1.3
TARGET_OVERLAP_REDUCTION = 2.0
RUN_TIMEOUT_S = 1200
#: MPICH: a progress thread per rank, so non-blocking collectives advance between MPI calls.
ASYNC_PROGRESS = {"MPIR_CVAR_ASYNC_PROGRESS": "1"}
#: The parts of one step beside the GEMMs, in table order (see :func:`step_variants`).
STEP_PARTS = ("elementwise", "cast_params", "grad_copy", "gather", "finish", "check_finite")


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "step", "train"), default="all")
    parser.add_argument("--step-repeats", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--repeats", type=int, default=2, help="training runs per config")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="rank counts")
    parser.add_argument(
        "--bucket-mb", type=float, nargs="*", default=[0.01, 4.0],
        help="extra --bucket-mb values at the largest rank count (default 0.01: one bucket "
        "per layer; 4: one bucket for all)",
    )  # fmt: skip
    parser.add_argument(
        "--no-async-progress", dest="async_progress", action="store_false",
        help="skip the MPIR_CVAR_ASYNC_PROGRESS=1 runs",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="print a cProfile of 20 steps")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and runs (make bench)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_mlp.json"))
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--comm-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.step_repeats, args.repeats, args.epochs, args.bucket_mb = 25, 1, 1, []
    return args


def limit_threads(n_threads=1):
    """Set the BLAS/OpenMP/Numba thread count; must run before numpy is first imported."""
    if "numpy" in sys.modules:
        raise RuntimeError("limit_threads must run before numpy is imported")
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(n_threads)


# -- part 1: one step against its GEMM floor ------------------------------------------------


def time_interleaved(variants, repeats, warmup=3):
    """Seconds per call of each callable: median, min and max over ``repeats`` rounds.

    Each round calls every variant once, in turn, so that load from other processes
    falls on all of them alike; ``warmup`` untimed rounds come first.
    """
    seconds = {name: [] for name in variants}
    for round_ in range(warmup + repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in seconds.items()}


def summary(values):
    """Median, min and max of a list of seconds."""
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}


def n_params():
    """Length of the MLP's flat parameter vector: a weight matrix and a bias per layer."""
    sizes = (FEATURES, *HIDDEN, CLASSES)
    return sum(n_out * (n_in + 1) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


def make_training(optimizer_name, X, y, overlap=True):
    """Model, objective, strategy, optimiser and parameters as ``mpigd train`` builds them.

    Built by the run's own builder (:func:`mpigd.run.builder.build_parts`) with the
    default ``allreduce`` strategy on the world (one process unless under ``mpirun``),
    with overlapped buckets unless ``overlap`` is false, so that a step
    (:func:`one_step`) is exactly the loop's: closure, finiteness check, update.
    """
    from types import SimpleNamespace

    import kernels
    from mpigd.comm import world
    from mpigd.config import TrainConfig
    from mpigd.run.builder import build_parts
    from mpigd.run.hooks import Hooks
    from mpigd.run.layouts import layout_for
    from mpigd.timing import PhaseTimer

    config = TrainConfig(data="-", out="-", model="mlp", optimizer=optimizer_name, lr=LR,
                         batch_size=BATCH, hidden=list(HIDDEN), overlap=overlap, epochs=1,
                         seed=SEED)  # fmt: skip
    info = SimpleNamespace(n_features=FEATURES, task="multiclass", n_classes=CLASSES,
                           n_rows=TRAIN_ROWS)  # fmt: skip
    parts = build_parts(config, layout_for(config), world(), kernels.get_backend("numba"), info,
                        SimpleNamespace(X=X, y=y), PhaseTimer(), Hooks([]))  # fmt: skip
    return parts.model, parts.objective, parts.strategy, parts.optimizer, parts.params


def one_step(strategy, optimizer, params, rows):
    """One optimiser step on ``rows``: an epoch of one batch, as the loop runs it."""
    strategy.run_epoch(optimizer, params, [rows], lambda step: None)


def gemm_floor(batch_rows, dtype):
    """The step's GEMMs with preallocated outputs: ``(forward, backward)`` callables."""
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [FEATURES, *HIDDEN, CLASSES]
    shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
    W = [rng.standard_normal((n_out, n_in)).astype(dtype) for n_in, n_out in shapes]
    A = [rng.standard_normal((batch_rows, n_in)).astype(dtype) for n_in, _ in shapes]
    Z = [np.empty((batch_rows, n_out), dtype) for _, n_out in shapes]
    dZ = [rng.standard_normal((batch_rows, n_out)).astype(dtype) for _, n_out in shapes]
    gW = [np.empty_like(w) for w in W]
    dA = [np.empty_like(a) for a in A]

    def forward():
        for layer in range(len(W)):
            np.matmul(A[layer], W[layer].T, out=Z[layer])

    def backward():
        for layer in reversed(range(len(W))):
            np.matmul(dZ[layer].T, A[layer], out=gW[layer])
            if layer:
                np.matmul(dZ[layer], W[layer], out=dA[layer])

    return forward, backward


def elementwise(batch_rows, dtype, backend):
    """The step's element-wise kernels on its shapes (bias adds, ReLU, softmax, bias sums)."""
    import numpy as np

    rng = np.random.default_rng(1)
    sizes = [*HIDDEN, CLASSES]
    Z = [rng.standard_normal((batch_rows, n)).astype(dtype) for n in sizes]
    out = [np.empty_like(z) for z in Z]
    b = [np.zeros(n, dtype) for n in sizes]
    gb = [np.empty(n, dtype) for n in sizes]
    y = rng.integers(0, CLASSES, batch_rows)

    def run():
        for z, bias in zip(Z, b, strict=True):
            z += bias
        for z, o in zip(Z[:-1], out[:-1], strict=True):
            backend.relu_forward(z, None, o)
            backend.relu_backward(o, z, None, o)
        backend.softmax_xent(Z[-1], y, None, out[-1])
        for o, g in zip(out, gb, strict=True):
            np.sum(o, axis=0, out=g)

    return run


def step_variants(X, y, rows):
    """Every timed callable of part 1, by name; built on the same model and batch."""
    import numpy as np

    model, objective, strategy, adam, params = make_training("adam", X, y)
    _, _, sgd_strategy, sgd, sgd_params = make_training("sgd", X, y)
    forward, backward = gemm_floor(len(rows), X.dtype)
    ranges = model.layer_ranges()
    grad64 = np.empty(model.n_params)
    grads32 = [np.ones(hi - lo, X.dtype) for lo, hi in ranges]
    packed = objective.packed_buffer()
    objective.local_sums(params, rows, packed)
    scratch = params.copy()

    def grad_copy():
        for (lo, hi), g in zip(ranges, grads32, strict=True):
            grad64[lo:hi] = g

    return {
        "floor": lambda: (forward(), backward()),
        "floor_forward": forward,
        "floor_backward": backward,
        "step_adam": lambda: one_step(strategy, adam, params, rows),
        "step_sgd": lambda: one_step(sgd_strategy, sgd, sgd_params, rows),
        "pass": lambda: objective.local_sums(params, rows, packed),
        "elementwise": elementwise(len(rows), X.dtype, model.backend),
        "cast_params": lambda: [params[lo:hi].astype(X.dtype) for lo, hi in ranges],
        "grad_copy": grad_copy,
        "gather": lambda: X[rows],
        "finish": lambda: objective.finish(packed, params, grad64),
        "check_finite": lambda: bool(np.isfinite(grad64).all()),
        "update_adam": lambda: adam.step(scratch, lambda p, g: 0.0),
        "update_sgd": lambda: sgd.step(scratch, lambda p, g: 0.0),
    }


def synthetic_rows(rows):
    """``rows`` x 784 float32 rows and labels (GEMM time does not depend on the values)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    X = rng.random((rows, FEATURES), dtype=np.float32)
    return X, rng.integers(0, CLASSES, rows)


def full_pass_seconds(X, y, repeats):
    """Seconds of one forward + backward pass over all rows (the trainer's train_loss pass)."""
    _, objective, _, _, params = make_training("adam", X, y)
    packed = objective.packed_buffer()
    return time_interleaved(
        {"full_pass": lambda: objective.local_sums(params, None, packed)}, repeats, warmup=1
    )["full_pass"]


def profile_steps(variants, steps=20):
    """Print the functions that take the most time over ``steps`` Adam steps (cProfile)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        variants["step_adam"]()
    profiler.disable()
    print(f"cProfile of {steps} Adam steps (tottime):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def run_step_part(args):
    """Part 1: time the step, its floor and its parts; return the JSON record."""
    import numpy as np

    X, y = synthetic_rows(TRAIN_ROWS)
    rows = np.sort(np.random.default_rng(SEED).choice(TRAIN_ROWS, BATCH, replace=False))
    variants = step_variants(X, y, rows)
    if args.profile:
        profile_steps(variants)
    timings = time_interleaved(variants, args.step_repeats)
    record = {"batch": BATCH, "n_params": n_params(), "repeats": args.step_repeats,
              "timings": timings}  # fmt: skip
    floor = timings["floor"]["median_s"]
    for name in ("adam", "sgd"):
        step = timings[f"step_{name}"]["median_s"]
        record[f"step_over_floor_{name}"] = step / floor
        record[f"step_over_floor_{name}_min"] = (
            timings[f"step_{name}"]["min_s"] / timings["floor"]["min_s"]
        )
        parts = {"gemm_floor": floor}
        parts.update({part: timings[part]["median_s"] for part in STEP_PARTS})
        parts["update"] = timings[f"update_{name}"]["median_s"]
        parts["rest"] = step - sum(parts.values())
        record[f"breakdown_{name}"] = parts
    record["meets_target"] = record["step_over_floor_adam"] <= TARGET_STEP_OVER_FLOOR
    if not args.quick:
        record["full_pass"] = full_pass_seconds(X, y, repeats=3)
    return record


def format_step(record):
    """Part 1 as text: the timings, then the breakdown of each step."""
    lines = [f"{'variant':<16}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'x floor':>9}"]
    lines.append("-" * len(lines[0]))
    floor = record["timings"]["floor"]["median_s"]
    for name, t in record["timings"].items():
        lines.append(
            f"{name:<16}{1e3 * t['median_s']:>10.2f}{1e3 * t['min_s']:>9.2f}"
            f"{1e3 * t['max_s']:>9.2f}{t['median_s'] / floor:>9.2f}"
        )
    for name in ("adam", "sgd"):
        parts = record[f"breakdown_{name}"]
        step = sum(parts.values())
        shares = ", ".join(f"{k} {1e3 * v:.1f} ms ({v / step:.0%})" for k, v in parts.items())
        lines.append(
            f"step ({name}) = {1e3 * step:.1f} ms = {record[f'step_over_floor_{name}']:.2f} x "
            f"floor (min/min {record[f'step_over_floor_{name}_min']:.2f}): {shares}"
        )
    if "full_pass" in record:
        lines.append(
            f"train_loss pass over {TRAIN_ROWS} rows (once per epoch, 1 rank): "
            f"{record['full_pass']['median_s']:.2f} s median"
        )
    return "\n".join(lines)


# -- part 2: training runs under mpirun ----------------------------------------------------


def ensure_dataset():
    """Create the cached MNIST-sized dataset unless it is there; its training split."""
    train = DATA / "train"
    if not train.exists():
        command = [
            sys.executable, "-m", "mpigd", "data", "synth", "--task", "multiclass",
            "--classes", str(CLASSES), "--rows", str(TRAIN_ROWS + TEST_ROWS),
            "--test-fraction", repr(TEST_ROWS / (TRAIN_ROWS + TEST_ROWS)),
            "--features", str(FEATURES), "--dtype", "float32", "--seed", str(SEED),
            "--out", str(DATA),
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return train


def configs(args):
    """``(name, procs, extra train flags, extra environment)`` of every training run."""
    found = []
    for procs in args.procs:
        found.append((f"overlap-P{procs}", procs, (), {}))
        found.append((f"no-overlap-P{procs}", procs, ("--no-overlap",), {}))
        if procs < 2 or procs != max(args.procs):
            continue
        for mb in args.bucket_mb:
            found.append((f"overlap-b{mb:g}MB-P{procs}", procs, ("--bucket-mb", str(mb)), {}))
        if args.async_progress:
            found.append((f"overlap-async-P{procs}", procs, (), ASYNC_PROGRESS))
            found.append((f"no-overlap-async-P{procs}", procs, ("--no-overlap",), ASYNC_PROGRESS))
    return found


def train(config, repeat, data, epochs):
    """One training run of ``config`` (repeat ``repeat``); its run directory."""
    name, procs, extra, env = config
    run_dir = RUNS / name / f"r{repeat}"
    command = [
        mpirun(), "-n", str(procs), sys.executable, "-m", "mpigd", "train",
        "--data", str(data), "--model", "mlp", "--hidden", ",".join(map(str, HIDDEN)),
        "--optimizer", "adam", "--lr", str(LR), "--batch-size", str(BATCH),
        "--epochs", str(epochs), "--seed", str(SEED), *extra,
        "--quiet", "--overwrite", "--out", str(run_dir),
    ]  # fmt: skip
    environment = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), **env}
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)}\nfailed with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return run_dir


def summarize(config, run_dirs):
    """One configuration's medians over all epochs of all its runs."""
    from mpigd.record import read_run

    name, procs, extra, env = config
    epochs = [row for run_dir in run_dirs for row in read_run(run_dir)[1]]

    def median(function):
        return statistics.median(function(e) for e in epochs)

    def train_s(e):
        return e["time_s"] - e["eval_s"]

    return {
        "config": name,
        "procs": procs,
        "flags": list(extra),
        "env": env,
        "epochs": len(epochs),
        "samples_per_s": median(lambda e: e["samples_per_s"]),
        "samples_per_s_min": min(e["samples_per_s"] for e in epochs),
        "samples_per_s_max": max(e["samples_per_s"] for e in epochs),
        "time_s": median(lambda e: e["time_s"]),
        "compute_s": median(lambda e: e["compute_s"]),
        "comm_s": median(lambda e: e["comm_s"]),
        "comm_s_min": min(e["comm_s"] for e in epochs),
        "comm_s_max": max(e["comm_s"] for e in epochs),
        "other_s": median(lambda e: train_s(e) - e["compute_s"] - e["comm_s"] - e["io_s"]),
        "comm_share": median(lambda e: e["comm_s"] / train_s(e)),
        "comm_ms_per_step": median(lambda e: 1e3 * e["comm_s"] / e["steps"]),
        "run_dirs": [str(d) for d in run_dirs],
    }


def allreduce_worker(out):
    """Under ``mpirun``: time one gradient-sized ``Allreduce`` alone; rank 0 writes ``out``.

    The buffer is the strategy's (``n_params + 4`` doubles); a barrier before each call
    keeps the ranks' skew out, so this is the transfer itself, with nothing to wait for.
    """
    import numpy as np

    from mpigd import comm

    ranks = comm.world()
    buffer = np.zeros(n_params() + 4)
    seconds = []
    for index in range(40):
        comm.barrier(ranks.comm)
        start = time.perf_counter()
        comm.sum_across(ranks.comm, buffer)
        if index >= 5:
            seconds.append(time.perf_counter() - start)
    medians = comm.gather_to_root(ranks.comm, statistics.median(seconds))
    if ranks.is_root:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"procs": ranks.size, "bytes": buffer.nbytes, "median_s": max(medians)}
        out.write_text(json.dumps(record) + "\n")


def comm_worker(out, steps=40):
    """Under ``mpirun``: communication per step with and without overlap, skew removed.

    Two trainings on this rank's share of synthetic rows, one with overlapped buckets and
    one with a single Allreduce, take ``steps`` steps in turn (after 5 untimed ones). A
    barrier before each step keeps one rank from waiting for another's earlier work, so
    the ``comm`` time a step books is the transfer overlap did not hide (plus the skew
    within that step). Rank 0 writes the slowest rank's medians to ``out``.
    """
    import numpy as np

    from mpigd import comm

    ranks = comm.world()
    rank, size = ranks.rank, ranks.size
    X, y = synthetic_rows(TRAIN_ROWS // size)
    rows = np.sort(np.random.default_rng(rank).choice(len(X), BATCH // size, replace=False))
    runs = {mode: make_training("adam", X, y, overlap=mode == "overlap")
            for mode in ("overlap", "no_overlap")}  # fmt: skip
    seconds = {f"{mode}_{what}_s": [] for mode in runs for what in ("comm", "step")}
    for index in range(5 + steps):
        for mode, (_, objective, strategy, optimizer, params) in runs.items():
            comm.barrier(ranks.comm)
            objective.timer.take()
            start = time.perf_counter()
            one_step(strategy, optimizer, params, rows)
            if index >= 5:
                seconds[f"{mode}_step_s"].append(time.perf_counter() - start)
                seconds[f"{mode}_comm_s"].append(objective.timer.take()["comm_s"])
    medians = comm.gather_to_root(ranks.comm, {k: statistics.median(v) for k, v in seconds.items()})
    if ranks.is_root:
        record = {key: max(m[key] for m in medians) for key in medians[0]}
        record.update(procs=size, async_progress=os.environ.get("MPIR_CVAR_ASYNC_PROGRESS"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record) + "\n")


def time_worker(flag, procs, name, env=None):
    """Run this script's ``flag`` worker on ``procs`` ranks; the JSON it wrote."""
    out = RUNS / f"{name}.json"
    command = [mpirun(), "-n", str(procs), sys.executable, str(Path(__file__).resolve()),
               flag, "--out", str(out)]  # fmt: skip
    environment = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), **(env or {})}
    subprocess.run(command, env=environment, check=True, timeout=RUN_TIMEOUT_S)
    return json.loads(out.read_text())


def time_allreduce(procs):
    """Seconds of one gradient Allreduce alone on ``procs`` ranks (slowest rank's median)."""
    return time_worker("--allreduce-worker", procs, f"allreduce-P{procs}")


def time_comm(procs, async_progress):
    """Skew-free communication per step with and without overlap (:func:`comm_worker`)."""
    env, suffix = (ASYNC_PROGRESS, "-async") if async_progress else ({}, "")
    return time_worker("--comm-worker", procs, f"comm-P{procs}{suffix}", env)


def overlap_effects(rows):
    """Per rank count (and progress mode): comm_s without overlap / comm_s with it."""
    by_name = {row["config"]: row for row in rows}
    effects = {}
    for row in rows:
        name = row["config"]
        if not name.startswith("no-overlap") or row["procs"] < 2:
            continue
        with_overlap = by_name.get(name.removeprefix("no-"))
        if with_overlap is None:
            continue
        effects[name.removeprefix("no-overlap-")] = {
            "comm_s_no_overlap": row["comm_s"],
            "comm_s_overlap": with_overlap["comm_s"],
            "reduction": row["comm_s"] / max(with_overlap["comm_s"], 1e-12),
            "speedup": with_overlap["samples_per_s"] / row["samples_per_s"],
        }
    return effects


def run_train_part(args):
    """Part 2: every configuration ``--repeats`` times (repeats outermost); the record."""
    from mpigd.record import read_run

    data = ensure_dataset()
    found = configs(args)
    run_dirs = {config[0]: [] for config in found}
    for repeat in range(args.repeats):
        for config in found:
            print(f"  run {config[0]} r{repeat} ...", flush=True)
            run_dirs[config[0]].append(train(config, repeat, data, args.epochs))
    rows = [summarize(config, run_dirs[config[0]]) for config in found]
    effects = overlap_effects(rows)
    biggest = max(args.procs)
    default = effects.get(f"P{biggest}")
    first_run, _ = read_run(run_dirs[found[0][0]][0])
    return {
        "mpi_library": first_run.get("mpi_library"),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "configs": rows,
        "overlap": effects,
        "allreduce_alone": [time_allreduce(procs) for procs in args.procs if procs > 1],
        "skew_free": [
            time_comm(biggest, async_progress)
            for async_progress in (False, True)[: 1 + args.async_progress]
            if biggest > 1
        ],
        "meets_target": None if default is None or biggest < 2
        else default["reduction"] >= TARGET_OVERLAP_REDUCTION,
    }  # fmt: skip


def format_train(record):
    """Part 2 as text: one line per configuration, then the effect of overlap."""
    header = (
        f"{'config':<24}{'samples/s':>10}{'min':>8}{'max':>8}{'epoch s':>9}{'compute':>9}"
        f"{'comm':>8}{'other':>8}{'comm %':>8}{'comm ms/step':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in record["configs"]:
        lines.append(
            f"{r['config']:<24}{r['samples_per_s']:>10.0f}{r['samples_per_s_min']:>8.0f}"
            f"{r['samples_per_s_max']:>8.0f}{r['time_s']:>9.2f}{r['compute_s']:>9.2f}"
            f"{r['comm_s']:>8.2f}{r['other_s']:>8.2f}{100 * r['comm_share']:>7.1f}%"
            f"{r['comm_ms_per_step']:>13.2f}"
        )
    lines.append("times: seconds per epoch (medians); comm %: comm_s / (time_s - eval_s)")
    for alone in record["allreduce_alone"]:
        lines.append(
            f"one gradient Allreduce alone ({alone['bytes'] / 1e6:.1f} MB, P={alone['procs']}, "
            f"after a barrier): {1e3 * alone['median_s']:.2f} ms"
        )
    for c in record["skew_free"]:
        lines.append(
            f"barrier before each step, P={c['procs']}"
            f"{', async progress' if c['async_progress'] else ''}: comm/step "
            f"{1e3 * c['no_overlap_comm_s']:.2f} ms without overlap, "
            f"{1e3 * c['overlap_comm_s']:.2f} ms with "
            f"({c['no_overlap_comm_s'] / max(c['overlap_comm_s'], 1e-12):.2f}x less); step "
            f"{1e3 * c['no_overlap_step_s']:.1f} -> {1e3 * c['overlap_step_s']:.1f} ms"
        )
    for key, e in record["overlap"].items():
        lines.append(
            f"overlap at {key}: comm {e['comm_s_no_overlap']:.2f} s -> {e['comm_s_overlap']:.2f} s"
            f" ({e['reduction']:.2f}x less), samples/s x {e['speedup']:.2f}"
        )
    return "\n".join(lines)


# -- the whole benchmark -------------------------------------------------------------------


def environment(args):
    """Provenance of the measurement, with the machine's load (it may be shared)."""
    import numpy

    mpi = subprocess.run([mpirun(), "--version"], capture_output=True, text=True).stdout
    return {
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "blas": blas_name(),
        "mpirun": " ".join(mpi.split()[:5]),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "cpu_busy_start": cpu_busy(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def cpu_busy(seconds=1.0):
    """Share of all cores' time busy over ``seconds`` (Linux ``/proc/stat``), else None."""

    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def blas_name():
    """The BLAS numpy was built against, as numpy reports it."""
    import numpy

    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except (KeyError, TypeError):
        return "unknown"


def cpu_model():
    """The CPU's model name (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def verdicts(record):
    """One line per target: the figure and whether it is met."""
    lines = []
    step = record.get("step")
    if step:
        lines.append(
            f"target step / GEMM floor <= {TARGET_STEP_OVER_FLOOR} (1 rank, adam): "
            f"{step['step_over_floor_adam']:.2f}, min/min {step['step_over_floor_adam_min']:.2f} "
            f"({'met' if step['meets_target'] else 'MISSED'}; sgd: "
            f"{step['step_over_floor_sgd']:.2f})"
        )
    training = record.get("train")
    if training and training["meets_target"] is not None:
        reached = ", ".join(f"{k} {e['reduction']:.2f}x" for k, e in training["overlap"].items())
        lines.append(
            f"target overlap cuts visible comm >= {TARGET_OVERLAP_REDUCTION}x: {reached} "
            f"({'met' if training['meets_target'] else 'MISSED'} with the default progress)"
        )
    return lines


def main(argv=None):
    """Run the selected parts, print the tables, write the JSON record."""
    args = parse_args(argv)
    limit_threads(1)
    if args.allreduce_worker or args.comm_worker:
        (allreduce_worker if args.allreduce_worker else comm_worker)(args.out)
        return
    record = {"benchmark": "mlp", "model": f"mlp {FEATURES}-{'-'.join(map(str, HIDDEN))}-"
              f"{CLASSES}", "environment": environment(args)}  # fmt: skip
    record["targets"] = {
        "step_over_floor": TARGET_STEP_OVER_FLOOR,
        "overlap_comm_reduction": TARGET_OVERLAP_REDUCTION,
    }
    if args.part in ("all", "step"):
        print(f"part 1: one step (batch {BATCH}) against its GEMM floor, 1 rank, 1 thread")
        record["step"] = run_step_part(args)
        print(format_step(record["step"]))
    if args.part in ("all", "train"):
        print(f"part 2: mpigd train, adam, batch {BATCH}, {args.epochs} epoch(s) x "
              f"{args.repeats} repeat(s) per config")  # fmt: skip
        record["train"] = run_train_part(args)
        print(format_train(record["train"]))
    record["environment"]["load_average_end"] = os.getloadavg()
    record["environment"]["cpu_busy_end"] = cpu_busy()
    for line in verdicts(record):
        print(line)
    busy = [record["environment"][f"cpu_busy_{when}"] for when in ("start", "end")]
    if any(b is not None and b > 0.1 for b in busy):
        shares = " and ".join(f"{b:.0%}" for b in busy if b is not None)
        print(f"note: other processes kept the cores {shares} busy before and after the runs: "
              "the machine was shared, so times are noisy")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
