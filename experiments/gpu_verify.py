"""The Python steps of ``experiments/gpu_verify.sh`` (the verification run on a GPU machine).

Subcommands (each prints a short report and writes JSON with ``--out``; exit status 1
when a check fails, 2 when it cannot run here):

``kernels``
    Compiles every kernel of ``kernels/*.cu`` (NVRTC, through :mod:`kernels.gpu`) and
    reports its registers per thread, local memory (spills, in bytes), static shared
    memory and the largest block it allows. Fails only when a kernel does not compile.
``paths``
    The GPU code paths the unit tests cannot reach on a large GPU, against the numpy
    reference in float64: many rows per warp (2,000,000 rows; and the grid forced onto
    one multiprocessor), the widest single-pass rows (6,142 features) and the first
    two-GEMM width (6,143), softmax over many GEMM chunks.
``compare RUN_A RUN_B``
    The parameters of two run directories' ``model.h5`` (and their ``metrics.jsonl``
    train losses) within ``--rtol``; with ``--eval A.json B.json``, the ``mpigd eval``
    outputs of both too. Needs no GPU (the dry run on a CPU compares numba with numpy).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

KERNEL_SOURCES = Path(__file__).resolve().parents[1] / "kernels"


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels a ``.cu`` source defines: those written out
    and those a ``#define`` macro's instances name (their first argument)."""
    written = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\(',
                         source)  # fmt: skip
    macros = re.findall(r"#define (\w+)\((?:\w+)[^)]*\)[^\n]*\\\n(?:[^\n]*\\\n)*?[^\n]*__global__",
                        source)  # fmt: skip
    names = [name for name in written if name != "NAME" and not name.startswith("__")]
    for macro in macros:
        names += re.findall(rf"^{macro}\((\w+)", source, re.MULTILINE)
    return list(dict.fromkeys(names))


def _need_gpu() -> None:
    import kernels

    reason = kernels.gpu_unavailable_reason()
    if reason is not None:
        print(f"gpu_verify: needs CuPy and a GPU: {reason}", file=sys.stderr)
        sys.exit(2)


def check_kernels() -> dict:
    """Every kernel compiled, with its resource use (see the module docstring)."""
    _need_gpu()
    from kernels import gpu

    device = gpu._device_id()
    report, failures = [], []
    for source in sorted(KERNEL_SOURCES.glob("*.cu")):
        for name in kernel_names(source.read_text()):
            started = time.perf_counter()
            try:
                function = gpu._function(source.name, name, device)
                attributes = dict(getattr(function, "attributes", {}) or {})
                row = {
                    "file": source.name,
                    "kernel": name,
                    "registers": int(function.num_regs),
                    "local_bytes": int(function.local_size_bytes),
                    "shared_bytes": int(function.shared_size_bytes),
                    "max_threads_per_block": int(function.max_threads_per_block),
                    "compile_s": round(time.perf_counter() - started, 2),
                    "attributes": {key: int(value) for key, value in attributes.items()},
                }
            except Exception as exc:  # noqa: BLE001 - a compile error is the finding
                failures.append(f"{source.name}:{name}: {type(exc).__name__}: {exc}")
                continue
            report.append(row)
            print(f"{source.name:18s} {name:24s} regs {row['registers']:3d}  local (spills) "
                  f"{row['local_bytes']:4d} B  shared {row['shared_bytes']:5d} B  max block "
                  f"{row['max_threads_per_block']}")  # fmt: skip
    for failure in failures:
        print(f"FAILED {failure}")
    return {"kernels": report, "failures": failures}


