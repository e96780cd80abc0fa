"""Benchmark the ``cupy`` backend on one GPU against the hardware floors it should reach.

1. Logistic-regression loss+gradient of a ``--rows`` x ``--features`` float32 ``X``
   (default 4,000,000 x 100, 1.6 GB), against a device-to-device copy of the same bytes
   timed in the same run. A copy reads and writes every byte, so the time to read ``X``
   once at the copy's bandwidth, the floor of a single-pass gradient, is half the copy's
   time. Timed: ``gradient``, the whole :func:`kernels.gpu.linear_loss_grad` call as a
   training step makes it (parameters to the device, the single-pass kernel, the sum of
   the blocks' partials, the (d + 2) sums back through pinned memory, a stream
   synchronisation); ``kernel``, the device part alone: the single-pass kernel, or for
   rows too wide for its shared memory (more than 6,142 features) the two-GEMM
   path that :func:`kernels.gpu.linear_loss_grad` takes then (``kernel_path`` in the
   JSON). Target: ``gradient`` <= 1.25 x the read floor.
2. One MLP step, 784-512-512-10, batch 512, float32 (as MNIST): forward, softmax
   cross-entropy and backward, against its cuBLAS GEMM floor, the same eight GEMMs
   (three forward, three weight gradients, two input gradients) timed alone. Timed:
   ``step-device``, the backend's layer kernels with parameters and gradients on the
   device (what the GPU does per step); ``step-model``, :meth:`mpigd.models.mlp.MLP.
   loss_grad` as training calls it, with the float64 flat vectors on the host (5.4 MB of
   parameters in and of gradient out per step). Target: ``step-device`` <= 1.3 x the floor.

Times come from CUDA events: the median of ``--repeats`` timings after warm-up calls,
with min and max (the MLP: each timing covers ``--inner`` steps, divided). It prints a
table and writes ``results/bench_gpu.json`` (device name, versions, times, ratios). On a
machine without CuPy or a GPU it says so and exits with status 2, no traceback.

Usage::

    python experiments/bench_gpu.py [--rows N] [--features D] [--batch B] [--repeats R]
        [--inner K] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

TARGET_GRADIENT_RATIO = 1.25  # gradient time / time to read X once at the copy's bandwidth
TARGET_MLP_RATIO = 1.3  # MLP step time / time of its GEMMs alone
MLP_LAYERS = (784, 512, 512, 10)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows of X (default 4e6)")
    parser.add_argument("--features", type=int, default=100, help="columns of X (default 100)")
    parser.add_argument("--batch", type=int, default=512, help="MLP batch (default 512)")
    parser.add_argument("--repeats", type=int, default=15, help="timings per variant")
    parser.add_argument("--inner", type=int, default=20, help="MLP steps per timing")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    parser.add_argument("--out", type=Path, default=Path("results/bench_gpu.json"),
                        help="JSON output")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.inner = min(args.rows, 200_000), 5, 5
    return args


def single_pass_warps(features: int, max_warps: int, shared_bytes: int) -> int:
    """Warps per block of the single-pass linear kernel for rows of ``features`` values,
    as :func:`kernels.gpu.linear_loss_grad` sizes it: each warp keeps ``features + 2``
    float64 sums in shared memory, at most ``max_warps`` warps within ``shared_bytes``.

    0 when not even one warp fits (``features`` > 6,142 with 48 KiB): kernels.gpu then
    takes the two-GEMM path, and the benchmark must time that instead of launching the
    single-pass kernel with no warps (which divided by zero). Pure arithmetic, so it is
    tested without a GPU.
    """
    return min(max_warps, shared_bytes // (8 * (features + 2)))


def time_gpu(function, repeats, inner=1, warmup=2):
    """Seconds per call of ``function()`` by CUDA events: median, min, max over ``repeats``
    timings of ``inner`` calls each, after ``warmup`` untimed calls."""
    import cupy
    import numpy

    for _ in range(warmup):
        function()
    cupy.cuda.Device().synchronize()
    seconds = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(inner):
            function()
        stop.record()
        stop.synchronize()
        seconds.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3 / inner)
    return {"median_s": float(numpy.median(seconds)), "min_s": min(seconds),
            "max_s": max(seconds)}  # fmt: skip


def bench_gradient(args):
    """Logistic gradient against the device-to-device copy of X's bytes."""
    import cupy
    import numpy

    from kernels import gpu

    state = cupy.random.RandomState(args.seed)
    X = state.standard_normal((args.rows, args.features), dtype=cupy.float32)
    y = (state.random_sample(args.rows) < 0.5).astype(cupy.float64)
    params = 0.1 * numpy.random.default_rng(args.seed).standard_normal(args.features + 1)
    grad = numpy.empty_like(params)
    copy = cupy.empty_like(X)
    device_params = cupy.asarray(params)
    warps = single_pass_warps(args.features, gpu._MAX_WARPS, gpu._SHARED_BYTES)
    if warps:
        path = f"single-pass ({warps} warps per block)"

        def kernel():
            gpu._linear_single_pass("logistic", X, y, None, None, device_params, args.rows, warps)
    else:
        path = "two GEMMs (rows too wide for the single-pass kernel's shared memory)"

        def kernel():
            gpu._linear_two_gemms("logistic", X, y, None, None, device_params)

    timed = {
        "copy": time_gpu(lambda: copy.data.copy_from_device_async(X.data, X.nbytes), args.repeats),
        "gradient": time_gpu(
            lambda: gpu.linear_loss_grad("logistic", X, y, None, params, grad), args.repeats
        ),
        "kernel": time_gpu(kernel, args.repeats),
    }
    copy_s = timed["copy"]["median_s"]
    read_floor_s = copy_s / 2  # the copy moves 2 x nbytes (read + write)
    return {
        "rows": args.rows,
        "features": args.features,
        "bytes_of_X": int(X.nbytes),
        "kernel_path": path,
        "copy_bandwidth_gb_s": 2 * X.nbytes / copy_s / 1e9,
        "read_floor_s": read_floor_s,
        "times": timed,
        "gradient_over_read_floor": timed["gradient"]["median_s"] / read_floor_s,
        "kernel_over_read_floor": timed["kernel"]["median_s"] / read_floor_s,
        "gradient_over_copy": timed["gradient"]["median_s"] / copy_s,
        "target": TARGET_GRADIENT_RATIO,
    }


