"""The training loop: load, step, measure, checkpoint, record. Identical on every rank.

Per epoch the trainer lets the strategy take the epoch's steps, then evaluates the
full training objective (``train_loss``, over all rows of all ranks, with the L2 term)
and the test metrics, and rank 0 appends one line to ``metrics.jsonl``:

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

With mini-batches the ``train_loss`` pass computes the loss alone where the model can
skip its backward pass (the MLP).

A full-batch optimiser's next step needs the objective at exactly the point where the
epoch's ``train_loss`` pass computed it, so that pass is memoised and done once: with
full-batch training the pass booked in epoch e's ``compute_s`` is epoch e+1's gradient.

Reliability: ``checkpoint.h5`` is written every ``--checkpoint-every`` epochs and/or
``--checkpoint-every-steps`` steps, when a stop signal is agreed, and at the end;
``--resume`` continues from it exactly (same rank count: bit for bit). A NaN or Inf in
the loss or gradient stops the run at that step and keeps the last good checkpoint.
"""

from __future__ import annotations

import time

import numpy as np

from mpigd import checkpoint, device, faults, preemption, progress
from mpigd import comm as mpi
from mpigd.batching import epoch_batches, steps_per_epoch
from mpigd.checkpointing import CheckpointingMixin
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError, DataError, DivergenceError, MpigdError
from mpigd.evaluate import evaluate
from mpigd.loading import load_local_rows
from mpigd.models import create_model, load_backend
from mpigd.models.mlp_split import SplitMLP
from mpigd.objective import LocalObjective
from mpigd.optim import Schedule, create_optimizer
from mpigd.preemption import Preempted
from mpigd.record import RunRecord, mark_aborted
from mpigd.run_info import describe_run
from mpigd.strategies import STRATEGIES, create_strategy
from mpigd.strategies.tensor_parallel import GroupOps, TensorParallelAllreduce, make_grid
from mpigd.timing import PhaseTimer


def train(config: TrainConfig, ranks: mpi.RankInfo | None = None) -> dict:
    """Run one training job collectively; return the final summary (on every rank)."""
    return Trainer(config, ranks or mpi.world()).run()


