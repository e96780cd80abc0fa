"""OSU-style MPI microbenchmark: latency and bandwidth of the operations mpigd relies on.

Usage (from the repository root, at least 2 ranks)::

    mpirun -n P python -m experiments.commbench [--out results/commbench/pP.csv]
        [--max-bytes 4194304] [--quick]

Operations, on float64 buffers of 8 bytes to ``--max-bytes`` (powers of two):

=============  ===========================================================================
op             what one iteration is
=============  ===========================================================================
allreduce      ``MPI_Allreduce`` (sum) over all ranks
reduce         ``MPI_Reduce`` (sum) to rank 0
bcast          ``MPI_Bcast`` from rank 0
sendrecv       ping-pong between ranks 0 and 1; time = half the round trip (osu_latency)
sendrecv_bw    a window of 64 ``MPI_Isend`` from 0 to 1, then one ack (osu_bw); time per
               message
=============  ===========================================================================

Each (op, size) runs ``iterations`` times after a warm-up, between barriers. For the
collectives ``avg_us``, ``min_us`` and ``max_us`` are the mean, fastest and slowest rank's
time per iteration (microseconds); for the point-to-point ops they are rank 0's.
``MB_per_s`` is the message size divided by ``avg_us`` (1 MB = 10^6 bytes). Rank 0 writes
the CSV and, beside it, a JSON file with the MPI library, hosts and time.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

FIELDS = ("op", "ranks", "bytes", "iterations", "avg_us", "min_us", "max_us", "MB_per_s")
OPS = ("allreduce", "reduce", "bcast", "sendrecv", "sendrecv_bw")
WINDOW = 64  # messages in flight in the bandwidth test, as osu_bw
LARGE_BYTES = 8192  # messages above this size get fewer iterations


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default results/commbench/pP.csv")
    parser.add_argument("--max-bytes", type=int, default=4 << 20, help="largest message size")
    parser.add_argument("--iterations", type=int, default=1000, help="per small message")
    parser.add_argument("--quick", action="store_true", help="up to 64 KiB, 50 iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_bytes, args.iterations = min(args.max_bytes, 1 << 16), 50
    return args


def message_sizes(max_bytes: int) -> list[int]:
    """Powers of two from 8 bytes (one float64) to ``max_bytes``."""
    return [1 << k for k in range(3, max_bytes.bit_length()) if 1 << k <= max_bytes]


def time_collective(comm: MPI.Comm, op: str, n_bytes: int, iterations: int) -> float:
    """Seconds per iteration of collective ``op`` on this rank (all ranks call it)."""
    send = np.ones(n_bytes // 8)
    recv = np.empty_like(send)
    calls = {
        "allreduce": lambda: comm.Allreduce(send, recv, op=MPI.SUM),
        "reduce": lambda: comm.Reduce(send, recv, op=MPI.SUM, root=0),
        "bcast": lambda: comm.Bcast(send, root=0),
    }
    return _timed(comm, calls[op], iterations)


def time_pingpong(comm: MPI.Comm, n_bytes: int, iterations: int) -> float:
    """One-way latency in seconds between ranks 0 and 1 (others only synchronise)."""
    buffer = np.zeros(n_bytes // 8)

    def exchange():
        if comm.rank == 0:
            comm.Send(buffer, dest=1)
            comm.Recv(buffer, source=1)
        elif comm.rank == 1:
            comm.Recv(buffer, source=0)
            comm.Send(buffer, dest=0)

    return _timed(comm, exchange, iterations) / 2.0


def time_window(comm: MPI.Comm, n_bytes: int, iterations: int) -> float:
    """Seconds per message when rank 0 streams windows of messages to rank 1."""
    buffers = np.zeros((WINDOW, n_bytes // 8))
    ack = np.zeros(1)

    def window():
        if comm.rank == 0:
            MPI.Request.Waitall([comm.Isend(b, dest=1) for b in buffers])
            comm.Recv(ack, source=1)
        elif comm.rank == 1:
            MPI.Request.Waitall([comm.Irecv(b, source=0) for b in buffers])
            comm.Send(ack, dest=0)

    return _timed(comm, window, iterations) / WINDOW


def _timed(comm: MPI.Comm, call, iterations: int) -> float:
    """Seconds per call of ``call()`` on this rank, after ``iterations // 10`` warm-ups."""
    for _ in range(max(iterations // 10, 2)):
        call()
    comm.Barrier()
    start = MPI.Wtime()
    for _ in range(iterations):
        call()
    elapsed = MPI.Wtime() - start
    comm.Barrier()
    return elapsed / iterations


def measure(comm: MPI.Comm, sizes: list[int], small_iterations: int) -> list[dict]:
    """Collective: every op at every size; the CSV rows (complete on rank 0 only)."""
    rows = []
    for op in OPS:
        for n_bytes in sizes:
            iterations = small_iterations if n_bytes <= LARGE_BYTES else small_iterations // 10
            iterations = max(iterations, 5)
            if op == "sendrecv":
                seconds = time_pingpong(comm, n_bytes, iterations)
            elif op == "sendrecv_bw":
                seconds = time_window(comm, n_bytes, max(iterations // 10, 5))
            else:
                seconds = time_collective(comm, op, n_bytes, iterations)
            per_rank = comm.gather(seconds, root=0)
            if comm.rank == 0:
                if op.startswith("sendrecv"):
                    per_rank = per_rank[:1]
                avg = float(np.mean(per_rank))
                rows.append(
                    {
                        "op": op,
                        "ranks": comm.size,
                        "bytes": n_bytes,
                        "iterations": iterations,
                        "avg_us": 1e6 * avg,
                        "min_us": 1e6 * min(per_rank),
                        "max_us": 1e6 * max(per_rank),
                        "MB_per_s": n_bytes / avg / 1e6,
                    }
                )
    return rows


def main(argv=None) -> int:
    """Run the benchmark on ``MPI.COMM_WORLD``; rank 0 writes the CSV and JSON."""
    args = parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        if comm.rank == 0:
            print("commbench: error: needs at least 2 ranks (mpirun -n 2 ...)", file=sys.stderr)
        return 2
    hosts = comm.gather(MPI.Get_processor_name(), root=0)
    rows = measure(comm, message_sizes(args.max_bytes), args.iterations)
    if comm.rank == 0:
        out = args.out or Path(f"results/commbench/p{comm.size}.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        about = {
            "ranks": comm.size,
            "hosts": hosts,
            "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        out.with_suffix(".json").write_text(json.dumps(about, indent=2) + "\n")
        for row in rows:
            if row["bytes"] in (8, 1024, 1 << 20):
                print(f"{row['op']:<12}{row['bytes']:>9} B {row['avg_us']:>11.2f} us")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