def bench_mlp(args):
    """One MLP step (device kernels; the model with host vectors) against its GEMMs."""
    import cupy
    import numpy

    from kernels import gpu
    from mpigd.models.mlp import MLP

    sizes, batch, f32 = MLP_LAYERS, args.batch, numpy.float32
    rng = numpy.random.default_rng(args.seed)
    X = cupy.asarray(rng.standard_normal((batch, sizes[0])), dtype=f32)
    labels = cupy.asarray(rng.integers(0, sizes[-1], batch))
    model = MLP(gpu, sizes[0], sizes[-1], hidden=sizes[1:-1])
    params = model.init_params(rng)
    host_grad = numpy.empty_like(params)
    weights = [cupy.asarray(rng.standard_normal((o, i)) * numpy.sqrt(2 / i), dtype=f32)
               for i, o in zip(sizes[:-1], sizes[1:], strict=True)]  # fmt: skip
    biases = [cupy.zeros(o, f32) for o in sizes[1:]]
    grads_W = [cupy.empty_like(W) for W in weights]
    grads_b = [cupy.empty_like(b) for b in biases]
    pre = [cupy.empty((batch, o), f32) for o in sizes[1:]]
    act = [X] + [cupy.empty((batch, o), f32) for o in sizes[1:-1]]
    d_act = [None] + [cupy.empty((batch, o), f32) for o in sizes[1:-1]]
    d_logits = cupy.empty((batch, sizes[-1]), f32)
    last = len(weights) - 1

    def step_device():
        for layer, (W, b) in enumerate(zip(weights, biases, strict=True)):
            gpu.dense_forward(act[layer], W, b, pre[layer])
            if layer < last:
                gpu.relu_forward(pre[layer], None, act[layer + 1])
        gpu.softmax_xent(pre[last], labels, None, d_logits)
        dZ = d_logits
        for layer in reversed(range(last + 1)):
            gpu.dense_backward(dZ, act[layer], weights[layer], grads_W[layer], grads_b[layer],
                               d_act[layer])  # fmt: skip
            if layer:
                dZ = gpu.relu_backward(d_act[layer], pre[layer - 1], None, d_act[layer])

    def gemms():
        for layer, W in enumerate(weights):
            cupy.matmul(act[layer], W.T, out=pre[layer])
        for layer in reversed(range(last + 1)):
            dZ = d_logits if layer == last else d_act[layer + 1]
            cupy.matmul(dZ.T, act[layer], out=grads_W[layer])
            if layer:
                cupy.matmul(dZ, weights[layer], out=d_act[layer])

    step_device()  # every buffer the GEMM floor reads now holds real values
    timed = {
        "gemm-floor": time_gpu(gemms, args.repeats, args.inner),
        "step-device": time_gpu(step_device, args.repeats, args.inner),
        "step-model": time_gpu(
            lambda: model.loss_grad(X, labels, None, params, host_grad), args.repeats, args.inner
        ),  # fmt: skip
    }
    floor = timed["gemm-floor"]["median_s"]
    return {
        "layers": list(sizes),
        "batch": batch,
        "params": model.n_params,
        "times": timed,
        "step_device_over_floor": timed["step-device"]["median_s"] / floor,
        "step_model_over_floor": timed["step-model"]["median_s"] / floor,
        "target": TARGET_MLP_RATIO,
    }


