"""Benchmark mpigd on sparse, high-dimensional data against its floors and scikit-learn.

On one synthetic binary problem (``--rows`` x ``--features`` CSR, ``--nnz-per-row``
nonzeros per row with power-law feature frequencies, made once by ``mpigd data synth
--sparse`` and cached under ``build/bench-sparse/``) it measures, in one invocation:

(a) kernel: one full pass of the L2-free logistic loss and gradient on all rows, 1 core:
    mpigd's ``numba`` kernel, ``scipy.sparse`` doing the same two products (``X @ w``,
    ``X.T @ r``: the ``numpy`` backend), one streaming read of ``data`` and ``indices``
    (the memory floor), and ``gather``: the kernel's forward product ``X @ w`` alone
    (``linear_decision``), whose reads of ``w`` at the data's column ids are the random
    accesses the floor does not pay; median of ``--repeats`` with min and max;
(b) exchange: for global batch sizes B and ``--ranks`` P, the time of the sparse
    (Allgatherv of the batch's (index, value) pairs) and the dense (Allreduce of d+1
    doubles) exchange of one real mini-batch gradient, against what the alpha-beta
    model calibrated at start-up predicts, the crossover batch size of each, and how
    much slower auto's pick is than the faster of the two;
(c) time to f* + 1e-3 of the L2 logistic objective (``--l2``, 1e-6 by default):
    mpigd's L-BFGS with its defaults on P ranks, run to its ``--tol`` (cumulative epoch
    ``time_s`` from metrics.jsonl; data loading and start-up excluded and reported
    apart), whose final objective is f*, against scikit-learn's
    ``LogisticRegression(solver="lbfgs")`` on the same CSR matrix, 1 core, timed from
    the call of ``fit`` to the first objective evaluation at or below the target (its
    objective is traced as SciPy calls it; the value is checked against mpigd's code);
(d) memory: each rank's peak resident memory (run.json ``peak_rss_mib``) against the
    bytes of its share of the nonzeros (``data`` + ``indices`` + ``indptr``).

It prints each part as a table and writes ``results/bench_sparse.json``. One MPI rank is
one core; ratios are stable on a noisy machine, absolute times are not.

Usage::

    python experiments/bench_sparse.py [--rows N] [--features D] [--nnz-per-row K]
        [--ranks P] [--l2 L] [--repeats R] [--parts abcd] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # as a script, too
from experiments.bench_kernels import time_calls  # noqa: E402
from experiments.launch import mpirun, one_thread_env, total_rows  # noqa: E402

CACHE = REPO / "build" / "bench-sparse"
#: The objective gap the comparison (c) times: f* + GAP.
GAP = 1e-3
#: Target of (a): kernel time / floor; of (c): scikit-learn's time / mpigd's.
TARGET_FLOOR_RATIO, TARGET_SPEEDUP = 2.0, 2.0
#: The test split of the synthetic data (unused but for its rows' share).
TEST_FRACTION = 0.01
#: Global batch sizes of (b).
BATCH_SIZES = (16, 64, 256, 1024, 4096, 16384, 65536)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    parser.add_argument("--features", type=int, default=2**20, help="features d")
    parser.add_argument("--nnz-per-row", type=int, default=40, help="nonzeros per row")
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks of (b), (c), (d)")
    parser.add_argument("--l2", type=float, default=1e-6, help="L2 coefficient of (c)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls in (a), (b)")
    parser.add_argument("--epochs", type=int, default=300, help="most L-BFGS steps in (c)")
    parser.add_argument(
        "--lbfgs-precondition",
        default="diagonal",
        choices=("diagonal", "none"),
        help="(c): mpigd's L-BFGS preconditioner (default: mpigd's default)",
    )
    parser.add_argument("--sklearn-max-iter", type=int, default=3000, help="(c): max_iter")
    parser.add_argument(
        "--sklearn-budget-s",
        type=float,
        default=1800.0,
        help="(c): most seconds scikit-learn may take to reach the target",
    )
    parser.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_sparse.json")
    parser.add_argument("--exchange-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exchange-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.nnz_per_row = 20_000, 2**16, 20
        args.repeats, args.epochs = 3, 60
    return args


def dataset(args) -> Path:
    """The training shards of the benchmark problem (``--rows`` of them; 1% more rows
    make the test split), made on first use."""
    out = CACHE / f"{args.rows}x{args.features}-k{args.nnz_per_row}-s{args.seed}"
    if not (out / "train").is_dir():
        subprocess.run(
            [sys.executable, "-m", "mpigd", "data", "synth", "--sparse", "--task", "binary",
             "--rows", str(total_rows(args.rows, TEST_FRACTION)), "--features",
             str(args.features), "--nnz-per-row", str(args.nnz_per_row), "--test-fraction",
             str(TEST_FRACTION), "--shards", "4", "--seed", str(args.seed), "--out", str(out)],
            check=True, env=one_thread_env(),
        )  # fmt: skip
    return out / "train"


def load_all(train: Path):
    """Every training row in this process: (CSR X, float64 0/1 y)."""
    import numpy as np

    from mpigd.data import open_dataset, read_rows

    info = open_dataset(train)
    rows = read_rows(info, 0, info.n_rows)
    return rows.X, rows.y.astype(np.float64)


# -- (a) kernel ----------------------------------------------------------------------


def part_kernel(X, y, args) -> dict:
    """(a): the numba kernel, scipy.sparse and the streaming floor on one full pass."""
    import numpy as np

    from kernels import cpu, reference

    rng = np.random.default_rng(0)
    params = 0.01 * rng.standard_normal(X.shape[1] + 1)
    grad = np.empty_like(params)
    data, indices = X.data, X.indices
    timed = {
        "mpigd": lambda: cpu.linear_loss_grad("logistic", X, y, None, params, grad),
        "scipy.sparse": lambda: reference.linear_loss_grad("logistic", X, y, None, params, grad),
        "gather": lambda: cpu.linear_decision(X, params),
        "floor": lambda: (np.add.reduce(data), np.bitwise_or.reduce(indices)),
    }
    timings = {name: time_calls(f, args.repeats) for name, f in timed.items()}
    floor = timings["floor"]["median_s"]
    result = {
        "nnz": int(X.nnz),
        "bytes_streamed": int(data.nbytes + indices.nbytes),
        "timings": timings,
        "mpigd_over_floor": timings["mpigd"]["median_s"] / floor,
        "scipy_over_mpigd": timings["scipy.sparse"]["median_s"] / timings["mpigd"]["median_s"],
        "mpigd_over_gather": timings["mpigd"]["median_s"] / timings["gather"]["median_s"],
    }
    result["meets_target"] = result["mpigd_over_floor"] <= TARGET_FLOOR_RATIO
    lines = [
        f"(a) kernel, one full pass, {X.shape[0]:,} x {X.shape[1]:,}, nnz {X.nnz:,}",
        f"{'variant':<14}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'x floor':>9}",
    ]
    for name, t in timings.items():
        lines.append(f"{name:<14}{1e3 * t['median_s']:>10.1f}{1e3 * t['min_s']:>9.1f}"
                     f"{1e3 * t['max_s']:>9.1f}{t['median_s'] / floor:>9.2f}")  # fmt: skip
    lines.append(
        f"mpigd / floor {result['mpigd_over_floor']:.2f} (target <= {TARGET_FLOOR_RATIO}); "
        f"scipy / mpigd {result['scipy_over_mpigd']:.2f}; mpigd / gather "
        f"{result['mpigd_over_gather']:.2f}"
    )
    print("\n".join(lines), flush=True)
    return result


# -- (b) exchange crossover (run under mpirun by part_exchange) -------------------------


def exchange_worker(train: Path, args) -> None:
    """On every rank of ``mpirun -n P``: time the sparse and the dense exchange of real
    mini-batch gradients (the touched columns of random batches of this rank's rows) at
    each global batch size, and the auto exchange's predictions; rank 0 writes JSON."""
    import numpy as np
    from mpi4py import MPI

    import kernels
    from mpigd.data import load_rank_rows, open_dataset
    from mpigd.features import batch_features
    from mpigd.models import create_model
    from mpigd.strategies.sparse_exchange import GradientExchange, pair_doubles
    from mpigd.timing import PhaseTimer

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    info = open_dataset(train)
    X = load_rank_rows(info, rank, size).X
    model = create_model("logreg", kernels.get_backend("numpy"), info.n_features, "binary", 2)
    n = model.n_params
    exchanges = {mode: GradientExchange(comm, n, mode, PhaseTimer()) for mode in ("auto",
                 "sparse", "dense")}  # fmt: skip
    exchanges["auto"].calibrate()
    calibration, dense_out = exchanges["auto"].calibration, np.empty(n)
    rng = np.random.default_rng(rank)
    rows = []
    for batch in BATCH_SIZES:
        local = max(1, batch // size)
        indices = model.touched_params(batch_features(X, rng.integers(0, X.shape[0], local)))
        values = rng.standard_normal(len(indices))
        pairs = np.array(comm.allgather(len(indices)))
        measured = {"sparse": [], "dense": []}
        for _ in range(args.repeats):
            for mode in measured:
                comm.Barrier()
                start = time.perf_counter()
                exchanges[mode].sum(indices, values, 0.0, local, dense_out)
                measured[mode].append(comm.allreduce(time.perf_counter() - start, MPI.MAX))
        sparse_bytes = 8 * sum(pair_doubles(int(k), np.int32) for k in pairs)
        rows.append({
            "batch": batch, "pairs": int(pairs.sum()), "sparse_bytes": sparse_bytes,
            "dense_bytes": 8 * n,
            "sparse_s": float(np.median(measured["sparse"])),
            "dense_s": float(np.median(measured["dense"])),
            "predicted_sparse_s": calibration.sparse_s(size, sparse_bytes, int(pairs.sum())),
            "predicted_dense_s": calibration.dense_s(size, n),
            "auto_sparse": exchanges["auto"].prefers_sparse(pairs),
        })  # fmt: skip
    if rank == 0:
        args.exchange_out.write_text(json.dumps({"ranks": size, "rows": rows,
                                                 "calibration": calibration.fields()}))  # fmt: skip


def part_exchange(train: Path, args) -> dict:
    """(b): launch :func:`exchange_worker` on ``args.ranks`` ranks; the crossovers."""
    out = CACHE / f"exchange-P{args.ranks}.json"
    subprocess.run([mpirun(), "-n", str(args.ranks), sys.executable, __file__, "--exchange-worker",
                    "--exchange-out", str(out), "--repeats", str(args.repeats),
                    *_data_flags(args)], check=True, env=one_thread_env())  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    result["measured_crossover_batch"] = _crossover(rows, "sparse_s", "dense_s")
    result["predicted_crossover_batch"] = _crossover(rows, "predicted_sparse_s",
                                                     "predicted_dense_s")  # fmt: skip
    print(f"(b) exchange of one mini-batch gradient, {result['ranks']} ranks "
          f"(d + 1 = {rows[0]['dense_bytes'] // 8:,})")  # fmt: skip
    print(f"{'batch':>7}{'pairs':>10}{'sparse ms':>11}{'dense ms':>10}{'pred sparse':>13}"
          f"{'pred dense':>12}{'auto':>8}")  # fmt: skip
    for row in rows:
        print(f"{row['batch']:>7}{row['pairs']:>10,}{1e3 * row['sparse_s']:>11.2f}"
              f"{1e3 * row['dense_s']:>10.2f}{1e3 * row['predicted_sparse_s']:>13.2f}"
              f"{1e3 * row['predicted_dense_s']:>12.2f}"
              f"{'sparse' if row['auto_sparse'] else 'dense':>8}")  # fmt: skip
    for row in rows:  # auto's pick against the faster of the two, as measured
        chosen = row["sparse_s"] if row["auto_sparse"] else row["dense_s"]
        row["auto_over_best"] = chosen / min(row["sparse_s"], row["dense_s"])
    result["auto_over_best_max"] = max(row["auto_over_best"] for row in rows)
    print(f"    dense is faster from batch {result['measured_crossover_batch']} (measured), "
          f"{result['predicted_crossover_batch']} (predicted); auto's pick is at most "
          f"{result['auto_over_best_max']:.2f}x the faster exchange", flush=True)  # fmt: skip
    return result


def _crossover(rows: list[dict], sparse: str, dense: str):
    """The smallest batch size from which the dense exchange is faster, or None."""
    for row in rows:
        if row[dense] < row[sparse]:
            return row["batch"]
    return None


def _data_flags(args) -> list[str]:
    """The flags that name the benchmark problem, for a child process."""
    return ["--rows", str(args.rows), "--features", str(args.features),
            "--nnz-per-row", str(args.nnz_per_row), "--seed", str(args.seed)]  # fmt: skip


# -- (c) time to target and (d) memory ------------------------------------------------


def logistic_objective(X, y, params, l2: float) -> float:
    """f = mean logistic loss + (l2/2)||w||^2, the intercept unpenalised (mpigd's)."""
    import numpy as np

    from kernels import cpu

    grad = np.empty_like(params)
    loss = cpu.linear_loss_grad("logistic", X, y, None, params, grad)
    return loss / X.shape[0] + 0.5 * l2 * float(params[:-1] @ params[:-1])


def train_mpigd(train: Path, args, out: Path) -> tuple[list[dict], dict]:
    """mpigd's L-BFGS on ``args.ranks`` ranks: (metrics lines, run.json)."""
    command = [mpirun(), "-n", str(args.ranks), sys.executable, "-m", "mpigd", "train",
               "--data", str(train), "--model", "logreg", "--optimizer", "lbfgs",
               "--l2", str(args.l2), "--epochs", str(args.epochs), "--progress", "quiet",
               "--lbfgs-precondition", args.lbfgs_precondition,
               "--overwrite", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, env=one_thread_env())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return lines, json.loads((out / "run.json").read_text())


class _ReachedTarget(Exception):
    """Raised inside scikit-learn's objective once it is at or below the target."""


def sklearn_time_to(X, y, args, target: float) -> dict:
    """scikit-learn's lbfgs on the same CSR matrix, 1 core, until its objective is at or
    below ``target``: the seconds from the call of ``fit`` to that evaluation.

    scikit-learn minimises mean loss + 1/(2 C n) ||w||^2 (its ``LinearModelLoss``, with
    the intercept unpenalised) through ``scipy.optimize.minimize``; with C = 1/(n l2)
    that is mpigd's objective. The objective it passes to SciPy is wrapped to record
    each value and stop the fit at the target, so one fit gives the time; that the two
    objectives agree is checked at the last point, which is returned.
    """
    import warnings

    import scipy.optimize
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / (X.shape[0] * args.l2), solver="lbfgs", tol=1e-12,
                               max_iter=args.sklearn_max_iter)  # fmt: skip
    minimize, trace, start = scipy.optimize.minimize, [], time.perf_counter()

    def traced_minimize(fun, x0, *a, **k):
        def traced(x, *fa):
            value, grad = fun(x, *fa)
            trace.append((time.perf_counter() - start, float(value), x.copy()))
            if value <= target or time.perf_counter() - start > args.sklearn_budget_s:
                raise _ReachedTarget
            return value, grad

        return minimize(traced, x0, *a, **k)

    scipy.optimize.minimize = traced_minimize
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
    except _ReachedTarget:
        pass
    finally:
        scipy.optimize.minimize = minimize
    seconds, value, last = trace[-1]
    ours = logistic_objective(X, y, last, args.l2)
    return {"seconds": seconds if value <= target else None, "objective": value,
            "evaluations": len(trace), "objective_by_mpigd_code": ours}  # fmt: skip


def part_time_to_target(X, y, train: Path, args) -> dict:
    """(c) and (d): mpigd's and scikit-learn's time to f* + GAP; memory per rank.

    mpigd runs first, to its ``--tol``; its best objective is f* (its final gradient
    norm says how close that is to the optimum). scikit-learn then runs until it
    reaches f* + GAP, or for at most ``--sklearn-budget-s`` seconds.
    """
    run_dir = CACHE / "runs" / f"lbfgs-{args.lbfgs_precondition}-P{args.ranks}"
    lines, record = train_mpigd(train, args, run_dir)
    f_star = min(line["train_loss"] for line in lines)
    target = f_star + GAP
    elapsed, mpigd_s, mpigd_epochs = 0.0, None, None
    for line in lines:
        elapsed += line["time_s"]
        if line["train_loss"] <= target:
            mpigd_s, mpigd_epochs = elapsed, line["epoch"]
            break
    sklearn = sklearn_time_to(X, y, args, target)
    result = {
        "f_star": f_star,
        "mpigd_final_grad_norm_inf": lines[-1].get("grad_norm_inf"),
        "target": target,
        "mpigd_s": mpigd_s,
        "mpigd_steps": mpigd_epochs,
        "mpigd_load_s": record.get("load_s"),
        "mpigd_warmup_s": record.get("warmup_s"),
        "sklearn": sklearn,
        "sklearn_s": sklearn["seconds"],
        "speedup": sklearn["seconds"] / mpigd_s if mpigd_s and sklearn["seconds"] else None,
    }
    result["meets_target"] = bool(result["speedup"] and result["speedup"] >= TARGET_SPEEDUP)
    print(f"(c) time to f* + {GAP:g}, f* = {f_star:.8f} (mpigd's final max|g| "
          f"{result['mpigd_final_grad_norm_inf']:.1e}), l2 {args.l2:g}\n"
          f"    mpigd L-BFGS, {args.ranks} ranks: {_seconds(mpigd_s)} ({mpigd_epochs} steps) "
          f"(+ load {record.get('load_s', 0):.1f} s, warm-up {record.get('warmup_s', 0):.1f} s)\n"
          f"    scikit-learn lbfgs, 1 core: {_seconds(sklearn['seconds'])} "
          f"({sklearn['evaluations']} evaluations; f {sklearn['objective']:.8f}, by mpigd's "
          f"code {sklearn['objective_by_mpigd_code']:.8f})\n"
          f"    speedup {_ratio(result['speedup'])} (target >= {TARGET_SPEEDUP})",
          flush=True)  # fmt: skip
    result["memory"] = part_memory(train, record, args.ranks)
    return result


def part_memory(train: Path, record: dict, ranks: int) -> list[dict]:
    """(d): each rank's peak RSS against the bytes of its share of the nonzeros."""
    import numpy as np

    from mpigd.data import open_dataset, read_rows, row_range

    info = open_dataset(train)
    rows = []
    for rank, peak in enumerate(record.get("peak_rss_mib", [])):
        start, stop = row_range(info.n_rows, rank, ranks)
        X = read_rows(info, start, stop).X
        share = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        model = (info.n_features + 1) * np.dtype(np.float64).itemsize
        rows.append({"rank": rank, "peak_rss_mib": peak, "nnz": int(X.nnz),
                     "share_mib": share / 2**20, "model_copy_mib": model / 2**20})  # fmt: skip
    print("(d) memory per rank: peak RSS against its share of the nonzeros")
    for row in rows:
        print(f"    rank {row['rank']}: peak {row['peak_rss_mib']:.0f} MiB, share "
              f"{row['share_mib']:.0f} MiB ({row['nnz']:,} nonzeros), one model copy "
              f"{row['model_copy_mib']:.0f} MiB")  # fmt: skip
    return rows


def _seconds(value) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    train = dataset(args)
    if args.exchange_worker:
        exchange_worker(train, args)
        return 0
    X, y = load_all(train)
    report = {"rows": args.rows, "features": args.features, "nnz_per_row": args.nnz_per_row,
              "ranks": args.ranks, "l2": args.l2}  # fmt: skip
    if "a" in args.parts:
        report["kernel"] = part_kernel(X, y, args)
    if "b" in args.parts:
        report["exchange"] = part_exchange(train, args)
    if "c" in args.parts or "d" in args.parts:
        report["time_to_target"] = part_time_to_target(X, y, train, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