class Trainer(CheckpointingMixin):
    """One training run on this rank: set-up in the constructor, the loop in :meth:`run`.

    Collective throughout: every rank constructs it and calls ``run`` with the same
    config. ``record`` (the run directory writer) exists on rank 0 only.
    """

    def __init__(self, config: TrainConfig, ranks: mpi.RankInfo) -> None:
        self.config, self.ranks = config, ranks
        preemption.install()
        self.record = self._prepare_record()
        mpi.on_abort(lambda message: mark_aborted(config.out, message))
        try:
            self._set_up()
        except MpigdError as exc:
            if self.record:
                self.record.finish("failed", stop_reason=str(exc))
            raise

    def _set_up(self) -> None:
        """Load the data, build model, strategy and optimiser, resume, write run.json.

        Collective. Steps that can fail are agreed (``collectively`` / ``agree``) so every
        rank fails together with one message; they never enclose a collective.
        """
        config, ranks, comm = self.config, self.ranks, self.ranks.comm
        self.timer = PhaseTimer()
        self.fault, backend, strategy_class = mpi.collectively(comm, self._configure)
        #: This rank's GPU and how MPI reaches it (run.json ``gpu``); None on CPU backends.
        self.gpu = device.place(comm, backend)
        #: Which part of the training rows this rank holds (see Strategy.data_share).
        self.share = strategy_class.data_share(ranks.rank, ranks.size, config)
        load_start = time.perf_counter()
        self.info, self.rows = load_local_rows(config.data, ranks, share=self.share)
        self.test = None
        if config.test_data:
            test_info, self.test = load_local_rows(
                config.test_data, ranks, every_rank_needs_rows=False, share=self.share
            )
            mpi.collectively(comm, lambda: _check_compatible(self.info, test_info))
        #: The test rows on the backend's device (copied once; numpy backends: as loaded).
        self.test_X = (
            None
            if self.test is None
            else mpi.collectively(comm, lambda: backend.to_device(self.test.X))
        )
        self.load_s = time.perf_counter() - load_start
        #: The (data x model) grid of a split model, or None.
        self.grid = make_grid(comm, config.model_parallel) if config.model_parallel > 1 else None
        mpi.collectively(comm, lambda: self._build(backend))
        #: Balanced class weights (N / (C n_c), one per class), or None.
        self.class_weight_values = None
        if config.class_weight == "balanced":
            counts = np.bincount(self.rows.y, minlength=self.info.n_classes).astype(np.float64)
            self.strategy.sum_over_data(counts)
            self.objective.sample_weight = mpi.collectively(
                comm, lambda: backend.to_device(_balanced_weights(self.rows.y, counts, self.info))
            )
            self.class_weight_values = class_weights(counts, self.info.n_rows).tolist()
        warm_start = time.perf_counter()
        self.objective.warm_up(self.params, self.test_X[:1] if self.test else None)
        self.warmup_s = time.perf_counter() - warm_start
        self.timer.take()  # the initial read is load_s in run.json, not epoch 1's io_s

        self.data_fingerprint = checkpoint.data_fingerprint(self.info) if ranks.is_root else None
        self.start_epoch, self.first_step, self.global_step = 1, 0, 0
        self.last_checkpoint_step = -1
        resumed = self._resume() if config.resume else None
        self._start_record(resumed)

    def _configure(self):
        """Fault switch, kernel backend and strategy class; ConfigError if unusable."""
        config = self.config
        strategy_class = STRATEGIES[config.strategy]
        if self.ranks.size < strategy_class.min_ranks:
            raise ConfigError(
                f"--strategy {config.strategy} needs at least {strategy_class.min_ranks} "
                f"ranks; this job has {self.ranks.size} (run it under mpirun -n P)"
            )
        if config.model_parallel > 1:
            _check_model_parallel(config, self.ranks.size)
            strategy_class = TensorParallelAllreduce
        return _configured_fault(), load_backend(config.backend), strategy_class

    def _build(self, backend) -> None:
        """Model, local objective, strategy, optimiser and starting parameters (no MPI)."""
        config, info = self.config, self.info
        if config.class_weight == "balanced" and info.n_classes is None:
            raise ConfigError("--class-weight balanced needs a classification dataset")
        self.model = create_model(
            config.model, backend, info.n_features, info.task, info.n_classes,
            svm_loss=config.svm_loss, hidden=config.hidden, dropout=config.dropout,
            dropout_seed=(config.seed, self.ranks.rank),
        )  # fmt: skip
        if self.grid:
            self.model = SplitMLP(
                backend, info.n_features, info.n_classes, config.hidden, config.dropout,
                (config.seed, self.ranks.rank), self.grid.parts, self.grid.part,
                GroupOps(self.grid, self.timer),
            )  # fmt: skip
        targets = self.model.targets(self.rows.y)
        # The training rows go to the backend's device once, here (numpy backends: as is).
        self.objective = LocalObjective(
            self.model, backend.to_device(self.rows.X), backend.to_device(targets), None,
            config.l2, self.timer, config.accumulate,
        )  # fmt: skip
        if self.grid:
            self.strategy = TensorParallelAllreduce(self.ranks, self.objective, self.timer,
                                                    config, self.grid)  # fmt: skip
        else:
            self.strategy = create_strategy(config.strategy, self.ranks, self.objective,
                                            self.timer, config)  # fmt: skip
        self.steps_per_epoch = steps_per_epoch(info.n_rows, config.batch_size)
        schedule = Schedule(
            config.lr,
            config.lr_schedule,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.steps_per_epoch * config.epochs,
            step_epochs=config.lr_step_epochs,
            gamma=config.lr_gamma,
        )
        self.optimizer = create_optimizer(config.optimizer, self.model.n_params, schedule, config)
        self.params = self.model.init_params(np.random.default_rng(config.seed))

    # -- the loop -------------------------------------------------------------------

    def run(self) -> dict:
        """The epochs, then checkpoint, model.h5 and the final run.json (rank 0)."""
        try:
            summary = self._epochs()
        except Preempted as exc:
            if self.record:
                self.record.finish("preempted", stop_reason=str(exc))
            raise
        except MpigdError as exc:
            if self.record:
                self.record.finish("failed", stop_reason=str(exc))
            raise
        whole = self.strategy.full_vector(self.params)
        if self.record:
            self.record.save_model(whole, self._model_info())
            self.record.finish("completed", **summary)
        return summary

    def _epochs(self) -> dict:
        config = self.config
        stop_reason = f"reached --epochs {config.epochs}"
        epochs_run = self.start_epoch - 1
        for epoch in range(self.start_epoch, config.epochs + 1):
            try:
                row = self._epoch(epoch)
            except DivergenceError as exc:
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {self.global_step}: {exc}; "
                    f"the last good checkpoint is kept; try a smaller --lr (now {config.lr})"
                ) from exc
            if row is None:  # cut short at a step boundary by an agreed stop signal
                self._checkpoint(epoch - 1, self.step_in_epoch)
                raise Preempted(self._preempted_message(epoch))
            epochs_run = epoch
            if self.record:
                self.record.append_metrics(row)
                progress.report(config.progress, row, config.epochs)
            last = epoch == config.epochs or self.optimizer.stop_reason is not None
            every = config.checkpoint_every
            if last or self.strategy.stop_agreed or (every and epoch % every == 0):
                self._checkpoint(epoch, 0)
            if self.strategy.stop_agreed and not last:
                raise Preempted(self._preempted_message(epoch + 1))
            if self.optimizer.stop_reason:
                stop_reason = self.optimizer.stop_reason
                break
        final_loss = self._train_loss(np.empty_like(self.params))
        return {"stop_reason": stop_reason, "epochs_run": epochs_run,
                "final_train_loss": final_loss}  # fmt: skip

    def _epoch(self, epoch: int) -> dict | None:
        """Train one epoch and measure it; its metrics line, or None if a stop cut it short."""
        config, ranks = self.config, self.ranks
        start = time.perf_counter()
        part, parts = self.share
        batches = epoch_batches(len(self.rows.X), part, max(parts, 1), self.info.n_rows,
                                config.batch_size, config.seed, epoch)  # fmt: skip
        first = self.first_step if epoch == self.start_epoch else 0

        def before_step(i: int) -> None:
            every = config.checkpoint_every_steps
            due = every and self.global_step > 0 and self.global_step % every == 0
            if due and self.strategy.replicated:
                self._checkpoint(epoch - 1, first + i)
            faults.before_step(self.fault, ranks.rank, self.global_step)
            self.global_step += 1

        taken = self.strategy.run_epoch(self.optimizer, self.params, batches[first:], before_step)
        self.strategy.agree_stop_reason(self.optimizer)
        self.step_in_epoch = first + taken
        if self.step_in_epoch < len(batches) and not self.optimizer.stop_reason:
            return None
        grad = np.empty_like(self.params)
        row = {
            "epoch": epoch,
            "train_loss": self._train_loss(grad),
        }
        if config.batch_size is None:
            row["grad_norm_inf"] = float(np.max(np.abs(grad)))
        eval_start = time.perf_counter()
        if self.test is not None:
            metrics = evaluate(self.model, self.test_X, self.test.y, self.params, ranks)
            row.update({f"test_{k}": v for k, v in metrics.items() if k != "rows"})
        end = time.perf_counter()
        time_s = end - start
        phases = self.timer.take()
        mean, largest = self.strategy.mean_and_max(np.array(list(phases.values())))
        row.update(zip(phases, mean.tolist(), strict=True))
        row.update((f"{name}_max", value) for name, value in zip(phases, largest.tolist(),
                                                                 strict=True))  # fmt: skip
        row.update(time_s=time_s, eval_s=end - eval_start, steps=taken,
                   samples_per_s=self.info.n_rows * taken / len(batches) / time_s)  # fmt: skip
        if first:
            row["resumed_at_step"] = first
        row["full_passes"] = self.objective.full_passes
        row.update(self.optimizer.epoch_fields())
        row.update(self.strategy.epoch_fields())
        return row

    def _train_loss(self, grad: np.ndarray) -> float:
        """Collective: f over all training rows. Full batch: the memoised pass, which also
        fills ``grad`` and which the next step reuses; mini-batches: the loss alone."""
        if self.config.batch_size is None:
            return self.strategy.full_closure(self.params, grad)
        return self.strategy.full_loss(self.params)

    # -- run record ------------------------------------------------------------------

    def _prepare_record(self) -> RunRecord | None:
        """Collective: rank 0 claims the run directory (see RunRecord.prepare)."""
        config = self.config

        def prepare() -> RunRecord | None:
            if not self.ranks.is_root:
                return None
            record = RunRecord(config.out)
            try:
                record.prepare(config.to_dict(), config.resume, config.overwrite)
            except OSError as exc:
                raise MpigdError(f"cannot write the run directory {config.out}: {exc}") from exc
            return record

        return mpi.collectively(self.ranks.comm, prepare)

    def _start_record(self, resumed: dict | None) -> None:
        """Collective: rank 0 writes the full run.json once set-up has succeeded."""
        places = mpi.rank_places(self.ranks.comm)

        def start() -> None:
            if not self.record:
                return
            info = describe_run(self.config, self.ranks, places, self.info, self._model_info(),
                                gpu=self.gpu)  # fmt: skip
            info.update(load_s=self.load_s, warmup_s=self.warmup_s, resumed_from=resumed)
            try:
                self.record.start(info, keep_epochs=resumed["epoch"] if resumed else None)
            except OSError as exc:
                raise MpigdError(
                    f"cannot write the run directory {self.config.out}: {exc}"
                ) from exc

        mpi.collectively(self.ranks.comm, start)

    def _model_info(self) -> dict:
        """What ``eval`` needs to rebuild the model around model.h5's flat vector."""
        config, info = self.config, self.info
        return {
            "model": config.model,
            "svm_loss": config.svm_loss,
            "hidden": config.hidden,
            "dropout": config.dropout,
            "n_features": info.n_features,
            "n_classes": info.n_classes,
            "task": info.task,
            "l2": config.l2,
            "class_weights": self.class_weight_values,
            "n_params": self.model.full_size,
            "layout": self.model.layout(),
        }


