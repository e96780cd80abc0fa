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

**auto** (the default) chooses per step, from those globally known counts, the exchange
predicted to be faster: the alpha-beta model of the collectives (:mod:`mpigd.alphabeta`,
the form ``experiments.perfmodel`` fits), ``allgather`` of the total pair bytes against
``allreduce`` of ``8 n_params`` bytes, plus each exchange's local work, linear in the
pairs gathered (unpack, add into the union) or in ``n_params`` (the d-vector zeroed
before the pairs are scattered into it). The small Allgather is common to both and left
out; on one rank the collectives cost nothing and the local work decides. Every rank
takes the same decision from the same numbers. The costs are measured on this
communicator when training starts (:func:`calibrate`: a few timed calls of each
collective at three sizes and the local work once, well under a second; rank 0 fits
the fastest and broadcasts its figures). The optimiser's own work after either
exchange is not modelled.

A pair is a float64 value and an int32 index (int64 when ``n_params`` >= 2**31), packed
into one float64 buffer per rank: 12 (or 16) bytes per touched coordinate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpigd.alphabeta import AlphaBeta, fit_alpha_beta
from mpigd.features import sorted_unique
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
    """Measured costs of the two exchanges on one communicator, the same on every rank.

    ``allreduce``, ``allgather``: the collectives' alpha-beta fits. ``pair_s``: local
    seconds per gathered pair (unpacking, adding into the union, reading it back);
    ``coordinate_s``: local seconds per coordinate of the dense d-vector (zeroing it
    before the pairs are scattered in). ``seconds``: what the measuring took.
    """

    allreduce: AlphaBeta
    allgather: AlphaBeta
    pair_s: float
    coordinate_s: float
    seconds: float

    def sparse_s(self, ranks: int, sparse_bytes: float, pairs: int) -> float:
        """Predicted seconds of a sparse exchange of ``pairs`` pairs in all, packed in
        ``sparse_bytes``, on ``ranks`` ranks."""
        comm = float(self.allgather.time("allgather", ranks, sparse_bytes))
        return comm + self.pair_s * pairs

    def dense_s(self, ranks: int, n_params: int) -> float:
        """Predicted seconds of a dense exchange of ``n_params`` values."""
        return float(self.allreduce.time("allreduce", ranks, 8 * n_params)) + (
            self.coordinate_s * n_params
        )

    def fields(self) -> dict:
        """The calibration as metrics fields (seconds, seconds per byte, pair, value)."""
        return {
            "exchange_allreduce_alpha_s": self.allreduce.alpha_s,
            "exchange_allreduce_beta_s": self.allreduce.beta_s,
            "exchange_allgatherv_alpha_s": self.allgather.alpha_s,
            "exchange_allgatherv_beta_s": self.allgather.beta_s,
            "exchange_pair_s": self.pair_s,
            "exchange_coordinate_s": self.coordinate_s,
            "exchange_calibration_s": self.seconds,
        }


def calibrate(comm: MPI.Comm, scratch: np.ndarray, index_dtype) -> Calibration:
    """Collective: time Allreduce and Allgatherv at :data:`CALIBRATION_SIZES` on
    ``comm`` and the local work of both exchanges; rank 0 fits and measures, and every
    rank gets rank 0's figures.

    ``scratch``: the exchange's (n_params,) accumulator (left zero), on which the local
    sum of pairs is timed as the steps will run it. The message bytes of an Allgatherv
    are the gathered total (every rank's part). On one rank no collective is timed:
    both cost nothing.
    """
    start = time.perf_counter()
    size = comm.Get_size()
    timings = {"allreduce": [], "allgather": []}
    if size > 1:
        for n in CALIBRATION_SIZES:
            for op, seconds in _timed_calls(comm, n).items():
                timings[op].append((8 * n * (size if op == "allgather" else 1), seconds))
    figures = np.zeros(7)  # allreduce alpha, beta | allgather alpha, beta | local | seconds
    if comm.Get_rank() == 0:
        for k, op in enumerate(("allreduce", "allgather")):
            if timings[op]:
                n_bytes, seconds = zip(*timings[op], strict=True)
                found = fit_alpha_beta(op, [size] * len(n_bytes), n_bytes, seconds)
                figures[2 * k : 2 * k + 2] = found.alpha_s, found.beta_s
        figures[4:6] = _local_costs(scratch, size, index_dtype)
        figures[6] = time.perf_counter() - start
    comm.Bcast(figures, root=0)
    values = [float(value) for value in figures]
    return Calibration(AlphaBeta(*values[0:2]), AlphaBeta(*values[2:4]), *values[4:])


