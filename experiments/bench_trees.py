"""Benchmark mpigd's tree ensembles against LightGBM, XGBoost and scikit-learn.

The data are synthetic and nonlinear (``data synth`` draws from a linear or logistic
model, which says little about trees): standard normal features, float32, of which
:data:`INFORMATIVE` carry signal through a score ``f(x)`` made of :data:`TERMS` step and
interaction terms ``c * prod_j 1{s_j (x_j - t_j) > 0}`` over 1 to 3 features (random
features, thresholds ``t ~ N(0, 0.8^2)``, signs and ``c ~ N(0, 1)``), plus
``0.5 sin(2 x_0)`` and ``0.3 x_1``, scaled to unit variance. Binary: ``y ~
Bernoulli(sigmoid(SCALE f))``; multiclass: one score per class and ``y = argmax(SCALE
f_c + Gumbel noise)``. Training and test rows (``--rows``, ``--test-rows``) come from one
draw, are written once by mpigd's own writer under ``build/bench-trees/`` and read back
as numpy arrays for the baselines (untimed), so every library sees the same split.

In one invocation, on the same machine, with one thread per MPI rank, it measures:

(a) boosting, on a binary and a ``--classes``-class task: depth ``--max-depth`` (6),
    ``--max-bins`` (255) bins, learning rate ``--lr`` (0.1), ``--rounds`` (100) rounds,
    no L2, min 1 row and 1e-3 Hessian per leaf (``--multiclass-rounds`` gives the
    multiclass task, whose rounds grow a tree per class, fewer rounds). mpigd (``mpirun
    -n 1``; ``-n 2`` with ``--strategy allreduce`` and ``reduce-scatter``) after one
    untimed tiny run that fills Numba's cache: time per round is the median of
    ``time_s`` over the rounds of metrics.jsonl (which includes the train-loss pass and
    the test evaluation; ``ex eval`` subtracts ``eval_s``), and the whole process's wall
    time. Against LightGBM (``num_threads`` 1, 2; ``num_leaves`` 64 so that the depth
    binds), XGBoost (``tree_method="hist"``, ``nthread`` 1, 2, ``max_bin`` 256) and
    scikit-learn's HistGradientBoostingClassifier (OpenMP threads 1, 2): their time per
    round is the median gap between consecutive iterations (a callback; scikit-learn's
    verbose per-iteration times), their wall time the fit (binning included). Each
    library is printed with its ratio to LightGBM at equal cores and its test accuracy's
    difference from LightGBM's in points; the targets (mpigd at most
    :data:`TARGET_TIME_RATIO` x LightGBM's time per round at equal cores, accuracy within
    :data:`TARGET_ACCURACY_POINTS` points) are checked and printed.
(b) forest: ``--trees`` (100) trees of depth ``--forest-depth`` (10), sqrt features per
    node, bootstrap, on ``--forest-rows`` training rows of the binary task: mpigd on 1
    and 2 ranks against scikit-learn's RandomForestClassifier (``n_jobs`` 1, 2): wall
    time to train (mpigd: the process, and the sum of ``time_s``; scikit-learn: the fit)
    and test accuracy. Target: mpigd at least as fast at equal cores.
(c) communication as P grows: gbt on ``--comm-rows`` rows with ``--comm-features`` (50
    and 500) features, ``--comm-rounds`` rounds, on ``--comm-procs`` (1, 2, 4) ranks,
    ``allreduce`` and ``reduce-scatter``: mean ``comm_s``, ``histogram_mib``,
    ``histogram_s``, ``split_s`` and ``time_s`` per round, and the MiB a rank sends by the
    ring algorithms' cost model. A P above the core count is oversubscribed (ranks
    time-slice, waiting inflates ``comm_s``); the output says so.

Every baseline runs in its own process (this script with ``--baseline-worker``), with
``OMP_NUM_THREADS`` set to its thread count, so that the OpenMP runtimes of the libraries
never meet. It prints one table per part and writes ``results/bench_trees.json``. A
baseline whose package is missing is skipped with a note (``pip install lightgbm
xgboost``). Ratios measured in the same run are what to read on a shared machine; the
load average before the runs is recorded.

Usage::

    python experiments/bench_trees.py [--rows N] [--test-rows N] [--features D]
        [--classes C] [--rounds R] [--multiclass-rounds R] [--tasks binary multiclass]
        [--trees T]
        [--forest-rows N] [--comm-rows N] [--comm-features 50 500] [--comm-procs 1 2 4]
        [--parts abc] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # as a script, too
from experiments.launch import THREAD_VARIABLES, flags, mpirun, one_thread_env  # noqa: E402

CACHE = REPO / "build" / "bench-trees"
#: Targets of (a): mpigd's time per round / LightGBM's at equal cores, and the largest
#: accuracy gap to LightGBM in percentage points; of (b): mpigd's time / scikit-learn's.
TARGET_TIME_RATIO, TARGET_ACCURACY_POINTS, TARGET_FOREST_RATIO = 1.5, 0.5, 1.0
#: The nonlinear target: informative features, step/interaction terms, logit scale.
INFORMATIVE, TERMS, SCALE = 10, 30, 3.0
#: Rows generated at once (each block has its own seeded generator).
BLOCK_ROWS = 65_536
#: Smallest leaf: rows and Hessian sum (mpigd's defaults, given to every library).
MIN_ROWS_LEAF, MIN_HESSIAN_LEAF = 1, 1e-3
RUN_TIMEOUT_S = 3600
#: A 1-minute load average above this before the runs means the machine was not idle.
BUSY_LOAD = 0.5
#: (name, ranks, --strategy) of the mpigd runs of (a) and (b).
MPIGD_BOOST = (("mpigd", 1, "allreduce"), ("mpigd", 2, "allreduce"), ("mpigd", 2, "reduce-scatter"))
MPIGD_FOREST = (("mpigd", 1, "allreduce"), ("mpigd", 2, "allreduce"))
BOOST_BASELINES = ("lightgbm", "xgboost", "sklearn-hgb")
#: The package each baseline needs.
PACKAGES = {
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "sklearn-hgb": "sklearn",
    "sklearn-rf": "sklearn",
}


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rows", type=int, default=1_000_000, help="(a) training rows (1000000)")
    add("--test-rows", type=int, default=250_000, help="test rows of every task (250000)")
    add("--features", type=int, default=50, help="(a), (b) features (50)")
    add("--classes", type=int, default=10, help="classes of the multiclass task (10)")
    add(
        "--tasks",
        nargs="+",
        default=["binary", "multiclass"],
        choices=("binary", "multiclass"),
        help="(a) tasks (both)",
    )
    add("--rounds", type=int, default=100, help="(a) boosting rounds (100)")
    add("--multiclass-rounds", type=int, help="(a) rounds of the multiclass task (--rounds)")
    add("--max-depth", type=int, default=6, help="(a) tree depth (6)")
    add("--max-bins", type=int, default=255, help="bins per feature (255)")
    add("--lr", type=float, default=0.1, help="(a) learning rate, shrinkage (0.1)")
    add("--threads", type=int, nargs="+", default=[1, 2], help="cores of (a), (b): 1 2")
    add("--trees", type=int, default=100, help="(b) forest trees (100)")
    add("--forest-depth", type=int, default=10, help="(b) forest depth (10)")
    add("--forest-rows", type=int, default=200_000, help="(b) training rows (200000)")
    add("--comm-rows", type=int, default=100_000, help="(c) training rows (100000)")
    add("--comm-features", type=int, nargs="+", default=[50, 500], help="(c) d: 50 500")
    add("--comm-procs", type=int, nargs="+", default=[1, 2, 4], help="(c) ranks: 1 2 4")
    add("--comm-rounds", type=int, default=10, help="(c) boosting rounds (10)")
    add("--parts", default="abc", help="which parts to run (default abc)")
    add("--seed", type=int, default=1, help="seed of the data (1)")
    add("--quick", action="store_true", help="small sizes, few rounds: a smoke run")
    add("--out", type=Path, default=REPO / "results" / "bench_trees.json")
    add("--baseline-worker", help=argparse.SUPPRESS)
    add("--worker-threads", type=int, help=argparse.SUPPRESS)
    add("--worker-data", type=Path, help=argparse.SUPPRESS)
    add("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.test_rows, args.rounds, args.multiclass_rounds = 20_000, 5_000, 10, 5
        args.trees, args.forest_rows = 10, 20_000
        args.comm_rows, args.comm_rounds = 10_000, 3
    return args


# -- data ---------------------------------------------------------------------------


def _terms(rng, features: int) -> list:
    """The step and interaction terms of one score: (features, thresholds, signs, c)."""
    informative = min(INFORMATIVE, features)
    terms = []
    for _ in range(TERMS):
        order = min(int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])), informative)
        terms.append(
            (
                rng.choice(informative, order, replace=False),
                rng.normal(0.0, 0.8, order),
                rng.choice([-1.0, 1.0], order),
                rng.normal(),
            )
        )
    return terms


def _score(X, terms):
    """float64 (m,): the unscaled score of the rows ``X`` (module docstring)."""
    import numpy as np

    f = 0.5 * np.sin(2.0 * X[:, 0]) + 0.3 * X[:, min(1, X.shape[1] - 1)]
    for features, thresholds, signs, c in terms:
        f = f + c * np.all(signs * (X[:, features] - thresholds) > 0, axis=1)
    return f


def make_data(task: str, rows: int, test_rows: int, features: int, classes: int, seed: int) -> Path:
    """The directory of a cached dataset (``train/``, ``test/``), generated on first use."""
    import numpy as np

    from mpigd.data.writer import write_dataset

    n_classes = 2 if task == "binary" else classes
    out = CACHE / f"{task}-{rows}+{test_rows}x{features}-c{n_classes}-s{seed}"
    if (out / "test").is_dir():
        return out
    started = time.perf_counter()
    model_rng = np.random.default_rng([seed, 0])
    scores = [_terms(model_rng, features) for _ in range(1 if task == "binary" else n_classes)]
    total = rows + test_rows
    X = np.empty((total, features), np.float32)
    F = np.empty((total, len(scores)))
    blocks = np.random.SeedSequence([seed, 1]).spawn((total + BLOCK_ROWS - 1) // BLOCK_ROWS)
    for b, block_seed in enumerate(blocks):
        rows_b = slice(b * BLOCK_ROWS, min(total, (b + 1) * BLOCK_ROWS))
        X[rows_b] = np.random.default_rng(block_seed).standard_normal(
            (rows_b.stop - rows_b.start, features), dtype=np.float32
        )
        block = X[rows_b].astype(np.float64)
        F[rows_b] = np.column_stack([_score(block, terms) for terms in scores])
    F = SCALE * (F - F.mean(axis=0)) / F.std(axis=0)
    noise = np.random.default_rng([seed, 2])
    if task == "binary":
        y = (noise.random(total) < 1.0 / (1.0 + np.exp(-F[:, 0]))).astype(np.int64)
    else:
        y = np.argmax(F + noise.gumbel(size=F.shape), axis=1).astype(np.int64)
    attrs = {"generator": "experiments/bench_trees.py", "seed": seed}
    write_dataset(
        out / "train", X[:rows], y[:rows], task=task, n_classes=n_classes, shards=4, attrs=attrs
    )
    write_dataset(
        out / "test", X[rows:], y[rows:], task=task, n_classes=n_classes, shards=1, attrs=attrs
    )
    print(f"  wrote {out} ({time.perf_counter() - started:.1f} s)", flush=True)
    return out


def load_arrays(data: Path):
    """(X_train, y_train, X_test, y_test, n_classes) as numpy arrays, read once."""
    from mpigd.data import open_dataset, read_rows

    arrays = []
    for split in ("train", "test"):
        info = open_dataset(data / split)
        rows = read_rows(info, 0, info.n_rows)
        arrays += [rows.X, rows.y]
    return (*arrays, info.n_classes)


# -- mpigd ----------------------------------------------------------------------------


def train_mpigd(data: Path, procs: int, strategy: str, run_dir: Path, model_flags: list) -> dict:
    """One ``mpirun -n procs mpigd train`` run; its figures from run.json, metrics.jsonl."""
    from mpigd.record import read_run

    command = [
        mpirun(),
        "-n",
        str(procs),
        sys.executable,
        "-m",
        "mpigd",
        "train",
        "--data",
        str(data / "train"),
        "--test-data",
        str(data / "test"),
        "--strategy",
        strategy,
        *model_flags,
        "--progress",
        "quiet",
        "--overwrite",
        "--out",
        str(run_dir),
    ]
    load, started = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(
        command, env=one_thread_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)}\nfailed with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    info, epochs = read_run(run_dir)

    def median(key):
        return statistics.median(e.get(key, 0.0) for e in epochs)

    def mean(key):
        return statistics.fmean(e.get(key, 0.0) for e in epochs)

    return {
        "procs": procs,
        "strategy": strategy,
        "oversubscribed": procs > os.cpu_count(),
        "load_average_before": load,
        "run_dir": str(run_dir),
        "rounds": len(epochs),
        "per_round_s": median("time_s"),
        "per_round_ex_eval_s": statistics.median(e["time_s"] - e["eval_s"] for e in epochs),
        "parts_median_s": {
            key: median(key) for key in ("compute_s", "comm_s", "eval_s", "histogram_s", "split_s")
        },
        "parts_mean_s": {
            key: mean(key)
            for key in ("time_s", "compute_s", "comm_s", "eval_s", "histogram_s", "split_s")
        },
        "histogram_mib_per_round": mean("histogram_mib"),
        "train_s": sum(e["time_s"] for e in epochs),
        "wall_s": wall,
        "load_s": info.get("load_s"),
        "warmup_s": info.get("warmup_s"),
        "peak_rss_mib": info.get("peak_rss_mib"),
        "train_loss": epochs[-1]["train_loss"],
        "test_loss": epochs[-1].get("test_loss"),
        "test_accuracy": epochs[-1].get("test_accuracy"),
    }


def gbt_flags(args, rounds: int) -> list:
    """mpigd's flags of the boosting configuration of (a) and (c)."""
    return flags(model="gbt", rounds=rounds, max_depth=args.max_depth, lr=args.lr, l2=0,
                 min_rows_leaf=MIN_ROWS_LEAF, min_hessian_leaf=MIN_HESSIAN_LEAF,
                 max_bins=args.max_bins)  # fmt: skip