def describe_device():
    """Name, versions and clocks of the GPU in use."""
    import cupy

    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = properties["name"]
    return {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "memory_gib": round(properties["totalGlobalMem"] / 2**30, 1),
        "multiprocessors": properties["multiProcessorCount"],
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "host": platform.node(),
    }


def print_table(result):
    """The measurements, one line per variant, and the ratios against the targets."""
    gradient, mlp = result["gradient"], result["mlp"]

    def lines(times):
        for variant, t in times.items():
            print(f"  {variant:12s} {t['median_s'] * 1e3:9.3f} ms  "
                  f"(min {t['min_s'] * 1e3:.3f}, max {t['max_s'] * 1e3:.3f})")  # fmt: skip

    print(f"GPU: {result['device']['gpu']}  (CuPy {result['device']['cupy']})")
    print(f"logistic gradient, {gradient['rows']} x {gradient['features']} float32 "
          f"({gradient['bytes_of_X'] / 1e9:.2f} GB), copy bandwidth "
          f"{gradient['copy_bandwidth_gb_s']:.0f} GB/s (read + write):")  # fmt: skip
    lines(gradient["times"])
    print(f"  kernel path  {gradient['kernel_path']}")
    print(f"  read floor   {gradient['read_floor_s'] * 1e3:9.3f} ms  (copy / 2)")
    print(f"MLP step {'-'.join(map(str, mlp['layers']))}, batch {mlp['batch']}, float32:")
    lines(mlp["times"])
    g_ratio, m_ratio = gradient["gradient_over_read_floor"], mlp["step_device_over_floor"]
    print(f"gradient / read floor: {g_ratio:.2f} (kernel alone "
          f"{gradient['kernel_over_read_floor']:.2f}; target <= {TARGET_GRADIENT_RATIO}) "
          f"{'MET' if g_ratio <= TARGET_GRADIENT_RATIO else 'MISSED'}")  # fmt: skip
    print(f"MLP step on the device / GEMM floor: {m_ratio:.2f} (target <= {TARGET_MLP_RATIO}) "
          f"{'MET' if m_ratio <= TARGET_MLP_RATIO else 'MISSED'}; with the host flat vectors "
          f"{mlp['step_model_over_floor']:.2f}")  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    import kernels

    reason = kernels.gpu_unavailable_reason()
    if reason is not None:
        print(f"bench_gpu: cannot run here: {reason}. This benchmark needs an NVIDIA GPU and "
              "CuPy (pip install 'mpigd[gpu-cuda12]' or 'mpigd[gpu-cuda13]', one of them).",
              file=sys.stderr)  # fmt: skip
        return 2
    result = {"device": describe_device(), "gradient": bench_gradient(args)}
    result["mlp"] = bench_mlp(args)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
