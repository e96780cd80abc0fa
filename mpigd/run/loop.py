"""The training loop: epochs of steps, measured, recorded, checkpointed. Every rank.

Per epoch the strategy takes the epoch's steps, then the loop evaluates the full
training objective (``train_loss``, over all rows of all ranks, with the L2 term) and
the test metrics, rank 0 appends one line to ``metrics.jsonl`` and the hooks see it:

- ``time_s``: wall time of the epoch on rank 0: its steps, the ``train_loss`` pass and
  the test evaluation (``eval_s``). The initial read of the data is not in any epoch;
  run.json holds it as ``load_s`` (and Numba compilation as ``warmup_s``).
- ``compute_s``, ``comm_s``: time in kernels (and optimiser updates) and in MPI during
  the steps and the ``train_loss`` pass, averaged over the ranks (``comm_s`` includes
  waiting for slower ranks); ``io_s``: data read during the epoch (0 while the rows
  stay in memory). Every rank books each second to one phase at most, so
  ``time_s − compute_s − comm_s − io_s − eval_s`` (≥ 0 up to clock skew) is the
  average rank's Python overhead. ``compute_s_max``, ``comm_s_max``, ``io_s_max``: the
  busiest rank's figures (with a parameter server the workers' compute and the
  server's waiting differ widely, and the mean hides which rank is the bottleneck).
- ``samples_per_s``: training rows stepped through in the epoch, per second of ``time_s``.
- ``full_passes``: passes over all training rows so far (objective evaluations).
- ``grad_norm_inf``: max |∂f/∂θ_i| at the epoch's end (full-batch training only).

A completed run's run.json adds ``peak_rss_mib``: every rank's peak resident memory
(MiB, rank order), what its share of the rows and of the model cost.

With mini-batches the ``train_loss`` pass computes the loss alone where the model can
skip its backward pass (the MLP). A full-batch optimiser's next step needs the
objective at exactly the point where the epoch's ``train_loss`` pass computed it, so
that pass is memoised and done once: with full-batch training the pass booked in
epoch e's ``compute_s`` is epoch e+1's gradient.

Reliability: the loop writes ``checkpoint.h5`` at the end and when the ranks agree to
stop for a signal (the :class:`~mpigd.run.hooks.CheckpointPolicy` hook adds the
periodic ones); ``--resume`` continues from it exactly (same rank count: bit for bit).
A NaN or Inf in the loss or gradient stops the run at that step and keeps the last
good checkpoint.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np

from mpigd import comm as mpi
from mpigd import preemption
from mpigd.errors import CollectiveError, DivergenceError, MpigdError
from mpigd.preemption import Interrupted, Preempted
from mpigd.record import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, RUN_FILE
from mpigd.record.atomic import WRITE_ERRORS
from mpigd.run import checkpointing, progress
from mpigd.run.batching import epoch_batches


@dataclass
class RunData:
    """This rank's rows. ``test_X``: the test rows on the backend's device (as loaded on
    CPU backends); ``load_interval``: ``time.perf_counter()`` at the start and end of
    the read (seconds), for run.json's ``load_s`` and the timeline."""

    info: object
    rows: object
    test: object | None
    test_X: object | None
    load_interval: tuple[float, float]

    @property
    def load_s(self) -> float:
        return self.load_interval[1] - self.load_interval[0]


@dataclass
class Run:
    """One training run on this rank: what the loop, the hooks and the checkpoints share.

    Built by :func:`mpigd.run.setup.set_up`. ``record`` (the run directory's writer)
    and ``data_fingerprint`` exist on rank 0 only. ``share`` is ``(part, parts)``: which
    of the equal row ranges this rank holds.
    """

    config: object
    ranks: object
    timer: object
    hooks: object
    record: object | None
    data: RunData
    parts: object
    state: object
    share: tuple[int, int]
    model_info: dict
    data_fingerprint: dict | None

    def save_checkpoint(self) -> None:
        """Collective: write checkpoint.h5 at the current step boundary."""
        checkpointing.save(self)