def forest_flags(args, trees: int) -> list:
    """mpigd's flags of the forest of (b), with ``trees`` trees."""
    return flags(model="forest", trees=trees, max_depth=args.forest_depth,
                 features_per_node="sqrt", criterion="gini", min_rows_leaf=MIN_ROWS_LEAF,
                 max_bins=args.max_bins)  # fmt: skip


def warm_up(args) -> None:
    """Fill Numba's cache of mpigd's tree kernels with a tiny gbt and forest run
    (untimed), so that no measured run pays the compilation (run.json ``warmup_s``)."""
    data = make_data("binary", 2_000, 500, args.features, args.classes, args.seed)
    for name, model in (("gbt", gbt_flags(args, 1)), ("forest", forest_flags(args, 1))):
        train_mpigd(data, 1, "allreduce", CACHE / "runs" / f"warm-up-{name}", model)


# -- baselines, each in its own process -------------------------------------------------


def run_baseline(name: str, threads: int, data: Path, args) -> dict:
    """Fit baseline ``name`` with ``threads`` threads in a child process; its figures, or
    ``{"skipped": why}`` when its package is missing."""
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        return {"skipped": f"{PACKAGES[name]} is not installed"}
    out = CACHE / "baselines" / f"{name}-T{threads}-{data.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    command = [sys.executable, __file__, "--baseline-worker", name, "--worker-threads",
               str(threads), "--worker-data", str(data), "--worker-out", str(out),
               *_model_args(args)]  # fmt: skip
    load = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)}\nfailed with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return {**json.loads(out.read_text()), "load_average_before": load}