def _local_costs(scratch: np.ndarray, size: int, index_dtype) -> tuple[float, float]:
    """(seconds per pair, seconds per coordinate) of the two exchanges' local work on
    this rank: the sum of ``size`` ranks' messages of up to 2**14 random pairs each
    into ``scratch``, and the zeroing of a d-vector (of up to 2**20 values), the
    fastest of :data:`CALIBRATION_REPEATS`."""
    rng = np.random.default_rng(0)
    n_params = scratch.size
    blocks = [sorted_unique(rng.integers(0, n_params, min(n_params, 1 << 14)))
              for _ in range(size)]  # fmt: skip
    pairs = np.array([block.size for block in blocks])
    gathered = np.concatenate([pack_pairs(block, np.ones(block.size), index_dtype)
                               for block in blocks])  # fmt: skip
    dense = np.empty(min(n_params, 1 << 20))
    per_pair, per_coordinate = [], []
    for _ in range(CALIBRATION_REPEATS):
        begin = time.perf_counter()
        add_pairs(scratch, gathered, pairs, index_dtype)
        middle = time.perf_counter()
        dense[:] = 0.0
        per_pair.append((middle - begin) / pairs.sum())
        per_coordinate.append((time.perf_counter() - middle) / dense.size)
    return min(per_pair), min(per_coordinate)


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


def sparse_is_cheaper(calibration: Calibration, ranks: int, sparse_bytes: float, pairs: int,
                      n_params: int) -> bool:  # fmt: skip
    """``auto``'s choice: whether the sparse exchange of ``pairs`` pairs in all (packed
    in ``sparse_bytes``) is predicted to cost less than the dense one of ``n_params``
    values on ``ranks`` ranks (a tie: the smaller message)."""
    sparse_s = calibration.sparse_s(ranks, sparse_bytes, pairs)
    dense_s = calibration.dense_s(ranks, n_params)
    return sparse_s < dense_s or (sparse_s == dense_s and sparse_bytes < 8 * n_params)


def pair_doubles(pairs: int, index_dtype) -> int:
    """float64 slots a message of ``pairs`` pairs takes: the values, then the indices
    (two int32 to a slot, or one int64)."""
    if index_dtype == np.int32:
        return pairs + (pairs + 1) // 2
    return 2 * pairs


def pack_pairs(indices: np.ndarray, values: np.ndarray, index_dtype) -> np.ndarray:
    """One rank's message: ``values``, then ``indices`` as ``index_dtype``, in float64
    slots (the index bits travel untouched: MPI copies, never computes on them)."""
    n = len(indices)
    block = np.zeros(pair_doubles(n, index_dtype))
    block[:n] = values
    block[n:].view(index_dtype)[:n] = indices
    return block


def add_pairs(scratch, gathered, pairs, index_dtype) -> tuple[np.ndarray, np.ndarray]:
    """Sum the ranks' messages ``gathered`` back to back (rank r's holds ``pairs[r]``
    pairs) into ``scratch`` (kept zero): the sorted union of their indices (int64) and
    the sums there, added in rank order (the same numbers on every rank)."""
    parts, offset = [], 0
    for n in pairs:
        width = pair_doubles(int(n), index_dtype)
        part = gathered[offset : offset + width]
        where = part[n:].view(index_dtype)[:n]
        scratch[where] += part[:n]  # a rank's indices are unique
        parts.append(where)
        offset += width
    union = sorted_unique(np.concatenate(parts), kind="stable")  # merges the sorted runs
    sums = scratch[union]
    scratch[union] = 0.0
    return union, sums


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
                self.calibration = calibrate(self.comm, self._scratch, self.index_dtype)

    def prefers_sparse(self, pairs: np.ndarray) -> bool:
        """Whether this step goes sparse, given every rank's pair count (the same
        answer on every rank: the same numbers in, the same calibration)."""
        if self.mode != "auto":
            return self.mode == "sparse"
        sparse_bytes = 8 * sum(pair_doubles(int(n), self.index_dtype) for n in pairs)
        return sparse_is_cheaper(self.calibration, self.size, sparse_bytes, int(pairs.sum()),
                                 self.n_params)  # fmt: skip

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
        """The Allgatherv of the pairs and their sum: (union, sums, bytes sent). One
        rank sums nothing: its pairs are the sums."""
        doubles = [pair_doubles(int(n), self.index_dtype) for n in pairs]
        if self.size == 1:
            return np.asarray(indices, dtype=np.int64), np.array(values), 8 * doubles[0]
        with self.timer.phase("compute"):
            block = pack_pairs(indices, values, self.index_dtype)
            gathered = np.empty(sum(doubles))
        with self.timer.phase("comm", "Allgatherv pairs", block.nbytes):
            self.comm.Allgatherv(block, [gathered, doubles, None, MPI.DOUBLE])
        with self.timer.phase("compute"):
            union, sums = add_pairs(self._scratch, gathered, pairs, self.index_dtype)
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
