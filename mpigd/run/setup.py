"""Setting a run up, collectively: claim the run directory, load, build, resume.

Every step that can fail on some ranks and not others is agreed (``collectively`` /
``agree``, :mod:`mpigd.comm`) so that every rank fails together with one message; no
agreed step encloses a collective. The order (:func:`set_up`):

1. rank 0 claims the run directory (run.json ``starting``);
2. the layout is chosen and checked, the kernel backend loaded, the GPU placed; rank 0
   warns about options this configuration ignores;
3. each rank reads its rows (training, test) as the layout shares them out;
4. the layout connects (its sub-communicators), prepares what it computes from all
   ranks' rows (a tree ensemble's bins) and builds the parts;
5. balanced class weights from the global class counts; kernels compiled (warm-up);
6. ``--resume``: the checkpoint restores parameters, optimiser and state;
7. rank 0 writes the full run.json (``running``).
"""

from __future__ import annotations

import time

import numpy as np

from mpigd import comm as mpi
from mpigd import device
from mpigd.errors import ConfigError, DataError, MpigdError
from mpigd.features import column_square_sums
from mpigd.models import load_backend
from mpigd.record import RunRecord
from mpigd.record.atomic import WRITE_ERRORS
from mpigd.record.checkpoint_file import data_fingerprint
from mpigd.record.provenance import describe_run
from mpigd.run import checkpointing, progress
from mpigd.run.layouts import layout_for
from mpigd.run.loading import load_local_rows
from mpigd.run.loop import Run, RunData
from mpigd.run.state import RunState
from mpigd.timing import PhaseTimer


def set_up(config, ranks: mpi.RankInfo, hooks, record: RunRecord | None) -> Run:
    """Collective: the :class:`~mpigd.run.loop.Run`, ready for its first epoch.

    ``record`` is the run directory :func:`claim_run_directory` claimed (rank 0; None
    elsewhere). On an agreed failure, rank 0 records the run as ``failed`` with the
    reason before the error propagates.
    """
    try:
        return _build_run(config, ranks, hooks, record)
    except MpigdError as exc:
        if record:
            record.finish("failed", stop_reason=str(exc))
        raise


def _build_run(config, ranks, hooks, record) -> Run:
    comm, timer = ranks.comm, PhaseTimer()
    layout, backend = mpi.collectively(comm, lambda: _configure(config, ranks.size))
    if ranks.is_root:
        for warning in config.ignored_options():
            progress.note(f"warning: {warning}")
    gpu = device.place(comm, backend)
    share = layout.data_share(ranks.rank, ranks.size)
    data = _load(config, ranks, share, backend)
    if ranks.is_root and config.batch_size and config.batch_size >= data.info.n_rows:
        progress.note(f"warning: --batch-size {config.batch_size} is at least the "
                      f"{data.info.n_rows} training rows: every step is a full pass")  # fmt: skip
    layout.connect(ranks, timer)
    layout.prepare(ranks, data, timer)
    parts = mpi.collectively(comm, lambda: layout.build(ranks, backend, data, timer, hooks))
    class_weights = _balance_classes(config, parts, data, backend, comm)
    _precondition(config, parts, data)
    warm_start = time.perf_counter()
    parts.strategy.warm_up(parts.params, data.test_X[:1] if data.test else None)
    warmup_s = time.perf_counter() - warm_start
    timer.take()  # the initial read is load_s in run.json, not epoch 1's io_s
    run = Run(
        config=config, ranks=ranks, timer=timer, hooks=hooks, record=record, data=data,
        parts=parts, state=RunState(), share=share,
        model_info=_model_info(config, data.info, parts.model, class_weights),
        data_fingerprint=data_fingerprint(data.info) if ranks.is_root else None,
    )  # fmt: skip
    hooks.bind(run)
    resumed = checkpointing.resume(run) if config.resume else None
    _start_record(run, gpu, warmup_s, resumed, layout.name)
    return run


def claim_run_directory(config, ranks) -> tuple[RunRecord | None, str]:
    """Collective: rank 0 claims the run directory (see RunRecord.claim). Its writer
    (rank 0; None elsewhere) and the run's id (every rank). Step 1 of the set-up, before
    anything else can fail."""

    def claim() -> RunRecord | None:
        if not ranks.is_root:
            return None
        record = RunRecord(config.out)
        try:
            record.claim(config.to_dict(), config.resume, config.overwrite,
                         [config.data, config.test_data])  # fmt: skip
        except WRITE_ERRORS as exc:
            raise MpigdError(f"cannot write the run directory {config.out}: {exc}") from exc
        return record

    record = mpi.collectively(ranks.comm, claim)
    return record, mpi.from_root(ranks.comm, record.run_id if record else None)


def _fitting(work):
    """``work()``, with running out of memory (host or GPU: CuPy's OutOfMemoryError is
    a MemoryError) reported as the user error it is: too many rows per rank."""
    try:
        return work()
    except MemoryError as exc:
        raise ConfigError(
            f"out of memory holding this rank's rows ({type(exc).__name__}: {exc}); "
            "use more ranks, so that each holds fewer rows"
        ) from exc