def _model_args(args) -> list:
    """The flags a baseline worker needs to fit the same model."""
    return flags(rounds=args.rounds, max_depth=args.max_depth, max_bins=args.max_bins,
                 lr=args.lr, trees=args.trees, forest_depth=args.forest_depth)  # fmt: skip


def baseline_worker(args) -> None:
    """In the child: load the arrays (untimed), fit, predict, write the figures."""
    X, y, X_test, y_test, n_classes = load_arrays(args.worker_data)
    fit = {
        "lightgbm": fit_lightgbm,
        "xgboost": fit_xgboost,
        "sklearn-hgb": fit_hgb,
        "sklearn-rf": fit_forest,
    }[args.baseline_worker]
    result = fit(X, y, X_test, n_classes, args)
    labels = result.pop("labels")
    result["test_accuracy"] = float((labels == y_test).mean())
    result["threads"] = args.worker_threads
    args.worker_out.write_text(json.dumps(result, indent=2) + "\n")


def _labels(probabilities, n_classes: int):
    """Class ids from predicted probabilities: (n,) of class 1, or (n, C)."""
    import numpy as np

    if probabilities.ndim == 1:
        return (probabilities > 0.5).astype(np.int64)
    return np.argmax(probabilities.reshape(len(probabilities), n_classes), axis=1)


