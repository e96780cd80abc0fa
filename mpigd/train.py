"""The training loop: load, step, measure, record. Runs identically on every rank.

Per epoch the trainer lets the strategy take the epoch's steps, then evaluates the
full training objective (``train_loss``, over all rows of all ranks, with the L2 term)
and the test metrics, and rank 0 appends one line to ``metrics.jsonl``:

- ``time_s``: wall time of the epoch on rank 0, including the end-of-epoch evaluation
  (``eval_s`` says how much of it that was) and, for epoch 1, reading the data.
- ``compute_s``, ``comm_s``, ``io_s``: the parts of the epoch spent in kernels, in MPI
  and reading data, each the maximum over ranks.
- ``samples_per_s``: training rows stepped through in the epoch, per second of ``time_s``.

A full-batch optimiser's next step needs the objective at exactly the point where the
epoch's evaluation computed it, so that pass is memoised and done once, not twice.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import kernels
from mpigd import comm as mpi
from mpigd.batching import epoch_batches, steps_per_epoch
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError, DataError, MpigdError
from mpigd.evaluate import evaluate
from mpigd.loading import load_local_rows
from mpigd.models import create_model
from mpigd.objective import LocalObjective
from mpigd.optim import Schedule, create_optimizer
from mpigd.record import RunRecord, git_commit, software_versions
from mpigd.strategies import create_strategy
from mpigd.timing import PhaseTimer


def train(config: TrainConfig, ranks: mpi.RankInfo | None = None) -> dict:
    """Run one training job collectively; return the final summary (on every rank)."""
    return Trainer(config, ranks or mpi.world()).run()


class Trainer:
    """One training run on this rank: set-up in the constructor, the loop in :meth:`run`.

    Collective throughout: every rank constructs it and calls ``run`` with the same
    config. ``record`` (the run directory writer) exists on rank 0 only.
    """

    def __init__(self, config: TrainConfig, ranks: mpi.RankInfo) -> None:
        self.config, self.ranks = config, ranks
        self.timer = PhaseTimer()
        backend = _backend(config.backend)
        load_start = time.perf_counter()
        with self.timer.phase("io"):
            self.info, self.rows = load_local_rows(config.data, ranks)
            self.test = None
            if config.test_data:
                test_info, self.test = load_local_rows(
                    config.test_data, ranks, every_rank_needs_rows=False
                )
                _check_compatible(self.info, test_info)
        self.load_s = time.perf_counter() - load_start

        info = self.info
        self.model = create_model(
            config.model, backend, info.n_features, info.task, info.n_classes, config.svm_loss
        )
        targets = self.model.targets(self.rows.y)
        objective = LocalObjective(self.model, self.rows.X, targets, None, config.l2, self.timer)
        self.strategy = create_strategy(config.strategy, ranks, objective, self.timer)
        if config.class_weight == "balanced":
            objective.sample_weight = _balanced_weights(self.rows.y, info, self.strategy)

        n_steps = steps_per_epoch(info.n_rows, config.batch_size)
        schedule = Schedule(
            config.lr,
            config.lr_schedule,
            steps_per_epoch=n_steps,
            total_steps=n_steps * config.epochs,
            step_epochs=config.lr_step_epochs,
            gamma=config.lr_gamma,
        )
        self.optimizer = create_optimizer(config.optimizer, self.model.n_params, schedule, config)
        self.params = self.model.init_params(np.random.default_rng(config.seed))
        warm_start = time.perf_counter()
        objective.warm_up(self.params)
        self.warmup_s = time.perf_counter() - warm_start
        self.record = _start_record(config, ranks, info, self.model, self.load_s, self.warmup_s)

    def run(self) -> dict:
        """The epochs, then model.h5 and the final run.json (rank 0); returns the summary."""
        try:
            summary = self._epochs()
        except MpigdError as exc:
            if self.record:
                self.record.finish("failed", stop_reason=str(exc))
            raise
        if self.record:
            self.record.save_model(self.params, _model_info(self.config, self.info, self.model))
            self.record.finish("completed", **summary)
        return summary

    def _epochs(self) -> dict:
        config = self.config
        stop_reason = f"reached --epochs {config.epochs}"
        for epoch in range(1, config.epochs + 1):
            row = self._epoch(epoch)
            if not np.isfinite(row["train_loss"]):
                raise MpigdError(
                    f"training diverged at epoch {epoch} (train_loss = {row['train_loss']}); "
                    "try a smaller --lr"
                )
            if self.record:
                self.record.append_metrics(row)
                _report(config.progress, row, config.epochs)
            if self.optimizer.stop_reason:
                stop_reason = self.optimizer.stop_reason
                break
        return {
            "stop_reason": stop_reason,
            "epochs_run": epoch,
            "final_train_loss": row["train_loss"],
        }

    def _epoch(self, epoch: int) -> dict:
        """Train one epoch and measure it; return its metrics line (on every rank)."""
        config, ranks = self.config, self.ranks
        start = time.perf_counter()
        batches = epoch_batches(
            len(self.rows.X),
            ranks.rank,
            ranks.size,
            self.info.n_rows,
            config.batch_size,
            config.seed,
            epoch,
        )
        extra = self.strategy.run_epoch(self.optimizer, self.params, batches)
        eval_start = time.perf_counter()
        grad = np.empty_like(self.params)
        row = {
            "epoch": epoch,
            "train_loss": self.strategy.full_closure(self.params, grad),
            "grad_norm": float(np.max(np.abs(grad))),
        }
        if self.test is not None:
            metrics = evaluate(self.model, self.test.X, self.test.y, self.params, ranks)
            row.update({f"test_{k}": v for k, v in metrics.items() if k != "rows"})
        end = time.perf_counter()
        # Epoch 1 also carries the initial read of the data (already in the io phase).
        time_s = end - start + (self.load_s if epoch == 1 else 0.0)
        phases = self.timer.take()
        worst = self.strategy.max_across_ranks(np.array(list(phases.values())))
        row.update(zip(phases, worst.tolist(), strict=True))
        row.update(
            time_s=time_s,
            eval_s=end - eval_start,
            samples_per_s=self.info.n_rows / time_s,
            steps=len(batches),
        )
        row.update(self.optimizer.epoch_fields())
        row.update(extra)
        return row


def _backend(name: str):
    try:
        return kernels.get_backend(name)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"--backend {name}: {exc}") from exc


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


def _balanced_weights(labels: np.ndarray, info, strategy) -> np.ndarray:
    """Per-row weights N / (C n_c) from the global class counts n_c (``balanced``)."""
    if info.n_classes is None:
        raise ConfigError("--class-weight balanced needs a classification dataset")
    counts = np.bincount(labels, minlength=info.n_classes).astype(np.float64)
    strategy.sum_across_ranks(counts)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise DataError(
            f"classes {missing} have no training rows; "
            "--class-weight balanced needs every class present"
        )
    class_weight = info.n_rows / (info.n_classes * counts)
    return class_weight[labels]


def _model_info(config: TrainConfig, info, model) -> dict:
    """What ``eval`` needs to rebuild the model around model.h5's flat vector."""
    return {
        "model": config.model,
        "svm_loss": config.svm_loss,
        "n_features": info.n_features,
        "n_classes": info.n_classes,
        "task": info.task,
        "l2": config.l2,
        "n_params": model.n_params,
        "layout": model.layout(),
    }