def run_to_end(run: Run) -> dict:
    """Collective: the epochs, then model.h5 and the final run.json; the summary.

    The run ends ``completed``, ``preempted`` (an agreed stop: exit 75), ``interrupted``
    (an agreed stop for Ctrl-C: exit 130) or ``failed``
    (an error). When the ranks end together the hooks' ``run_ended`` runs first, then
    rank 0 writes model.h5 (completed runs only) and the final run.json, whatever the
    hooks did: a hook failing at the end fails the run, with the reason recorded, and
    leaves no model.h5. Rank 0's writes are agreed
    (:func:`_written_on_root`): a full disk fails the run on every rank, with one message.
    """
    hooks_ended = False
    try:
        run.hooks.run_started()
        summary = _epochs(run)
        whole = run.parts.strategy.full_vector(run.parts.params)
        arrays = run.parts.model.saved_arrays()
        hooks_ended = True
        run.hooks.run_ended("completed")
        _written_on_root(run, MODEL_FILE,
                         lambda: run.record.save_model(whole, run.model_info, arrays))  # fmt: skip
        _written_on_root(run, RUN_FILE, lambda: run.record.finish("completed", **summary))
    except MpigdError as exc:
        _end_early(run, exc, call_hooks=not hooks_ended)
        raise
    run.hooks.run_recorded(summary)
    return summary


def _written_on_root(run: Run, name: str, write) -> None:
    """Collective: rank 0 calls ``write()``, which writes ``name`` in the run directory;
    a failed write (:data:`~mpigd.record.atomic.WRITE_ERRORS`: disk full, quota,
    permissions) is an agreed error on every rank."""

    def work() -> None:
        if not run.record:
            return
        try:
            write()
        except WRITE_ERRORS as exc:
            raise MpigdError(f"cannot write {run.config.out}/{name}: {exc}") from exc

    mpi.collectively(run.ranks.comm, work)


def _end_early(run: Run, exc: MpigdError, call_hooks: bool) -> None:
    """Record a run cut short by ``exc``: the hooks' ``run_ended`` if every rank is here
    (an agreed error) and they have not run yet, then run.json ``preempted``,
    ``interrupted`` or ``failed`` on rank 0 (best effort: the error may be a full disk)."""
    status = exc.status if isinstance(exc, Preempted) else "failed"
    try:
        if call_hooks and isinstance(exc, CollectiveError):
            run.hooks.run_ended(status)
    finally:
        if run.record:
            try:
                run.record.finish(status, stop_reason=str(exc))
            except WRITE_ERRORS as write_error:  # the error itself may be a full disk
                progress.note(f"cannot record the run as {status} in run.json: {write_error}")


def _epochs(run: Run) -> dict:
    config, state, parts = run.config, run.state, run.parts
    epochs, flag = config.loop_epochs
    stop_reason = f"reached {flag} {epochs}"
    for epoch in range(state.start_epoch, epochs + 1):
        state.epoch = epoch
        try:
            row = _epoch(run, epoch)
        except DivergenceError as exc:
            where = f"at epoch {epoch}"
            if parts.strategy.steps_in_lockstep:
                where += f", step {state.global_step}"
            raise DivergenceError(
                f"training diverged {where}: {exc}; the last good checkpoint is kept; "
                + _divergence_advice(run)
            ) from exc
        if row is None:  # cut short at a step boundary by an agreed stop signal
            run.save_checkpoint()
            raise _stopped(run, epoch)
        state.epochs_done, state.step_in_epoch = epoch, 0
        _written_on_root(run, METRICS_FILE, lambda: run.record.append_metrics(row))  # noqa: B023
        run.hooks.epoch_ended(row)
        last = epoch == epochs or parts.optimizer.stop_reason is not None
        if last or parts.strategy.stop_agreed:
            run.save_checkpoint()
        if parts.strategy.stop_agreed and not last:
            raise _stopped(run, epoch + 1)
        if parts.optimizer.stop_reason:
            stop_reason = parts.optimizer.stop_reason
            break
    final_loss = _train_loss(run, np.empty_like(parts.params))
    return {"stop_reason": stop_reason, "epochs_run": state.epochs_done,
            "final_train_loss": final_loss, "peak_rss_mib": _peak_rss_mib(run)}  # fmt: skip