class _Stopwatch:
    """Wall seconds since it was made, and the cores busy meanwhile (CPU seconds of all
    this process's threads per wall second): whether a library used its threads."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        wall = time.perf_counter() - self.wall
        return wall, (time.process_time() - self.cpu) / wall


def _per_round(ticks: list) -> float:
    """Median gap between consecutive iteration-end times."""
    return statistics.median(b - a for a, b in zip(ticks, ticks[1:], strict=False))


def fit_lightgbm(X, y, X_test, n_classes: int, args) -> dict:
    """LightGBM, depth-bound (num_leaves 2^depth), mpigd's leaf limits, no L2."""
    import lightgbm as lgb

    params = {
        "max_depth": args.max_depth,
        "num_leaves": 2**args.max_depth,
        "min_data_in_leaf": MIN_ROWS_LEAF,
        "min_sum_hessian_in_leaf": MIN_HESSIAN_LEAF,
        "lambda_l2": 0.0,
        "max_bin": args.max_bins,
        "learning_rate": args.lr,
        "num_threads": args.worker_threads,
        "verbose": -1,
        "seed": 0,
    }
    if n_classes == 2:
        params["objective"] = "binary"
    else:
        params.update(objective="multiclass", num_class=n_classes)
    clock = _Stopwatch()
    train = lgb.Dataset(X, y, params=params).construct()
    bin_s, _ = clock.read()
    ticks = [time.perf_counter()]
    booster = lgb.train(
        params,
        train,
        num_boost_round=args.rounds,
        callbacks=[lambda env: ticks.append(time.perf_counter())],
    )

    def predict():
        return booster.predict(X_test, num_threads=args.worker_threads)

    return _boosting_result(clock, bin_s, ticks, n_classes, lgb.__version__, predict)