def _close(got, expected, rtol) -> float:
    """Largest difference relative to the largest entry of ``expected``."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = max(float(np.abs(expected).max()) if expected.size else 0.0, 1e-300)
    return float(np.abs(got - expected).max() / scale) if expected.size else 0.0


def check_paths(rtol: float) -> dict:
    """The kernels' paths out of the unit tests' reach, against :mod:`kernels.reference`."""
    _need_gpu()
    from kernels import gpu, reference

    rng = np.random.default_rng(0)
    results, failures = [], []

    def linear(n, d, dtype, loss="logistic", weighted=True, subset=True):
        X = rng.standard_normal((n, d)).astype(dtype)
        y = rng.standard_normal(n) if loss == "squared" else (rng.random(n) < 0.5) * 1.0
        weights = rng.uniform(0.5, 2.0, n) if weighted else None
        params = 0.05 * rng.standard_normal(d + 1)
        rows = rng.integers(0, n, n // 2) if subset else None
        expected_grad, grad = np.empty(d + 1), np.empty(d + 1)
        expected = reference.linear_loss_grad(loss, X, y, weights, params, expected_grad, rows)
        device = [gpu.to_device(a) for a in (X, y, weights)]
        got = gpu.linear_loss_grad(loss, *device, params, grad, rows=rows)
        return got, expected, grad, expected_grad

    def softmax(n, d, C, dtype):
        X = rng.standard_normal((n, d)).astype(dtype)
        y = rng.integers(0, C, n)
        params = 0.1 * rng.standard_normal(C * (d + 1))
        rows = rng.integers(0, n, n // 2)
        expected_grad, grad = np.empty_like(params), np.empty_like(params)
        expected = reference.softmax_loss_grad(X, y, None, params, expected_grad, rows=rows)
        got = gpu.softmax_loss_grad(gpu.to_device(X), gpu.to_device(y), None, params, grad,
                                    rows=rows)  # fmt: skip
        return got, expected, grad, expected_grad

    def on_one_multiprocessor(d, dtype):
        """The grid capped at one multiprocessor's blocks: hundreds of rows per warp."""
        real = gpu._multiprocessors
        gpu._multiprocessors = lambda device: 1
        try:
            return linear(20_000, d, dtype)
        finally:
            gpu._multiprocessors = real

    cases = [
        ("linear many rows per warp, 2e6 x 16 f32", lambda: linear(2_000_000, 16, np.float32)),
        ("linear many rows per warp, 1e6 x 200 f64",
         lambda: linear(1_000_000, 200, np.float64, "squared", subset=False)),
        ("linear widest single pass, 4000 x 6142 f32", lambda: linear(4000, 6142, np.float32)),
        ("linear first two-GEMM width, 4000 x 6143 f64",
         lambda: linear(4000, 6143, np.float64, "hinge")),
        ("softmax many chunks, 300000 x 40, C=10 f32",
         lambda: softmax(300_000, 40, 10, np.float32)),
    ]  # fmt: skip
    for d, dtype in ((7, np.float64), (130, np.float32), (300, np.float64), (6142, np.float64)):
        label = f"linear on one SM, 20000 x {d} {np.dtype(dtype).name}"
        cases.append((label, lambda d=d, dtype=dtype: on_one_multiprocessor(d, dtype)))
    for label, run in cases:
        started = time.perf_counter()
        try:
            got, expected, grad, expected_grad = run()
        except Exception as exc:  # noqa: BLE001 - report and go on
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            print(f"FAILED {label}: {type(exc).__name__}: {exc}")
            continue
        row = {
            "case": label,
            "loss_rel_diff": abs(got - expected) / max(abs(expected), 1e-300),
            "grad_rel_diff": _close(grad, expected_grad, rtol),
            "seconds": round(time.perf_counter() - started, 2),
        }
        ok = row["loss_rel_diff"] <= rtol and row["grad_rel_diff"] <= rtol
        row["ok"] = ok
        results.append(row)
        if not ok:
            failures.append(label)
        print(f"{'ok    ' if ok else 'FAILED'} {label}: loss {row['loss_rel_diff']:.1e}, "
              f"gradient {row['grad_rel_diff']:.1e} (rtol {rtol:g}; "
              f"{row['seconds']} s)")  # fmt: skip
    return {"rtol": rtol, "cases": results, "failures": failures}


def _params(run_dir: Path) -> np.ndarray:
    import h5py

    with h5py.File(run_dir / "model.h5", "r") as handle:
        return handle["params"][()]


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines if "train_loss" in line]


def compare_runs(run_a: Path, run_b: Path, rtol: float, evals=None) -> dict:
    """Parameters, train losses and (with ``evals``) eval metrics of two runs, within rtol."""
    failures = []
    a, b = _params(run_a), _params(run_b)
    result = {"run_a": str(run_a), "run_b": str(run_b), "rtol": rtol, "n_params": int(a.size)}
    if a.shape != b.shape:
        failures.append(f"parameter shapes differ: {a.shape} vs {b.shape}")
    else:
        result["params_rel_diff"] = _close(b, a, rtol)
        if not result["params_rel_diff"] <= rtol:
            failures.append(f"parameters differ by {result['params_rel_diff']:.2e}")
    losses_a, losses_b = _losses(run_a), _losses(run_b)
    if len(losses_a) != len(losses_b):
        failures.append(f"{len(losses_a)} vs {len(losses_b)} epochs")
    elif losses_a:
        result["loss_rel_diff"] = _close(losses_b, losses_a, rtol)
        if not result["loss_rel_diff"] <= rtol:
            failures.append(f"train losses differ by {result['loss_rel_diff']:.2e}")
    if evals:
        metrics = [json.loads(Path(path).read_text().strip().splitlines()[-1]) for path in evals]
        keys = sorted(k for k, v in metrics[0].items() if isinstance(v, (int, float)))
        result["eval"] = {key: [m.get(key) for m in metrics] for key in keys}
        for key in keys:
            x, y = metrics[0][key], metrics[1].get(key)
            if not isinstance(y, (int, float)) or abs(x - y) > rtol * max(abs(x), 1.0):
                failures.append(f"eval {key}: {x} vs {y}")
    result["failures"] = failures
    verdict = "ok    " if not failures else "FAILED"
    print(f"{verdict} {run_a.parent.name}, {run_a.name} vs {run_b.name}: parameters "
          f"{result.get('params_rel_diff', float('nan')):.1e}, train loss "
          f"{result.get('loss_rel_diff', float('nan')):.1e}"
          + ("" if not failures else f" ({'; '.join(failures)})"))  # fmt: skip
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON output")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("kernels")
    paths = commands.add_parser("paths")
    # 1e-9: float64 sums over 2,000,000 rows in another order than numpy's.
    paths.add_argument("--rtol", type=float, default=1e-9)
    compare = commands.add_parser("compare")
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--rtol", type=float, default=1e-10)
    compare.add_argument("--eval", nargs=2, metavar=("A_JSON", "B_JSON"))
    args = parser.parse_args(argv)
    if args.command == "kernels":
        result = check_kernels()
    elif args.command == "paths":
        result = check_paths(args.rtol)
    else:
        result = compare_runs(args.run_a, args.run_b, args.rtol, args.eval)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