def _start_record(config, ranks, info, model, load_s, warmup_s) -> RunRecord | None:
    """Collective: rank 0 creates the run directory and run.json; None on other ranks."""
    hosts = mpi.host_names(ranks.comm)
    record, error = None, None
    if ranks.is_root:
        try:
            record = RunRecord(config.out)
            record.start(
                {
                    "config": config.to_dict(),
                    "command": sys.argv,
                    "git_commit": git_commit(),
                    "mpi_library": mpi.mpi_library_version(),
                    "world_size": ranks.size,
                    "hosts": hosts,
                    "versions": software_versions(config.backend),
                    "dataset": {
                        "path": info.path,
                        "rows": info.n_rows,
                        "features": info.n_features,
                        "dtype": str(info.dtype),
                        "task": info.task,
                        "n_classes": info.n_classes,
                        "shards": len(info.files),
                    },
                    "model_info": _model_info(config, info, model),
                    "load_s": load_s,
                    "warmup_s": warmup_s,
                }
            )
        except OSError as exc:
            error = MpigdError(f"cannot write the run directory {config.out}: {exc}")
    mpi.agree(ranks.comm, error)
    return record


def _report(mode: str, row: dict, epochs: int) -> None:
    """Rank 0's console output: one line per epoch, a JSON line, or nothing."""
    if mode == "quiet":
        return
    if mode == "json":
        print(json.dumps(row), flush=True)
        return
    parts = [
        f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train_loss {row['train_loss']:.6g}",
    ]
    for key in ("test_loss", "test_accuracy", "test_r2"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4g}")
    parts.append(
        f"{row['time_s']:.3f} s (compute {row['compute_s']:.3f}, "
        f"comm {row['comm_s']:.3f}, io {row['io_s']:.3f})"
    )
    print("  ".join(parts), flush=True)