def _boosting_result(clock, bin_s: float, ticks: list, n_classes: int, version: str,
                     predict) -> dict:  # fmt: skip
    """A baseline's result once its fit is done (``clock`` started before binning):
    fit and binning times, the cores it kept busy, the time per round from the
    iterations' ``ticks``, and the test labels from ``predict()``'s probabilities, timed."""
    fit_s, fit_cores = clock.read()
    clock = _Stopwatch()
    labels = _labels(predict(), n_classes)
    return {"fit_s": fit_s, "fit_cores": fit_cores, "bin_s": bin_s,
            "per_round_s": _per_round(ticks), "predict_s": clock.read()[0], "labels": labels,
            "version": version}  # fmt: skip


def fit_xgboost(X, y, X_test, n_classes: int, args) -> dict:
    """XGBoost ``hist``, depthwise, max_bin 256, min_child_weight 1e-3, no L2."""
    import xgboost as xgb

    params = {
        "tree_method": "hist",
        "max_depth": args.max_depth,
        "max_bin": args.max_bins + 1,
        "min_child_weight": MIN_HESSIAN_LEAF,
        "lambda": 0.0,
        "eta": args.lr,
        "nthread": args.worker_threads,
        "verbosity": 0,
        "seed": 0,
    }
    if n_classes == 2:
        params["objective"] = "binary:logistic"
    else:
        params.update(objective="multi:softprob", num_class=n_classes)
    ticks = []  # the fit's start, then the end of each iteration

    class Tick(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            ticks.append(time.perf_counter())
            return False

    clock = _Stopwatch()
    train = xgb.QuantileDMatrix(X, y, max_bin=args.max_bins + 1, nthread=args.worker_threads)
    bin_s, _ = clock.read()
    ticks.append(time.perf_counter())
    booster = xgb.train(params, train, num_boost_round=args.rounds, callbacks=[Tick()])
    return _boosting_result(clock, bin_s, ticks, n_classes, xgb.__version__,
                            lambda: booster.inplace_predict(X_test))  # fmt: skip


def fit_hgb(X, y, X_test, n_classes: int, args) -> dict:
    """scikit-learn's HistGradientBoostingClassifier, depth-bound, no early stopping; its
    binning and per-iteration times from its verbose output."""
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_depth=args.max_depth,
        max_leaf_nodes=None,
        min_samples_leaf=MIN_ROWS_LEAF,
        l2_regularization=0.0,
        max_bins=args.max_bins,
        learning_rate=args.lr,
        max_iter=args.rounds,
        early_stopping=False,
        random_state=0,
        verbose=2,
    )
    log = io.StringIO()
    clock = _Stopwatch()
    with contextlib.redirect_stdout(log):
        model.fit(X, y)
    fit_s, fit_cores = clock.read()
    text = log.getvalue()
    rounds = [float(s) for s in re.findall(r"^\[\d+/\d+\].* in ([0-9.]+)s$", text, re.M)]
    binning = re.search(r"^Binning .*: ([0-9.]+) s$", text, re.M)
    clock = _Stopwatch()
    labels = model.predict(X_test)
    return {
        "fit_s": fit_s,
        "fit_cores": fit_cores,
        "bin_s": float(binning.group(1)) if binning else None,
        "per_round_s": statistics.median(rounds) if rounds else fit_s / args.rounds,
        "predict_s": clock.read()[0],
        "labels": labels,
        "version": sklearn.__version__,
    }


def fit_forest(X, y, X_test, n_classes: int, args) -> dict:
    """scikit-learn's RandomForestClassifier: sqrt features, bootstrap, same depth."""
    import sklearn
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=args.trees,
        max_depth=args.forest_depth,
        max_features="sqrt",
        bootstrap=True,
        min_samples_leaf=1,
        n_jobs=args.worker_threads,
        random_state=0,
    )
    clock = _Stopwatch()
    model.fit(X, y)
    fit_s, fit_cores = clock.read()
    clock = _Stopwatch()
    labels = model.predict(X_test)
    return {
        "fit_s": fit_s,
        "fit_cores": fit_cores,
        "predict_s": clock.read()[0],
        "labels": labels,
        "version": sklearn.__version__,
    }


