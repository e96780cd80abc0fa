"""The allreduce strategy's gradient exchange on sparse data: sparse or dense, per step.

A mini-batch of sparse rows gives each rank a gradient that is nonzero only at the flat
indices its batch touches (:meth:`mpigd.objective.LocalObjective.sparse_sums`). Two ways
to add them up over the ranks (``--exchange``):

* **sparse**: every rank's (index, value) pairs are gathered with one
  ``MPI_Allgatherv`` and every rank adds them up into the union of the touched
  indices (the same additions in the same order on every rank, so every rank gets the
  same numbers). Messages grow with the batch's nonzeros, not with d.
* **dense**: each rank scatters its pairs into a d-vector and one ``MPI_Allreduce``
  sums them, as for dense data.

Both start with one small ``MPI_Allgather`` of five doubles per rank ``[pairs | loss sum
| rows | control word]``: the message sizes every rank needs for the Allgatherv, the
loss and row count of the step, and the stop vote and divergence flag
(:mod:`mpigd.strategies.control`), so the vote costs no message of its own.

**auto** (the default) chooses per step, from those globally known counts, whichever
the alpha-beta model (:mod:`mpigd.alphabeta`, the form ``experiments.perfmodel`` fits)
says is faster: ``allgather`` of the total pair bytes against ``allreduce`` of
``8 n_params`` bytes (the small Allgather is common to both and left out; on one rank
both cost nothing and the smaller message wins). Every rank takes the same decision
from the same numbers. Alpha and beta of both collectives are measured on this
communicator when training starts (:func:`calibrate`: a few timed calls at three sizes,
well under a second; rank 0 fits the fastest and broadcasts the fit). The decision weighs
communication only, not the local work either way.

A pair is a float64 value and an int32 index (int64 when ``n_params`` >= 2**31), packed
into one float64 buffer per rank: 12 (or 16) bytes per touched coordinate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpigd.alphabeta import AlphaBeta, fit_alpha_beta
from mpigd.strategies import control

EXCHANGES = ("auto", "dense", "sparse")
#: Calibration sizes, in float64 values per rank (8 B, 4 KiB, 1 MiB).
CALIBRATION_SIZES = (1, 512, 1 << 17)
#: Timed batches per size (the fastest counts: on a busy machine the others measure the
#: scheduler), and calls per batch: small messages are timed in batches, as a single
#: call is near the clock's resolution.
CALIBRATION_REPEATS = 5
_SMALL_BATCH = 4
#: Slots of the counts message: ``[pairs | loss sum | rows | control word]``.
_COUNTS = 3 + control.SIZE


@dataclass(frozen=True)
class Calibration:
    """Measured costs of the two exchanges on one communicator, the same on every rank:
    ``allreduce`` and ``allgather`` fits and the seconds the measuring took."""

    allreduce: AlphaBeta
    allgather: AlphaBeta
    seconds: float

    def fields(self) -> dict:
        """The calibration as metrics fields (seconds, seconds per byte)."""
        return {
            "exchange_allreduce_alpha_s": self.allreduce.alpha_s,
            "exchange_allreduce_beta_s": self.allreduce.beta_s,
            "exchange_allgatherv_alpha_s": self.allgather.alpha_s,
            "exchange_allgatherv_beta_s": self.allgather.beta_s,
            "exchange_calibration_s": self.seconds,
        }


def calibrate(comm: MPI.Comm) -> Calibration:
    """Collective: time Allreduce and Allgatherv at :data:`CALIBRATION_SIZES` on
    ``comm``; rank 0 fits alpha and beta of each and every rank gets that fit.

    The message bytes of an Allgatherv are the gathered total (every rank's part). On
    one rank nothing is timed: both collectives cost nothing.
    """
    start = time.perf_counter()
    size = comm.Get_size()
    if size == 1:
        free = AlphaBeta(0.0, 0.0)
        return Calibration(free, free, 0.0)
    timings = {"allreduce": [], "allgather": []}
    for n in CALIBRATION_SIZES:
        for op, seconds in _timed_calls(comm, n).items():
            timings[op].append((8 * n * (size if op == "allgather" else 1), seconds))
    fit = np.zeros(5)  # [allreduce alpha, beta | allgather alpha, beta | seconds]
    if comm.Get_rank() == 0:
        for k, op in enumerate(("allreduce", "allgather")):
            n_bytes, seconds = zip(*timings[op], strict=True)
            found = fit_alpha_beta(op, [size] * len(n_bytes), n_bytes, seconds)
            fit[2 * k : 2 * k + 2] = found.alpha_s, found.beta_s
        fit[4] = time.perf_counter() - start
    comm.Bcast(fit, root=0)
    values = [float(value) for value in fit]
    return Calibration(AlphaBeta(*values[0:2]), AlphaBeta(*values[2:4]), values[4])


def _timed_calls(comm: MPI.Comm, n: int) -> dict[str, float]:
    """Seconds per call of an Allreduce and an Allgatherv of ``n`` float64 values per
    rank, on this rank: the fastest of :data:`CALIBRATION_REPEATS` batches, each
    started together (a barrier) after a warm-up call."""
    size = comm.Get_size()
    send, total = np.zeros(n), np.zeros(n * size)
    calls = {
        "allreduce": lambda: comm.Allreduce(MPI.IN_PLACE, send, op=MPI.SUM),
        "allgather": lambda: comm.Allgatherv(send, [total, [n] * size, None, MPI.DOUBLE]),
    }
    batch = _SMALL_BATCH if n <= 512 else 1
    seconds = {}
    for op, call in calls.items():
        call()
        per_call = []
        for _ in range(CALIBRATION_REPEATS):
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(batch):
                call()
            per_call.append((time.perf_counter() - start) / batch)
        seconds[op] = min(per_call)
    return seconds


def sparse_is_cheaper(
    calibration: Calibration, ranks: int, sparse_bytes: int, dense_bytes: int
) -> bool:
    """``auto``'s choice: whether an Allgatherv of ``sparse_bytes`` in all costs less
    than an Allreduce of ``dense_bytes`` on ``ranks`` ranks (a tie: the smaller message)."""
    sparse_s = float(calibration.allgather.time("allgather", ranks, sparse_bytes))
    dense_s = float(calibration.allreduce.time("allreduce", ranks, dense_bytes))
    return sparse_s < dense_s or (sparse_s == dense_s and sparse_bytes < dense_bytes)


@dataclass
class Summed:
    """One step's sums over all ranks.

    ``sparse``: how they travelled. ``indices``: the sorted union of the touched flat
    indices (sparse; None when dense). ``values``: the gradient sums at ``indices``
    (sparse), or the whole (n_params,) sum (dense: the ``dense_out`` buffer).
    ``loss_sum``, ``rows``: summed over ranks. ``word``: the summed control word.
    """

    sparse: bool
    indices: np.ndarray | None
    values: np.ndarray
    loss_sum: float
    rows: float
    word: np.ndarray


class GradientExchange:
    """Sums the ranks' sparse gradients, sparse or dense by ``mode`` (:data:`EXCHANGES`),
    and counts what it sent.

    Parameters
    ----------
    comm : the ranks that add up their gradients.  n_params : the gradient's length.
    mode : ``auto``, ``sparse`` or ``dense``.  timer : where comm and compute are booked.
    """

    def __init__(self, comm: MPI.Comm, n_params: int, mode: str, timer) -> None:
        self.comm, self.n_params, self.mode, self.timer = comm, n_params, mode, timer
        self.size = comm.Get_size()
        self.index_dtype = np.int32 if n_params < 2**31 else np.int64
        #: ``auto``'s measured costs, once :meth:`calibrate` has run.
        self.calibration: Calibration | None = None
        self._scratch = np.zeros(n_params)  # the sparse sums' accumulator, kept zero
        self._counts = np.zeros(_COUNTS)
        self._all_counts = np.zeros((self.size, _COUNTS))
        #: Bytes the last step's messages held, summed over the ranks.
        self.last_bytes = 0
        self._epoch = {"sparse_steps": 0, "dense_steps": 0, "bytes": 0}

    def calibrate(self) -> None:
        """Collective: measure the collectives' costs, once (``auto`` only; the first
        :meth:`sum` does it if no one did before)."""
        if self.mode == "auto" and self.calibration is None:
            with self.timer.phase("comm", "exchange calibration"):
                self.calibration = calibrate(self.comm)

    def pair_doubles(self, pairs: int) -> int:
        """float64 slots one rank's message of ``pairs`` pairs takes (values, indices)."""
        if self.index_dtype == np.int32:
            return pairs + (pairs + 1) // 2
        return 2 * pairs

    def prefers_sparse(self, pairs: np.ndarray) -> bool:
        """Whether this step goes sparse, given every rank's pair count (the same
        answer on every rank: the same numbers in, the same calibration)."""
        if self.mode != "auto":
            return self.mode == "sparse"
        sparse_bytes = 8 * sum(self.pair_doubles(int(n)) for n in pairs)
        return sparse_is_cheaper(self.calibration, self.size, sparse_bytes, 8 * self.n_params)

    def sum(self, indices, values, loss_sum: float, rows: int, dense_out) -> Summed:
        """Collective: add up every rank's ``values`` at its sorted unique ``indices``,
        loss sum and rows, with this rank's control word.

        ``dense_out``: an (n_params,) float64 buffer, overwritten with the summed
        gradient when the step goes dense.
        """
        self.calibrate()
        counts = self._counts
        counts[:3] = len(indices), loss_sum, rows
        control.fill(counts[3:])
        with self.timer.phase("comm", "Allgather counts", counts.nbytes):
            self.comm.Allgather(counts, self._all_counts)
        pairs = self._all_counts[:, 0].astype(np.int64)
        totals = self._all_counts.sum(axis=0)
        sent = self.size * counts.nbytes
        if self.prefers_sparse(pairs):
            union, sums, sent_pairs = self._sparse_sum(indices, values, pairs)
            sent += sent_pairs
            result = Summed(True, union, sums, float(totals[1]), float(totals[2]), totals[3:])
        else:
            with self.timer.phase("compute"):
                dense_out[:] = 0.0
                dense_out[indices] = values
            with self.timer.phase("comm", "Allreduce", dense_out.nbytes):
                self.comm.Allreduce(MPI.IN_PLACE, dense_out, op=MPI.SUM)
            sent += self.size * dense_out.nbytes
            result = Summed(False, None, dense_out, float(totals[1]), float(totals[2]), totals[3:])
        self.last_bytes = sent
        self._epoch["sparse_steps" if result.sparse else "dense_steps"] += 1
        self._epoch["bytes"] += sent
        return result

    def _sparse_sum(self, indices, values, pairs) -> tuple[np.ndarray, np.ndarray, int]:
        """The Allgatherv of the pairs and their sum: (union, sums, bytes sent)."""
        doubles = np.array([self.pair_doubles(int(n)) for n in pairs])
        with self.timer.phase("compute"):
            block = np.zeros(doubles[self.comm.Get_rank()])
            n = len(indices)
            block[:n] = values
            block[n:].view(self.index_dtype)[:n] = indices
            gathered = np.empty(int(doubles.sum()))
        with self.timer.phase("comm", "Allgatherv pairs", block.nbytes):
            self.comm.Allgatherv(block, [gathered, doubles, None, MPI.DOUBLE])
        with self.timer.phase("compute"):
            scratch, parts, offset = self._scratch, [], 0
            for n, width in zip(pairs, doubles, strict=True):
                part = gathered[offset : offset + width]
                where = part[n:].view(self.index_dtype)[:n]
                scratch[where] += part[:n]  # a rank's indices are unique
                parts.append(where)
                offset += width
            union = np.unique(np.concatenate(parts)).astype(np.int64, copy=False)
            sums = scratch[union]
            scratch[union] = 0.0
        return union, sums, int(gathered.nbytes)

    def epoch_fields(self) -> dict:
        """This epoch's ``exchange_sparse_steps``, ``exchange_dense_steps`` and
        ``exchange_bytes`` (message bytes summed over the ranks and the steps), and
        ``auto``'s calibration; the counters restart."""
        fields = {f"exchange_{key}": value for key, value in self._epoch.items()}
        self._epoch = dict.fromkeys(self._epoch, 0)
        if self.calibration is not None:
            fields.update(self.calibration.fields())
        return fields
