"""OSU-style MPI microbenchmark: latency and bandwidth of the operations mpigd relies on.

Usage (from the repository root, at least 2 ranks)::

    mpirun -n P python -m experiments.commbench [--out results/commbench/pP.csv]
        [--max-bytes 4194304] [--iterations 1000] [--quick]

Operations, on float64 buffers of 8 bytes to ``--max-bytes`` (powers of two):

=============  ===========================================================================
op             what one iteration is
=============  ===========================================================================
allreduce      ``MPI_Allreduce`` (sum) over all ranks
reduce         ``MPI_Reduce`` (sum) to rank 0
bcast          ``MPI_Bcast`` from rank 0
sendrecv       ping-pong between ranks 0 and 1; time = half the round trip (osu_latency)
sendrecv_bw    one message of a window of 64 ``MPI_Isend`` from 0 to 1, each window
               closed by one ack (osu_bw); time = the window's time / 64
=============  ===========================================================================

Each (op, size) runs ``iterations`` times after a warm-up, between barriers. The CSV
columns, one row per (op, size):

==============  =========================================================================
column          meaning (unit)
==============  =========================================================================
op, ranks       the operation and the number of ranks in the communicator
bytes           message size: the buffer every rank sends, receives or reduces (bytes)
iterations      timed repetitions (sendrecv_bw: messages, 64 per window)
avg_us          time per iteration, mean over the ranks that take part (microseconds);
                for sendrecv the one-way latency, for sendrecv_bw the time per message
min_us, max_us  the fastest and the slowest of those ranks (microseconds)
GB_per_s        ``bytes / (avg_us 1e-6) / 1e9``: message bytes per second of the op
                (the "algorithm bandwidth"; 1 GB = 10^9 bytes)
==============  =========================================================================

The ranks that take part are all ranks for the collectives, ranks 0 and 1 for the
point-to-point ops. Rank 0 writes the CSV, beside it a JSON file with the MPI library,
hosts and time, and the figure (PNG and PDF, see :func:`plot_commbench`): time per
operation and bandwidth against message size, log-log, one line per op.
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

from experiments.plots import new_figure, save_figure

FIELDS = ("op", "ranks", "bytes", "iterations", "avg_us", "min_us", "max_us", "GB_per_s")
OPS = ("allreduce", "reduce", "bcast", "sendrecv", "sendrecv_bw")
WINDOW = 64  # messages in flight in the bandwidth test, as osu_bw
OP_LABELS = {
    "allreduce": "Allreduce",
    "reduce": "Reduce to rank 0",
    "bcast": "Bcast from rank 0",
    "sendrecv": "Send/Recv ping-pong (one way)",
    "sendrecv_bw": "Isend stream, window of 64",
}
PLOT_NOTE = (
    "Time: mean over the ranks taking part of the time per operation (ping-pong: half the"
    " round trip). Bandwidth: message bytes / time per operation (1 GB = 10^9 bytes);\n"
    "for the collectives the algorithm bandwidth, not the bus bandwidth. The Isend stream"
    " measures bandwidth only (its time per message is not a latency)."
)
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
                windows = max(iterations // 10, 5)
                seconds, iterations = time_window(comm, n_bytes, windows), windows * WINDOW
            else:
                seconds = time_collective(comm, op, n_bytes, iterations)
            per_rank = comm.gather(seconds, root=0)
            if comm.rank == 0:
                if op.startswith("sendrecv"):
                    per_rank = per_rank[:2]  # the other ranks only synchronise
                rows.append(_row(op, comm.size, n_bytes, iterations, per_rank))
    return rows


def _row(op: str, ranks: int, n_bytes: int, iterations: int, seconds: list[float]) -> dict:
    """One CSV row from the seconds per iteration of each rank that took part."""
    avg = float(np.mean(seconds))
    return {
        "op": op,
        "ranks": ranks,
        "bytes": n_bytes,
        "iterations": iterations,
        "avg_us": 1e6 * avg,
        "min_us": 1e6 * min(seconds),
        "max_us": 1e6 * max(seconds),
        "GB_per_s": n_bytes / avg / 1e9,
    }


def plot_commbench(csv_path: Path) -> Path:
    """Draw the figure of a commbench CSV beside it (``.png`` and ``.pdf``); return the PNG.

    Left: ``avg_us`` (time per operation) against message size, log-log, one line per
    op (sendrecv_bw is left out: its time per message in a stream is not a latency).
    Right: ``GB_per_s`` against message size, log-log, every op. The title names the
    rank count and, from the JSON beside the CSV when it is there, the MPI library.
    """
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    about = csv_path.with_suffix(".json")
    library = json.loads(about.read_text())["mpi_library"] if about.is_file() else None
    fig = new_figure(width_in=12.0)
    latency, bandwidth = fig.subplots(1, 2)
    for i, op in enumerate(OPS):
        mine = [row for row in rows if row["op"] == op]
        if not mine:
            continue
        style = {"color": f"C{i}", "marker": "os^vD"[i], "label": OP_LABELS[op]}
        sizes = [int(row["bytes"]) for row in mine]
        if op != "sendrecv_bw":
            latency.plot(sizes, [float(row["avg_us"]) for row in mine], **style)
        bandwidth.plot(sizes, [float(row["GB_per_s"]) for row in mine], **style)
    sizes = sorted({int(row["bytes"]) for row in rows})
    for ax, title, label in (
        (latency, "latency", "time per operation (us)"),
        (bandwidth, "bandwidth", "bandwidth (GB/s)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes[::3], [_size_label(n) for n in sizes[::3]])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    ranks = rows[0]["ranks"] if rows else "?"
    library = " ".join(library.split()) if library else None
    fig.suptitle(f"MPI microbenchmark on {ranks} ranks" + (f", {library}" if library else ""))
    return save_figure(fig, csv_path.with_suffix(""), PLOT_NOTE)


def _size_label(n_bytes: int) -> str:
    """``8 B``, ``4 KiB``, ``2 MiB``: a power-of-two size for an axis."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes // scale} {unit}"
    return f"{n_bytes} B"


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
        figure = plot_commbench(out)
        print(f"{'op':<12}{'bytes':>9}  {'us per op':>10}  {'GB/s':>8}")
        for row in rows:
            if row["bytes"] in (8, 1024, 1 << 20):
                print(
                    f"{row['op']:<12}{row['bytes']:>9}  {row['avg_us']:>10.2f}  "
                    f"{row['GB_per_s']:>8.3f}"
                )
        print(f"wrote {out} {out.with_suffix('.json')} {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