# -- the parts ------------------------------------------------------------------------


def part_boosting(task: str, args) -> dict:
    """(a) on one task: every mpigd configuration and baseline; the table printed."""
    if task == "multiclass" and args.multiclass_rounds:  # its trees cost C times a round
        args = argparse.Namespace(**{**vars(args), "rounds": args.multiclass_rounds})
    data = make_data(task, args.rows, args.test_rows, args.features, args.classes, args.seed)
    rows = []
    for name, procs, strategy in MPIGD_BOOST:
        run_dir = CACHE / "runs" / f"gbt-{task}-P{procs}-{strategy}"
        result = train_mpigd(data, procs, strategy, run_dir, gbt_flags(args, args.rounds))
        rows.append({"library": name, "cores": procs, "config": strategy, **result})
        _progress(rows[-1])
    for name in BOOST_BASELINES:
        for threads in args.threads:
            rows.append(
                {
                    "library": name,
                    "cores": threads,
                    "config": f"{threads} thread(s)",
                    **run_baseline(name, threads, data, args),
                }
            )
            _progress(rows[-1])
    _compare(rows, "lightgbm", "per_round_s")
    _compare(rows, "lightgbm", "per_round_s", "per_round_ex_eval_s", name="ex_eval_ratio")
    for row in rows:
        if row["library"] == "mpigd" and "time_ratio" in row:
            row["meets_time_target"] = row["time_ratio"] <= TARGET_TIME_RATIO
            row["meets_accuracy_target"] = abs(row["accuracy_points"]) <= TARGET_ACCURACY_POINTS
    n_classes = 2 if task == "binary" else args.classes
    print(
        f"(a) boosting, {task} ({n_classes} classes), {args.rows:,} x {args.features} train, "
        f"{args.test_rows:,} test, depth {args.max_depth}, {args.max_bins} bins, lr "
        f"{args.lr}, {args.rounds} rounds"
    )
    print(_boost_table(rows))
    for row in rows:
        if "meets_time_target" in row:
            print(
                f"    {_label(row)}: time/round {row['time_ratio']:.2f}x LightGBM "
                f"(ex eval {row['ex_eval_ratio']:.2f}x) "
                f"({'met' if row['meets_time_target'] else 'MISSED'}, target <= "
                f"{TARGET_TIME_RATIO}); accuracy {row['accuracy_points']:+.2f} points "
                f"({'met' if row['meets_accuracy_target'] else 'MISSED'}, target within "
                f"{TARGET_ACCURACY_POINTS})"
            )
    print(flush=True)
    return {"task": task, "n_classes": n_classes, "rounds": args.rounds, "data": str(data),
            "rows": rows}  # fmt: skip