def _peak_rss_mib(run: Run) -> list[float]:
    """Collective: each rank's peak resident memory so far (MiB), in rank order, for
    run.json: what a rank's share of the data and model really costs."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return [round(kib / 1024, 1) for kib in mpi.gather_everywhere(run.ranks.comm, peak_kib)]


def _divergence_advice(run: Run) -> str:
    """Collective: what to try after a divergence. Data with values near the square root
    of the float range overflows sums of squares and products whatever the step size,
    so then the advice is to scale the data; otherwise it is a smaller --lr."""
    rows, info = run.data.rows, run.data.info
    local = [abs(float(rows.X.max())), abs(float(rows.X.min()))] if rows.X.shape[0] else [0.0]
    if info.task == "regression" and len(rows.y):
        local += [abs(float(rows.y.max())), abs(float(rows.y.min()))]
    largest = max(max(values) for values in mpi.gather_everywhere(run.ranks.comm, local))
    limit = np.sqrt(np.finfo(info.dtype).max) / 1e4
    if largest > limit:
        return (
            f"the training data holds values as large as {largest:.3g} in magnitude, where "
            f"products and sums of squares overflow {np.dtype(info.dtype).name}: scale the "
            "data (for example standardise each feature, and the targets of a regression)"
        )
    if run.config.optimizer == "lbfgs":  # its line search picks the step sizes
        return "check the data's scale, or add a larger --l2"
    return f"try a smaller --lr (now {run.config.lr})"


def _epoch(run: Run, epoch: int) -> dict | None:
    """Train one epoch and measure it; its metrics line, or None if a stop cut it short."""
    config, state, parts, data = run.config, run.state, run.parts, run.data
    start = time.perf_counter()
    part, parts_count = run.share
    batches = epoch_batches(data.rows.X.shape[0], part, max(parts_count, 1), data.info.n_rows,
                            config.batch_size, config.seed, epoch)  # fmt: skip
    first = state.steps_already_taken(epoch)

    def before_step(i: int) -> None:
        state.step_in_epoch = first + i
        run.hooks.before_step()
        state.global_step += 1

    taken = parts.strategy.run_epoch(parts.optimizer, parts.params, batches[first:], before_step)
    parts.strategy.agree_stop_reason(parts.optimizer)
    state.step_in_epoch = first + taken
    if state.step_in_epoch < len(batches) and not parts.optimizer.stop_reason:
        return None
    grad = np.empty_like(parts.params)
    row = {"epoch": epoch, "train_loss": _train_loss(run, grad)}
    if config.batch_size is None and grad.size:  # a tree ensemble has no gradient
        row["grad_norm_inf"] = float(np.max(np.abs(grad)))
    eval_start = time.perf_counter()
    if data.test is not None:
        with run.timer.span("evaluation", epoch=epoch):
            metrics = parts.strategy.evaluate(data.test_X, data.test.y, parts.params)
        row.update({f"test_{k}": v for k, v in metrics.items() if k != "rows"})
    end = time.perf_counter()
    time_s = end - start
    phases = run.timer.take()
    mean, largest = parts.strategy.mean_and_max(np.array(list(phases.values())))
    row.update(zip(phases, mean.tolist(), strict=True))
    row.update((f"{name}_max", value) for name, value in zip(phases, largest.tolist(),
                                                             strict=True))  # fmt: skip
    row.update(time_s=time_s, eval_s=end - eval_start, steps=taken,
               samples_per_s=data.info.n_rows * taken / len(batches) / time_s)  # fmt: skip
    if first:
        row["resumed_at_step"] = first
    row["full_passes"] = parts.objective.full_passes
    row.update(parts.optimizer.epoch_fields())
    row.update(parts.strategy.epoch_fields())
    return row


def _train_loss(run: Run, grad: np.ndarray) -> float:
    """Collective: f over all training rows. Full batch: the memoised pass, which also
    fills ``grad`` and which the next step reuses; mini-batches: the loss alone."""
    strategy, params = run.parts.strategy, run.parts.params
    with run.timer.span("train_loss"):
        if run.config.batch_size is None:
            return strategy.full_closure(params, grad)
        return strategy.full_loss(params)


def _stopped(run: Run, epoch: int) -> Preempted:
    """Collective: the exception of the agreed stop at ``epoch`` (checkpoint written):
    :class:`Interrupted` if any rank got SIGINT, else :class:`Preempted`."""
    interrupted = any(mpi.gather_everywhere(run.ranks.comm, preemption.interrupted()))
    signals = "/".join(preemption.received()) or "a stop signal on another rank"
    message = (
        f"stopped by {signals} at epoch {epoch}, step {run.state.global_step}; checkpoint "
        f"written to {run.config.out}/{CHECKPOINT_FILE}; continue with --resume"
    )
    return (Interrupted if interrupted else Preempted)(message)
