"""``--strategy ps-async``: asynchronous SGD on a rank-0 parameter server (Downpour).

Workers (ranks 1..P-1) loop over their mini-batches: receive parameters, compute the
mini-batch gradient, send it. The server applies every gradient as it arrives, from
whichever worker sent it, and replies to that worker with the new parameters. All
messages are point-to-point buffer sends of float64:

- worker -> server, tag GRAD: ``[Σ gradient | Σ loss | rows | version | step | control]``,
  where ``version`` is the server version the gradient was computed on;
- server -> worker, tag PARAMS: ``[parameters | version | halt]``.

Staleness of an applied gradient = server version at application − its ``version``.
``--max-staleness S`` bounds it (Stale Synchronous Parallel): the server holds back a
reply while granting it could let some gradient in flight exceed S. With O the set of
workers computing, V the server version and v_w the version worker w was sent, every
w in O satisfies (V − v_w) + |O| − 1 ≤ S: at most |O| − 1 other gradients can still
land before w's. A reply is granted only if the bound still holds with the worker
added; with O empty it always does, so no worker waits forever. S = 0 is sequential
SGD in the order the server applied the gradients (reported to the hooks'
``gradient_applied``).

Per epoch the server records staleness (mean, max, mean per worker) and each
worker's updates per second: its gradients applied, over the time from the start of
the epoch to its last gradient (the end-of-epoch loss pass and broadcast excluded).

An epoch ends when every worker has sent one gradient per mini-batch of its rows
(the same count on every worker); every message sent is received. Then one Bcast
gives every rank the parameters, the version and the control word, so epochs,
metrics and checkpoints are synchronous, and a stop signal takes effect at the end of
an epoch. A non-finite gradient stops the server from applying more: it collects the
gradients still in flight, answers every waiting worker with ``halt``, and the
epoch's Bcast marks the divergence, so every rank raises the same DivergenceError
there. The server never computes (``--server-computes`` is refused) and the optimiser
must be a first-order one. ``--servers K`` > 1 runs this protocol on each of K key-range
servers (:mod:`mpigd.strategies.sharded_async`).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from mpi4py import MPI

from mpigd.errors import ConfigError
from mpigd.strategies import control
from mpigd.strategies.server import SERVER, ServerStrategy

GRAD, PARAMS = 1, 2


class ParameterServerAsync(ServerStrategy):
    """Asynchronous SGD with optional bounded staleness (see the module docstring)."""

    name = "ps-async"
    OPTIONS = ("server_computes", "max_staleness")
    steps_in_lockstep = False

    @classmethod
    def check(cls, config, size: int) -> None:
        super().check(config, size)
        if config.server_computes:
            raise ConfigError("ps-async: the server does not compute; drop --server-computes")
        if config.optimizer == "lbfgs":
            raise ConfigError("ps-async applies single gradients; lbfgs needs full batches")

    def __init__(self, ranks, objective, timer, options, hooks) -> None:
        super().__init__(ranks, objective, timer, options, hooks)
        n = objective.n_params
        self.n_params = n
        # [Σ grad | Σ loss | rows | version | step | control word]
        self.gradient = np.zeros(n + 4 + control.SIZE)
        self.reply = np.zeros(n + 2)  # [params | version | halt]
        self.epoch_end = np.zeros(n + 1 + control.SIZE)  # [params | version | control word]
        self.version = 0
        self.in_epoch = False
        self.diverged = False
        self._fields: dict = {}

    @property
    def replicated(self) -> bool:
        return not self.in_epoch

    def run_epoch(self, optimizer, params, batches, before_step) -> int:
        self.in_epoch = True
        if self.is_server:
            for i in range(len(batches)):  # keep the loop's step count in step
                before_step(i)
            self._serve(optimizer, params, len(batches))
        else:
            self._work(params, batches, before_step)
        self.in_epoch = False
        self._finish_epoch(params)
        return len(batches)

    def epoch_fields(self) -> dict:
        return self._fields

    # -- worker --------------------------------------------------------------------

    def _work(self, params, batches, before_step) -> None:
        n = self.n_params
        for step, rows in enumerate(batches):
            before_step(step)
            with self.timer.phase("comm", "Recv"):
                self.comm.Recv(self.reply, source=SERVER, tag=PARAMS)
            if self.reply[n + 1]:  # halt: the server saw a non-finite gradient
                return
            self.objective.local_sums(self.reply[:n], rows, self.gradient[: n + 2])
            self.gradient[n + 2 : n + 4] = self.reply[n], step
            control.fill(self.gradient[n + 4 :])
            with self.timer.phase("comm", "Send", self.gradient.nbytes):
                self.comm.Send(self.gradient, dest=SERVER, tag=GRAD)

    # -- server --------------------------------------------------------------------

    def _serve(self, optimizer, params, n_steps: int) -> None:
        n, workers = self.n_params, range(1, self.ranks.size)
        remaining = dict.fromkeys(workers, n_steps)
        sent_version: dict[int, int] = {}  # workers computing, and the version they hold
        waiting = deque(w for w in workers if n_steps > 0)  # workers owed a reply
        staleness = []
        lags: dict[int, list[int]] = {w: [] for w in workers}
        applied = dict.fromkeys(workers, 0)
        busy_s = dict.fromkeys(workers, 0.0)  # from epoch start to the worker's last gradient
        status = MPI.Status()
        start = time.perf_counter()
        self._grant(params, waiting, sent_version)
        while sent_version:  # a gradient is on its way
            with self.timer.phase("comm", "Recv"):
                self.comm.Recv(self.gradient, source=MPI.ANY_SOURCE, tag=GRAD, status=status)
            worker = status.Get_source()
            del sent_version[worker]
            remaining[worker] -= 1
            self.stop_agreed = control.settle(self.gradient[n + 4 :]) or self.stop_agreed
            lag = self.version - int(self.gradient[n + 2])
            if not self.diverged and self._applied(optimizer, params):
                staleness.append(lag)
                lags[worker].append(lag)
                applied[worker] += 1
                self.hooks.gradient_applied(worker, int(self.gradient[n + 3]), lag)
            if remaining[worker]:
                waiting.append(worker)
            else:
                busy_s[worker] = time.perf_counter() - start
            self._grant(params, waiting, sent_version)
        self._fields = {
            "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            "staleness_max": int(max(staleness, default=0)),
            "staleness_mean_per_worker": [float(np.mean(lags[w] or [0])) for w in workers],
            "updates_per_s_per_worker": [applied[w] / max(busy_s[w], 1e-9) for w in workers],
        }

    def _applied(self, optimizer, params) -> bool:
        """Apply the gradient just received (its mean, plus the L2 term); whether it was.
        A non-finite one leaves ``params`` as they were and marks the run diverged."""
        packed = self.gradient[: self.n_params + 2]

        def finish(point: np.ndarray, grad_out: np.ndarray) -> float:
            return self.objective.finish(packed, point, grad_out)

        if not control.step_unless_diverged(optimizer, params, finish, self.timer):
            self.diverged = True
            return False
        self.version += 1
        return True

    def _grant(self, params, waiting: deque, sent_version: dict) -> None:
        """Reply to waiting workers, oldest first, while the staleness bound allows;
        after a divergence, answer each with ``halt`` instead."""
        bound = self.options.max_staleness
        while waiting:
            if bound is not None and not self.diverged:
                computing = len(sent_version) + 1  # with the worker we would reply to
                oldest = min(sent_version.values(), default=self.version)
                if (self.version - oldest) + computing - 1 > bound:
                    return
            worker = waiting.popleft()
            self.reply[: self.n_params] = params
            self.reply[self.n_params :] = self.version, self.diverged
            with self.timer.phase("comm", "Send", self.reply.nbytes):
                self.comm.Send(self.reply, dest=worker, tag=PARAMS)
            if not self.diverged:
                sent_version[worker] = self.version

    # -- epoch end -----------------------------------------------------------------

    def _finish_epoch(self, params) -> None:
        """One Bcast: every rank gets the server's parameters, version and control word;
        every rank raises DivergenceError here if the server diverged."""
        n = self.n_params
        if self.is_server:
            self.epoch_end[:n] = params
            self.epoch_end[n] = self.version
            self.epoch_end[n + 1 :] = self.stop_agreed, self.diverged
        with self.timer.phase("comm", "Bcast", self.epoch_end.nbytes if self.is_server else 0):
            self.comm.Bcast(self.epoch_end, root=SERVER)
        params[:] = self.epoch_end[:n]
        self.version = int(self.epoch_end[n])
        self.stop_agreed = control.settle(self.epoch_end[n + 1 :])