def part_forest(args) -> dict:
    """(b): mpigd's forest on 1 and 2 ranks against scikit-learn's, the table printed."""
    data = make_data(
        "binary", args.forest_rows, args.test_rows, args.features, args.classes, args.seed
    )
    rows = []
    for name, procs, strategy in MPIGD_FOREST:
        run_dir = CACHE / "runs" / f"forest-P{procs}-{strategy}"
        result = train_mpigd(data, procs, strategy, run_dir, forest_flags(args, args.trees))
        rows.append({"library": name, "cores": procs, "config": strategy, **result})
        _progress(rows[-1])
    for threads in args.threads:
        rows.append(
            {
                "library": "sklearn-rf",
                "cores": threads,
                "config": f"n_jobs={threads}",
                **run_baseline("sklearn-rf", threads, data, args),
            }
        )
        _progress(rows[-1])
    _compare(rows, "sklearn-rf", "fit_s", mpigd_key="wall_s")
    _compare(rows, "sklearn-rf", "fit_s", mpigd_key="train_s", name="train_ratio")
    for row in rows:
        if row["library"] == "mpigd" and "time_ratio" in row:
            row["meets_time_target"] = row["time_ratio"] <= TARGET_FOREST_RATIO
    print(
        f"(b) forest, binary, {args.forest_rows:,} x {args.features} train, {args.trees} trees, "
        f"depth {args.forest_depth}, sqrt features, bootstrap"
    )
    header = (
        f"{'library':<13}{'cores':>6}{'config':>16}{'wall s':>9}{'train s':>9}"
        f"{'x sklearn':>10}{'(train)':>8}{'cpu/wall':>9}{'test acc':>10}{'pts':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['library']:<13}{r['cores']:>6}  skipped: {r['skipped']}")
            continue
        wall = r.get("wall_s", r.get("fit_s"))
        train = r.get("train_s", r.get("fit_s"))
        lines.append(
            f"{r['library']:<13}{r['cores']:>6}{r['config']:>16}{wall:>9.2f}"
            f"{train:>9.2f}{_fmt(r.get('time_ratio'), '.2f'):>10}"
            f"{_fmt(r.get('train_ratio'), '.2f'):>8}{_fmt(r.get('fit_cores'), '.2f'):>9}"
            f"{100 * r['test_accuracy']:>10.2f}"
            f"{_fmt(r.get('accuracy_points'), '+.2f'):>7}"
        )
    print("\n".join(lines))
    print(
        "    wall s: mpigd the whole mpirun (start-up, load, binning, trees, per-tree\n"
        "      evaluation), scikit-learn the fit; train s: mpigd the sum of time_s (trees,\n"
        "      train loss and test evaluation after each); x sklearn (train): over\n"
        "      scikit-learn's fit at equal cores; cpu/wall: cores the fit kept busy"
    )
    for row in rows:
        if "meets_time_target" in row:
            print(
                f"    {_label(row)}: wall {row['time_ratio']:.2f}x scikit-learn's "
                f"({'met' if row['meets_time_target'] else 'MISSED'}, target <= "
                f"{TARGET_FOREST_RATIO}); its trees alone {row['train_ratio']:.2f}x"
            )
    print(flush=True)
    return {"data": str(data), "rows": rows}


