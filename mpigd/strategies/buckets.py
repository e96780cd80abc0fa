"""Gradient buckets for overlapping communication with backpropagation (as PyTorch DDP).

Backpropagation finishes the last layer's gradient first. The flat gradient is cut into
buckets along layer boundaries, in reverse layer order, each at least ``--bucket-mb``
(a bucket is one or more whole layers). :class:`OverlappedSum` starts a non-blocking
``MPI_Iallreduce`` on each bucket the moment its last layer is done, so the transfer
runs while the earlier layers are still being computed, then waits for them all.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpigd.timing import PhaseTimer


def plan_buckets(layer_ranges: list[tuple[int, int]], bucket_bytes: float) -> list[tuple]:
    """``(lo, hi)`` buckets of the flat float64 gradient, last layers first."""
    buckets, hi, size = [], None, 0
    for lo, end in reversed(layer_ranges):
        hi = end if hi is None else hi
        size += (end - lo) * 8
        if size >= bucket_bytes:
            buckets.append((lo, hi))
            hi, size = None, 0
    if hi is not None:
        buckets.append((layer_ranges[0][0], hi))
    return buckets


class OverlappedSum:
    """Sum a buffer over ``comm`` bucket by bucket, as backpropagation completes them.

    ``buffer`` is ``[gradient (n) | tail]``; the tail (loss, row count, control word) is
    summed by one more small Iallreduce at the end. Use: :meth:`start`, pass
    :meth:`ready` to the model as ``on_ready``, then :meth:`finish`.
    """

    def __init__(self, comm, buffer: np.ndarray, n: int, buckets: list, timer: PhaseTimer):
        self.comm, self.buffer, self.n, self.buckets, self.timer = comm, buffer, n, buckets, timer
        self.requests: list[MPI.Request] = []
        self.next_bucket = 0
        self.done_from = n

    def start(self) -> None:
        self.requests.clear()
        self.next_bucket, self.done_from = 0, self.n

    def ready(self, lo: int, hi: int) -> None:
        """``buffer[lo:hi]`` is final: start every bucket now complete, nudge the rest."""
        del hi
        self.done_from = min(self.done_from, lo)
        while (
            self.next_bucket < len(self.buckets)
            and self.buckets[self.next_bucket][0] >= self.done_from
        ):
            lo_b, hi_b = self.buckets[self.next_bucket]
            bucket = self.buffer[lo_b:hi_b]
            with self.timer.phase("comm", f"Iallreduce bucket {self.next_bucket}", bucket.nbytes):
                self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, bucket))
            self.next_bucket += 1
        if self.requests:
            with self.timer.phase("comm", "Testall"):
                MPI.Request.Testall(self.requests)  # lets MPI progress the transfers

    def finish(self) -> None:
        """Start what is left (and the tail), then wait for every bucket."""
        self.ready(0, self.n)
        tail = self.buffer[self.n :]
        with self.timer.phase("comm", "Iallreduce tail", tail.nbytes):
            self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, tail))
        with self.timer.phase("comm", "Waitall"):
            MPI.Request.Waitall(self.requests)
