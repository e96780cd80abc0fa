"""Benchmark the ``numba`` backend's loss+gradient kernels on one core.

For each case (logistic regression and C-class softmax, float64 and float32 ``X``) this
times one full pass over ``X`` of:

- ``mpigd``: the ``numba`` backend kernel (:mod:`kernels.cpu`);
- ``numpy``: the plain numpy version (``z = X @ w + b``, loss, residual, ``X.T @ r``), which
  reads ``X`` twice and, for a float32 ``X`` with float64 parameters, lets numpy widen
  ``X`` to a float64 temporary;
- ``numpy-f32`` (float32 only): the same with the parameters cast to float32, i.e. float32
  arithmetic, for reference: it does not meet the kernels' float64 contract;
- ``stream``: ``numpy.dot(x, x)`` over ``X``'s buffer as a 1-D array, one streaming read,
  the memory-bandwidth floor.

It prints a table and writes ``results/bench_kernels.json``. Times are the median of
``--repeats`` calls after one warm-up call, with min and max; ratios matter, not absolute
times. An MPI rank is one core, so BLAS is limited to one thread unless ``--threads N``.

The logistic rows are issue 16's targets: the kernel at most :data:`TARGET_STREAM_RATIO`
times one streaming read of the same ``X`` (float64, and float32 against its float32
stream). That ratio is measured in pairs, a stream read then a kernel call back to back,
``--repeats`` pairs (at least 5), and reported as the median of the pairs' ratios with
their spread (min-max): on a shared machine the memory bandwidth drifts between seconds,
and a pair sees the same bandwidth in both halves.

Usage::

    python experiments/bench_kernels.py [--rows N] [--features D] [--classes C]
        [--repeats R] [--threads N] [--quick] [--out FILE]
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

#: Issue 16: logistic loss+gradient at most this many times one streaming read of X, for
#: float64 X and for float32 X (against the float32 stream), 1 thread.
TARGET_STREAM_RATIO = 1.5
MIN_REPEATS = 5


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="rows of X (default 400000)")
    parser.add_argument("--features", type=int, default=100, help="columns of X (default 100)")
    parser.add_argument("--classes", type=int, default=10, help="softmax classes (default 10)")
    parser.add_argument(
        "--repeats", type=int, default=9, help=f"timed calls per variant (>= {MIN_REPEATS})"
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    parser.add_argument(
        "--out", type=Path, default=Path("results/bench_kernels.json"), help="JSON output"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.repeats = 20_000, 50, MIN_REPEATS
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS}")
    return args


def limit_threads(n_threads):
    """Set the BLAS/OpenMP thread count; must run before numpy is first imported."""
    if "numpy" in sys.modules:
        raise RuntimeError("limit_threads must run before numpy is imported")
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(n_threads)


def time_calls(function, repeats):
    """Seconds per call of ``function()``: median, min and max of ``repeats`` after a warm-up."""
    import numpy

    function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return {
        "median_s": float(numpy.median(seconds)),
        "min_s": min(seconds),
        "max_s": max(seconds),
    }


def time_ratio(function, floor, repeats):
    """Ratio ``function() time / floor() time`` over ``repeats`` back-to-back pairs.

    One warm-up call of each first. Returns the median, min and max of the pairs' ratios
    and the median seconds of each side.
    """
    import numpy

    floor()
    function()
    ratios, kernel_s, floor_s = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        floor()
        middle = time.perf_counter()
        function()
        stop = time.perf_counter()
        floor_s.append(middle - start)
        kernel_s.append(stop - middle)
        ratios.append((stop - middle) / (middle - start))
    return {
        "median": float(numpy.median(ratios)),
        "min": min(ratios),
        "max": max(ratios),
        "pairs": repeats,
        "kernel_median_s": float(numpy.median(kernel_s)),
        "stream_median_s": float(numpy.median(floor_s)),
    }


def plain_logistic(X, y, params):
    """Logistic loss sum and gradient the plain numpy way (reads ``X`` twice)."""
    import numpy

    z = X @ params[:-1] + params[-1]
    loss = numpy.sum(numpy.logaddexp(0.0, z) - y * z)
    residual = 0.5 * (1.0 + numpy.tanh(0.5 * z)) - y  # sigmoid(z) - y, overflow-free
    return loss, X.T @ residual, residual.sum()


def plain_softmax(X, y, params):
    """Softmax cross-entropy sum and gradient the plain numpy way (reads ``X`` twice)."""
    import numpy

    n_rows, n_features = X.shape
    n_classes = params.shape[0] // (n_features + 1)
    W = params[: n_classes * n_features].reshape(n_classes, n_features)
    Z = X @ W.T + params[n_classes * n_features :]
    Z -= Z.max(axis=1, keepdims=True)
    E = numpy.exp(Z)
    norm = E.sum(axis=1)
    picked = numpy.arange(n_rows), y
    loss = numpy.sum(numpy.log(norm) - Z[picked])
    R = E / norm[:, None]
    R[picked] -= 1.0
    return loss, R.T @ X, R.sum(axis=0)


def make_problem(kind, rows, features, classes, dtype, seed):
    """Random ``X``, labels and small parameters for ``kind`` ``logistic`` or ``softmax``."""
    import numpy

    rng = numpy.random.default_rng(seed)
    X = rng.standard_normal((rows, features)).astype(dtype)
    if kind == "logistic":
        y = (rng.random(rows) < 0.5).astype(numpy.float64)
        params = 0.1 * rng.standard_normal(features + 1)
    else:
        y = rng.integers(0, classes, rows)
        params = 0.1 * rng.standard_normal(classes * (features + 1))
    return X, y, params


def variants(kind, X, y, params):
    """The timed callables of one case, by name."""
    import numpy

    from kernels import cpu

    grad = numpy.empty_like(params)
    flat = X.reshape(-1)
    plain = plain_logistic if kind == "logistic" else plain_softmax
    if kind == "logistic":
        kernel = lambda: cpu.linear_loss_grad("logistic", X, y, None, params, grad)  # noqa: E731
    else:
        kernel = lambda: cpu.softmax_loss_grad(X, y, None, params, grad)  # noqa: E731
    timed = {
        "mpigd": kernel,
        "numpy": lambda: plain(X, y, params),
        "stream": lambda: numpy.dot(flat, flat),
    }
    if X.dtype == numpy.float32:
        params32 = params.astype(numpy.float32)
        y32 = y.astype(numpy.float32) if kind == "logistic" else y
        timed["numpy-f32"] = lambda: plain(X, y32, params32)
    return timed


def run_case(kind, dtype, args):
    """Time every variant of one case; return its JSON record."""
    X, y, params = make_problem(kind, args.rows, args.features, args.classes, dtype, args.seed)
    timed = variants(kind, X, y, params)
    timings = {name: time_calls(f, args.repeats) for name, f in timed.items()}
    for timing in timings.values():
        timing["GB_per_s"] = X.nbytes / timing["median_s"] / 1e9
    kernel_s = timings["mpigd"]["median_s"]
    case = {
        "kind": kind,
        "dtype": X.dtype.name,
        "X_bytes": X.nbytes,
        "timings": timings,
        "speedup_over_numpy": timings["numpy"]["median_s"] / kernel_s,
        "kernel_over_stream": kernel_s / timings["stream"]["median_s"],
    }
    if kind == "logistic":
        paired = time_ratio(timed["mpigd"], timed["stream"], args.repeats)
        case["kernel_over_stream_paired"] = paired
        case["meets_stream_target"] = paired["median"] <= TARGET_STREAM_RATIO
    return case


def format_table(cases):
    """The results as a fixed-width text table."""
    header = (
        f"{'case':<18}{'variant':<11}{'median ms':>10}{'min ms':>9}{'max ms':>9}"
        f"{'GB/s':>7}{'x stream':>10}{'speedup':>9}"
    )
    lines = [header, "-" * len(header)]
    for case in cases:
        stream_s = case["timings"]["stream"]["median_s"]
        kernel_s = case["timings"]["mpigd"]["median_s"]
        for name, t in case["timings"].items():
            lines.append(
                f"{case['kind'] + ' ' + case['dtype']:<18}{name:<11}"
                f"{1e3 * t['median_s']:>10.2f}{1e3 * t['min_s']:>9.2f}{1e3 * t['max_s']:>9.2f}"
                f"{t['GB_per_s']:>7.1f}{t['median_s'] / stream_s:>10.2f}"
                f"{t['median_s'] / kernel_s:>9.2f}"
            )
    lines.append("x stream: time / one streaming read of X;  speedup: time / mpigd time")
    return "\n".join(lines)


def environment(args):
    """Provenance of the measurement."""
    import numba
    import numpy

    return {
        "rows": args.rows,
        "features": args.features,
        "classes": args.classes,
        "repeats": args.repeats,
        "threads": args.threads,
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None):
    """Run every case, print the table, write the JSON record."""
    args = parse_args(argv)
    limit_threads(args.threads)
    import numpy

    cases = [
        run_case(kind, dtype, args)
        for kind in ("logistic", "softmax")
        for dtype in (numpy.float64, numpy.float32)
    ]
    print(format_table(cases))
    print(f"issue 16 targets: logistic kernel / its stream <= {TARGET_STREAM_RATIO}, 1 thread")
    for case in cases:
        line = f"{case['kind']} {case['dtype']}: "
        line += f"speedup over numpy {case['speedup_over_numpy']:.2f}x"
        paired = case.get("kernel_over_stream_paired")
        if paired is None:
            line += f", kernel / stream {case['kernel_over_stream']:.2f}"
        else:
            verdict = "meets target" if case["meets_stream_target"] else "MISSES target"
            line += (
                f", kernel / stream {paired['median']:.2f} (min {paired['min']:.2f}, max "
                f"{paired['max']:.2f}; median of {paired['pairs']} back-to-back pairs, "
                f"kernel {1e3 * paired['kernel_median_s']:.2f} ms, stream "
                f"{1e3 * paired['stream_median_s']:.2f} ms) <= {TARGET_STREAM_RATIO}: {verdict}"
            )
        print(line)
    record = {
        "benchmark": "kernels",
        "environment": environment(args),
        "targets": {"logistic_kernel_over_stream": TARGET_STREAM_RATIO},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