def part_comm(args) -> dict:
    """(c): per-round communication of both strategies for each d and P."""
    rows = []
    for d in args.comm_features:
        data = make_data("binary", args.comm_rows, args.test_rows // 10, d, args.classes, args.seed)
        for procs in args.comm_procs:
            for strategy in ("allreduce", "reduce-scatter"):
                run_dir = CACHE / "runs" / f"comm-d{d}-P{procs}-{strategy}"
                result = train_mpigd(
                    data, procs, strategy, run_dir, gbt_flags(args, args.comm_rounds)
                )
                rows.append({"features": d, **result})
                print(f"  d={d} P={procs} {strategy}: {result['wall_s']:.1f} s", flush=True)
    print(
        f"(c) strategies' communication, gbt binary, {args.comm_rows:,} train rows, "
        f"{args.comm_rounds} rounds, depth {args.max_depth}, {args.max_bins} bins: means "
        "per round"
    )
    header = (
        f"{'d':>5}{'P':>3}{'strategy':>16}{'time s':>9}{'comm s':>9}{'hist s':>9}"
        f"{'split s':>9}{'hist MiB':>10}{'sent MiB':>10}{'comm/time':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        m = r["parts_mean_s"]
        crowded = " *" if r["oversubscribed"] else ""
        r["sent_mib_per_round"] = sent_mib(r["histogram_mib_per_round"], r["strategy"], r["procs"])
        lines.append(
            f"{r['features']:>5}{r['procs']:>3}{r['strategy']:>16}{m['time_s']:>9.4f}"
            f"{m['comm_s']:>9.4f}{m['histogram_s']:>9.4f}{m['split_s']:>9.4f}"
            f"{r['histogram_mib_per_round']:>10.2f}{r['sent_mib_per_round']:>10.2f}"
            f"{m['comm_s'] / m['time_s']:>10.1%}{crowded}"
        )
    print("\n".join(lines))
    print(
        "    hist MiB: the histograms a rank contributes to collectives per round\n"
        "    sent MiB: what a rank sends of them, by the ring algorithms' cost: Allreduce\n"
        "      2 (P-1)/P x hist MiB, Reduce-Scatter (P-1)/P x hist MiB (a model, not measured)\n"
        "    comm s: in MPI, including waiting for slower ranks; split s includes\n"
        "      reduce-scatter's Allgather of the best split per node"
    )
    if any(r["oversubscribed"] for r in rows):
        print(
            f"    * oversubscribed: P > {os.cpu_count()} cores, ranks time-slice, so comm s "
            "(waiting in MPI) is inflated"
        )
    print(flush=True)
    return {"rows": rows}


def sent_mib(histogram_mib: float, strategy: str, procs: int) -> float:
    """MiB a rank sends per round for ``histogram_mib`` of histograms under the ring
    algorithms: Allreduce (reduce-scatter then allgather) 2 (P-1)/P, Reduce-Scatter
    (P-1)/P of the data."""
    return (2 if strategy == "allreduce" else 1) * (procs - 1) / procs * histogram_mib


def _compare(rows: list, reference: str, key: str, mpigd_key: str | None = None,
             name: str = "time_ratio") -> None:  # fmt: skip
    """Add ``name``, the row's ``key`` (mpigd's: ``mpigd_key``) over the reference
    library's at equal cores, and ``accuracy_points`` (test accuracy minus the
    reference's, in points) to each row."""
    refs = {r["cores"]: r for r in rows if r["library"] == reference and "skipped" not in r}
    for row in rows:
        ref = refs.get(row["cores"])
        if ref is None or "skipped" in row:
            continue
        mine = row[mpigd_key] if mpigd_key and row["library"] == "mpigd" else row[key]
        row[name] = mine / ref[key]
        row["accuracy_points"] = 100 * (row["test_accuracy"] - ref["test_accuracy"])


def _boost_table(rows: list) -> str:
    """The rows of (a) as a fixed-width table."""
    header = (
        f"{'library':<13}{'cores':>6}{'config':>16}{'s/round':>9}{'ex eval':>9}"
        f"{'x LGBM':>8}{'wall s':>9}{'bin s':>7}{'cpu/wall':>9}{'test acc':>10}{'pts':>7}"
        f"{'hist':>8}{'split':>8}{'comm':>8}{'eval':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['library']:<13}{r['cores']:>6}  skipped: {r['skipped']}")
            continue
        mpigd = r["library"] == "mpigd"
        parts = r.get("parts_median_s", {})
        lines.append(
            f"{r['library']:<13}{r['cores']:>6}{r['config']:>16}{r['per_round_s']:>9.4f}"
            f"{_fmt(r.get('per_round_ex_eval_s'), '.4f'):>9}"
            f"{_fmt(r.get('time_ratio'), '.2f'):>8}{r.get('wall_s', r.get('fit_s')):>9.2f}"
            f"{_fmt(r.get('bin_s'), '.2f'):>7}{_fmt(r.get('fit_cores'), '.2f'):>9}"
            f"{100 * r['test_accuracy']:>10.2f}"
            f"{_fmt(r.get('accuracy_points'), '+.2f'):>7}"
            + "".join(
                f"{_fmt(parts.get(k) if mpigd else None, '.4f'):>8}"
                for k in ("histogram_s", "split_s", "comm_s", "eval_s")
            )
        )
    lines += [
        "    s/round: mpigd the median time_s (with its train-loss pass and test evaluation;",
        "      ex eval: without the evaluation), the others the median gap between iterations",
        "    x LGBM: s/round over LightGBM's at equal cores; pts: test accuracy minus LightGBM's",
        "    wall s: mpigd the whole mpirun (start-up, load, binning, compilation), the others",
        "      the fit with binning (bin s); cpu/wall: cores the fit kept busy (CPU / wall s)",
        "    hist .. eval: mpigd's median seconds per round in the histogram kernel, the split",
        "      choice (with reduce-scatter's Allgather), MPI, and the test evaluation",
    ]
    return "\n".join(lines)


def _label(row: dict) -> str:
    return f"{row['library']} {row['cores']} core(s) {row['config']}"


def _progress(row: dict) -> None:
    if "skipped" in row:
        print(f"  {_label(row)}: skipped ({row['skipped']})", flush=True)
    else:
        print(f"  {_label(row)}: {row.get('wall_s', row.get('fit_s')):.1f} s", flush=True)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def environment(args, load: float) -> dict:
    """Parameters and provenance of the measurement."""
    versions = {}
    for name in ("numpy", "lightgbm", "xgboost", "sklearn", "numba"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__

    def git(*command):
        return subprocess.run(["git", "-C", str(REPO), *command], capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    options = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if not k.startswith("worker") and k != "baseline_worker"
    }
    return {
        "options": options,
        "cpu_count": os.cpu_count(),
        "load_average_before": load,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": git("rev-parse", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "mpigd", "kernels").splitlines(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.baseline_worker:
        baseline_worker(args)
        return 0
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    load = os.getloadavg()[0]
    report = {"benchmark": "trees", "environment": environment(args, load)}
    warm_up(args)
    if "a" in args.parts:
        report["boosting"] = [part_boosting(task, args) for task in args.tasks]
    if "b" in args.parts:
        report["forest"] = part_forest(args)
    if "c" in args.parts:
        report["comm"] = part_comm(args)
    if load > BUSY_LOAD:
        print(
            f"NOTE: load average {load:.1f} before the runs: other processes share the "
            f"{os.cpu_count()} cores and inflate the times"
        )
    report["environment"]["load_average_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
