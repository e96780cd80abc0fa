"""``--strategy ps-async --servers K`` (K > 1): Downpour SGD on K key-range servers.

Each server runs ``ps-async``'s protocol (:mod:`mpigd.strategies.ps_async`) for its own
key range (:mod:`mpigd.strategies.sharded`), with its own version counter and the same
staleness bound; the workers talk to every server each step, asking only for the keys
their batch touches (possibly none of a server's). Point-to-point messages:

- worker -> server, tag REQUEST, int64: ``[step | halt | keys...]``;
- server -> worker, tag VALUES, float64: ``[version | halt | values at the keys...]``;
- worker -> server, tag PUSH, float64: ``[Σ loss | rows | version | step | halt |
  Σ gradient at the keys...]``, ``version`` being the one that server sent.

A server answers a request when ``--max-staleness S`` allows (the rule of ``ps-async``,
for its own version and the workers computing on its values) and applies every push as
it arrives: its range's part of the mean gradient plus the L2 term of its whole range
(:meth:`~mpigd.objective.LocalObjective.finish` on its part, O(range); on sparse rows
``sgd`` and ``momentum`` defer the untouched keys' part, :mod:`mpigd.optim.lazy`, and a
push costs O(its keys), as in ``ps-sync --servers K``).
Staleness is counted per server: an applied push's lag is that server's version at
application minus the version it sent.

With S bounded a worker asks the servers one after the other, 0 to K-1, each after the
previous one has answered: a worker waits only on a server above all whose values it
holds, so waits never form a cycle, and with S = 0 every server applies the gradients in
the order server 0 granted them: sequential SGD in the order server 0 reports to the
hooks' ``gradient_applied``. Unbounded, a worker asks all servers at once. Servers reply
with non-blocking sends, so a server is never held up by a worker that is busy sending
to another server.

A non-finite gradient part stops its server from applying more: it answers every later
request with ``halt``. A worker told to halt tells every other server it will send no
more this epoch (a ``halt`` push where it holds values, a ``halt`` request elsewhere),
and those stop too. The epoch ends when every server has heard the last of every
worker; then one Allreduce of the control word (stop votes, divergence) and the
staleness sums, and one of the maxima, so every rank stops, or raises the same
DivergenceError, at the same epoch end, as with ``ps-async``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from mpi4py import MPI

from mpigd.strategies import control
from mpigd.strategies.sharded import ShardedServers

REQUEST, VALUES, PUSH = 11, 12, 13
#: Header lengths of the three messages.
_REQUEST_HEAD, _VALUES_HEAD, _PUSH_HEAD = 2, 2, 5


class ShardedAsync(ShardedServers):
    """Asynchronous SGD on K key-range servers (see the module docstring)."""

    name = "ps-async"
    OPTIONS = ("max_staleness",)
    steps_in_lockstep = False

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        self.workers = range(self.ranges.servers, ranks.size)
        self.version = 0
        self.in_epoch = False
        #: A server: it saw a non-finite gradient or heard of one. A worker: told to halt.
        self.diverged = False
        self._fields: dict = {}

    @property
    def replicated(self) -> bool:
        return not self.in_epoch

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        self.in_epoch = True
        lags = rates = None
        if self.is_server:
            for i in range(len(batches)):  # keep the loop's step count in step
                before_step(i)
            with self.lazily(optimizer, params):
                lags = self._serve(optimizer, params, len(batches))
        else:
            rates = self._work(batches, before_step)
        self.in_epoch = False
        self._finish_epoch(lags, rates)
        return len(batches)

    def epoch_fields(self) -> dict:
        return self._fields

    # -- worker --------------------------------------------------------------------

    def _work(self, batches, before_step) -> float:
        """The epoch's steps; this worker's steps per second until its last push."""
        start, taken = time.perf_counter(), 0
        for step, rows in enumerate(batches):
            before_step(step)
            if not self._worker_step(rows, step):
                break
            taken += 1
        return taken / max(time.perf_counter() - start, 1e-9)

    def _worker_step(self, rows, step: int) -> bool:
        """Pull, compute, push one batch; False if a server said halt."""
        keys, features = self.work.keys(self.objective.X, rows)
        cuts = self.ranges.cuts(keys)
        replies = self._pull(step, keys, cuts)
        if replies is None:
            return False
        pulled = np.concatenate([reply[_VALUES_HEAD:] for reply in replies])
        packed = np.empty(len(keys) + 2)
        self.work.sums(rows, features, pulled, packed)
        for server, reply in enumerate(replies):
            part = packed[cuts[server] : cuts[server + 1]]
            message = np.concatenate((packed[-2:], [reply[0], step, 0.0], part))
            with self.timer.phase("comm", "Send", message.nbytes):
                self.comm.Send(message, dest=server, tag=PUSH)
        return True

    def _pull(self, step: int, keys: np.ndarray, cuts: np.ndarray) -> list | None:
        """Every server's reply to a request for its keys; None (the servers told) if
        one said halt. Bounded staleness: the servers in order, one at a time."""
        servers, one_at_a_time = self.ranges.servers, self.options.max_staleness is not None
        replies = []
        for server in range(servers):
            request = np.concatenate(([step, 0], keys[cuts[server] : cuts[server + 1]]))
            with self.timer.phase("comm", "Send", request.nbytes):
                self.comm.Send(request, dest=server, tag=REQUEST)
            if one_at_a_time:
                replies.append(self._reply(server, cuts))
                if replies[-1][1]:
                    return self._halt(step, replies, range(server + 1, servers))
        if not one_at_a_time:
            replies = [self._reply(server, cuts) for server in range(servers)]
            if any(reply[1] for reply in replies):
                return self._halt(step, replies, ())
        return replies

    def _reply(self, server: int, cuts: np.ndarray) -> np.ndarray:
        """Receive ``server``'s reply (a halt reply is just the header)."""
        reply = np.empty(_VALUES_HEAD + int(cuts[server + 1] - cuts[server]))
        with self.timer.phase("comm", "Recv"):
            self.comm.Recv(reply, source=server, tag=VALUES)
        return reply

    def _halt(self, step: int, replies: list, unasked) -> None:
        """Tell every server that answered with values, and every one not yet asked,
        that this worker sends nothing more this epoch."""
        self.diverged = True
        told = [(server, PUSH, np.array([0.0, 0.0, 0.0, step, 1.0]))
                for server, reply in enumerate(replies) if not reply[1]]  # fmt: skip
        told += [(server, REQUEST, np.array([step, 1])) for server in unasked]
        for server, tag, message in told:
            with self.timer.phase("comm", "Send", message.nbytes):
                self.comm.Send(message, dest=server, tag=tag)

    # -- server --------------------------------------------------------------------

    def _serve(self, optimizer, params, n_steps: int) -> dict:
        """Answer requests and apply pushes until every worker is done; the lags of the
        applied pushes, by worker."""
        remaining = dict.fromkeys(self.workers, n_steps)  # pushes still to come
        waiting: deque = deque()  # (worker, positions of the keys it asked for)
        computing: dict = {}  # worker -> (version sent, positions)
        lags: dict[int, list[int]] = {worker: [] for worker in self.workers}
        sending: list = []  # replies in flight: (request, buffer)
        status = MPI.Status()
        while any(remaining.values()):
            with self.timer.phase("comm", "Recv"):
                self.comm.Probe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
                worker, tag = status.Get_source(), status.Get_tag()
                kind, dtype = (MPI.INT64_T, np.int64) if tag == REQUEST else (MPI.DOUBLE, float)
                message = np.empty(status.Get_count(kind), dtype=dtype)
                self.comm.Recv(message, source=worker, tag=tag)
            if tag == REQUEST and message[1] or tag == PUSH and message[4]:  # halt
                self.diverged, remaining[worker] = True, 0
                computing.pop(worker, None)
            elif tag == REQUEST:
                waiting.append((worker, message[_REQUEST_HEAD:] - self.shard.lo))
            else:
                sent, positions = computing.pop(worker)
                remaining[worker] -= 1
                lag = self.version - sent
                if not self.diverged and self._applied(optimizer, params, positions, message):
                    lags[worker].append(lag)
                    self.hooks.gradient_applied(worker, int(message[3]), lag)
            self._grant(params, waiting, computing, remaining, sending)
        MPI.Request.Waitall([request for request, _ in sending])
        return lags

    def _applied(self, optimizer, params, positions, message) -> bool:
        """Apply a push (its range's part of the mean gradient, plus the L2 term);
        whether it was. A non-finite one leaves ``params`` and marks the server diverged."""
        if self.stepper is not None:
            if not control.finite(message[0], message[_PUSH_HEAD:]):
                self.diverged = True
                return False
            # a diverging run may overflow in the step; the next numbers report it
            with self.timer.phase("compute"), np.errstate(over="ignore", invalid="ignore"):
                count = message[1]
                mean = message[_PUSH_HEAD:] * (1.0 / count if count > 0 else 0.0)
                self.stepper.step(positions, mean)
            self.version += 1
            return True
        n, sums = self.objective.n_params, self.packed

        def finish(point: np.ndarray, grad_out: np.ndarray) -> float:
            sums[:n] = 0.0
            sums[positions] = message[_PUSH_HEAD:]
            sums[n : n + 2] = message[:2]
            return self.objective.finish(sums, point, grad_out)

        if not control.step_unless_diverged(optimizer, params, finish, self.timer):
            self.diverged = True
            return False
        self.version += 1
        return True

    def _grant(self, params, waiting: deque, computing: dict, remaining: dict, sending) -> None:
        """Answer waiting workers, oldest first, while the staleness bound allows (the
        rule of ``ps-async``); after a divergence answer each with ``halt``."""
        bound = self.options.max_staleness
        while waiting:
            if bound is not None and not self.diverged:
                oldest = min((sent for sent, _ in computing.values()), default=self.version)
                if (self.version - oldest) + len(computing) > bound:
                    return
            worker, positions = waiting.popleft()
            if self.diverged:
                reply, remaining[worker] = np.array([self.version, 1.0]), 0
            else:
                reply = np.empty(_VALUES_HEAD + len(positions))
                reply[:_VALUES_HEAD] = self.version, 0.0
                reply[_VALUES_HEAD:] = self.values(params, positions)
                computing[worker] = (self.version, positions)
            with self.timer.phase("comm", "Isend", reply.nbytes):
                sending.append((self.comm.Isend(reply, dest=worker, tag=VALUES), reply))
            sending[:] = [(request, buffer) for request, buffer in sending if not request.Test()]

    # -- epoch end -----------------------------------------------------------------

    def _finish_epoch(self, lags: dict | None, rates: float | None) -> None:
        """Two small Allreduces: the control word and staleness sums, then the maxima;
        every rank raises DivergenceError here if any server diverged."""
        first, n_workers = self.ranges.servers, len(self.workers)
        sums = np.zeros(control.SIZE + 2 * n_workers)  # [word | Σ lag | applied], by worker
        maxima = np.zeros(2 * n_workers)  # [largest lag | steps per second], by worker
        control.fill(sums[: control.SIZE], diverged=self.diverged)
        totals, counts = sums[control.SIZE :].reshape(2, n_workers)
        if lags is not None:
            for worker, applied in lags.items():
                totals[worker - first], counts[worker - first] = sum(applied), len(applied)
                maxima[worker - first] = max(applied, default=0)
        if rates is not None:
            maxima[n_workers + self.ranks.rank - first] = rates
        with self.timer.phase("comm", "Allreduce", sums.nbytes + maxima.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
            self.comm.Allreduce(MPI.IN_PLACE, maxima, op=MPI.MAX)
        self.stop_agreed = control.settle(sums[: control.SIZE])
        applied = counts.sum()
        self._fields = {
            "staleness_mean": float(totals.sum() / applied) if applied else 0.0,
            "staleness_max": int(maxima[:n_workers].max(initial=0)),
            "staleness_mean_per_worker": (totals / np.maximum(counts, 1)).tolist(),
            "updates_per_s_per_worker": maxima[n_workers:].tolist(),
        }