def _check_model_parallel(config: TrainConfig, size: int) -> None:
    """ConfigError unless ``--model-parallel M`` can split this run."""
    parts = config.model_parallel
    if config.model != "mlp" or config.strategy != "allreduce":
        raise ConfigError("--model-parallel splits the mlp under --strategy allreduce only")
    if size % parts:
        raise ConfigError(f"--model-parallel {parts} needs a multiple of {parts} ranks, not {size}")
    if config.optimizer == "lbfgs" or config.tol:
        raise ConfigError("--model-parallel: lbfgs and --tol need whole-vector norms; use gd, "
                          "sgd, momentum or adam without --tol")  # fmt: skip
    if min(config.hidden) < parts:
        raise ConfigError(f"--model-parallel {parts}: every hidden layer needs >= {parts} units")


def _configured_fault():
    try:
        return faults.configured()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_compatible(train_info, test_info) -> None:
    """The test set must have the training set's columns and task."""
    if (test_info.n_features, test_info.task, test_info.n_classes) != (
        train_info.n_features,
        train_info.task,
        train_info.n_classes,
    ):
        raise DataError(
            f"test data {test_info.path} ({test_info.n_features} features, {test_info.task}, "
            f"{test_info.n_classes} classes) does not match training data {train_info.path} "
            f"({train_info.n_features} features, {train_info.task}, "
            f"{train_info.n_classes} classes)"
        )


def _balanced_weights(labels: np.ndarray, counts: np.ndarray, info) -> np.ndarray:
    """Per-row weights N / (C n_c) from the global class counts n_c (``balanced``)."""
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise DataError(
            f"classes {missing} have no training rows; "
            "--class-weight balanced needs every class present"
        )
    return class_weights(counts, info.n_rows)[labels]


def class_weights(counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Balanced weight of each class, N / (C n_c), as scikit-learn's ``balanced``."""
    return n_rows / (len(counts) * counts)