def _configure(config, size: int):
    """The layout (checked against ``size`` ranks) and the kernel backend."""
    layout = layout_for(config)
    layout.check(size)
    return layout, load_backend(config.backend)


def _load(config, ranks, share, backend) -> RunData:
    """Collective: this rank's training and test rows, the test rows on the device."""
    comm = ranks.comm
    start = time.perf_counter()
    info, rows = load_local_rows(config.data, ranks, share=share, what="--data")
    test = test_X = None
    if config.test_data:
        test_info, test = load_local_rows(
            config.test_data, ranks, every_rank_needs_rows=False, share=share, what="--test-data"
        )
        mpi.collectively(comm, lambda: _check_compatible(info, test_info))
        test_X = mpi.collectively(comm, lambda: _fitting(lambda: backend.to_device(test.X)))
    mpi.collectively(comm, lambda: _check_class_weight(config, info))
    return RunData(info, rows, test, test_X, (start, time.perf_counter()))


def _check_class_weight(config, info) -> None:
    if config.class_weight == "balanced" and info.n_classes is None:
        raise ConfigError("--class-weight balanced needs a classification dataset")


def _balance_classes(config, parts, data, backend, comm) -> list | None:
    """Collective: with ``--class-weight balanced``, give the objective per-row weights
    N / (C n_c) from the global class counts n_c; the class weights (or None)."""
    if config.class_weight != "balanced":
        return None
    info, labels = data.info, data.rows.y
    counts = np.bincount(labels, minlength=info.n_classes).astype(np.float64)
    parts.strategy.sum_over_data(counts)

    def row_weights():
        if np.any(counts == 0):
            missing = np.flatnonzero(counts == 0).tolist()
            raise DataError(f"classes {missing} have no training rows; "
                            "--class-weight balanced needs every class present")  # fmt: skip
        return _fitting(lambda: backend.to_device(class_weights(counts, info.n_rows)[labels]))

    parts.objective.sample_weight = mpi.collectively(comm, row_weights)
    return class_weights(counts, info.n_rows).tolist()


def _precondition(config, parts, data) -> None:
    """Collective: with ``--lbfgs-precondition diagonal``, give L-BFGS the inverse of
    mean x_j² + l2 per weight of column j (1 for the other parameters), from the
    column sums of squares over all training rows (see :mod:`mpigd.optim.lbfgs`)."""
    if config.optimizer != "lbfgs" or config.lbfgs_precondition == "none":
        return
    X = data.rows.X
    sums = parts.strategy.sum_over_data(np.append(column_square_sums(X), X.shape[0]))
    curvature = parts.model.weights_of_columns(sums[:-1] / sums[-1] + config.l2, fill=1.0)
    curvature[curvature <= 0] = 1.0  # a column no row uses, without an L2 term
    parts.optimizer.precondition(1.0 / curvature)


def class_weights(counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Balanced weight of each class, N / (C n_c), as scikit-learn's ``balanced``."""
    return n_rows / (len(counts) * counts)


def _check_compatible(train_info, test_info) -> None:
    """The test set must have the training set's columns and task."""
    train = (train_info.n_features, train_info.task, train_info.n_classes)
    test = (test_info.n_features, test_info.task, test_info.n_classes)
    if test != train:
        raise DataError(
            f"test data {test_info.path} ({test[0]} features, {test[1]}, {test[2]} classes) "
            f"does not match training data {train_info.path} ({train[0]} features, "
            f"{train[1]}, {train[2]} classes)"
        )


def _model_info(config, info, model, class_weight_values) -> dict:
    """What ``eval`` needs to rebuild the model around model.h5's flat vector."""
    return {
        "model": config.model,
        "svm_loss": config.svm_loss,
        "hidden": config.hidden,
        "dropout": config.dropout,
        "n_features": info.n_features,
        "n_classes": info.n_classes,
        "task": info.task,
        "l2": config.l2,
        "class_weights": class_weight_values,
        "n_params": model.full_size,
        "layout": model.layout(),
    }


def _start_record(run, gpu, warmup_s: float, resumed: dict | None, layout: str) -> None:
    """Collective: rank 0 writes the full run.json once set-up has succeeded."""
    places = mpi.rank_places(run.ranks.comm)

    def start() -> None:
        if not run.record:
            return
        config = run.config
        info = describe_run(config, run.ranks, places, run.data.info, run.model_info, gpu=gpu)
        info.update(layout=layout, load_s=run.data.load_s, warmup_s=warmup_s,
                    resumed_from=resumed, warnings=config.ignored_options())  # fmt: skip
        try:
            run.record.start(info, keep_epochs=resumed["epoch"] if resumed else None)
        except WRITE_ERRORS as exc:
            raise MpigdError(f"cannot write the run directory {config.out}: {exc}") from exc

    mpi.collectively(run.ranks.comm, start)
