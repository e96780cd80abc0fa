"""Checkpoints of a run: write checkpoint.h5 at a step boundary, resume from it.

Both functions are collective and take the :class:`~mpigd.run.loop.Run`. The file
format and the fingerprints are :mod:`mpigd.record.checkpoint_file`'s; this module only
gathers what the ranks hold (a split model's parts, every rank's dropout generator)
and agrees on success. When a checkpoint is taken is the loop's (the end, an agreed
stop) and the :class:`~mpigd.run.hooks.CheckpointPolicy` hook's (every K epochs or
steps).
"""

from __future__ import annotations

import numpy as np

from mpigd import comm as mpi
from mpigd.config import default_of
from mpigd.errors import ConfigError, MpigdError
from mpigd.record import checkpoint_file
from mpigd.record.atomic import WRITE_ERRORS
from mpigd.record.checkpoint_file import Checkpoint
from mpigd.run import progress


def save(run) -> None:
    """Collective: rank 0 writes checkpoint.h5 for the current step boundary.

    ``run.state`` says where: ``epochs_done`` epochs complete and ``step_in_epoch`` steps
    into the next. A second call at the same global step writes nothing.
    """
    state = run.state
    if state.global_step == state.last_checkpoint_step:
        return
    state.last_checkpoint_step = state.global_step
    with run.timer.span("checkpoint", step=state.global_step):
        _gather_and_write(run)


def _gather_and_write(run) -> None:
    """:func:`save`'s work: gather the whole state to rank 0, which writes; agree."""
    state, parts, ranks = run.state, run.parts, run.ranks
    params = parts.strategy.full_vector(parts.params)
    optimizer_state = {  # whole vectors (a split model's parts gathered); scalars as they are
        key: parts.strategy.full_vector(value) if isinstance(value, np.ndarray) else value
        for key, value in parts.optimizer.state_dict().items()
    }
    rng_states = mpi.gather_to_root(ranks.comm, parts.model.rng_state())
    error = None
    if ranks.is_root:
        checkpoint = Checkpoint(
            params=params,
            optimizer_state=optimizer_state,
            epoch=state.epochs_done,
            step_in_epoch=state.step_in_epoch,
            global_step=state.global_step,
            world_size=ranks.size,
            config=checkpoint_file.config_fingerprint(run.config),
            data=run.data_fingerprint,
            rng_states=rng_states,
            model_arrays=parts.model.saved_arrays(),
        )
        try:
            with run.timer.span("checkpoint write", step=state.global_step):
                checkpoint_file.save(run.config.out, checkpoint,
                                     before_rename=run.hooks.before_checkpoint_rename)  # fmt: skip
        except WRITE_ERRORS as exc:
            error = MpigdError(f"cannot write the checkpoint in {run.config.out}: {exc}")
    mpi.agree(ranks.comm, error)


def resume(run) -> dict | None:
    """Collective: continue from checkpoint.h5 (rank 0 reads, all receive).

    Sets the parameters, optimiser state, dropout generators and ``run.state``; returns
    what run.json records as ``resumed_from``, or None when there is no checkpoint (the
    run starts fresh). ConfigError, on every rank, if the checkpoint belongs to another
    config or dataset (unless ``--force-resume``).
    """
    ranks, parts, state = run.ranks, run.parts, run.state
    checkpoint, error = None, None
    if ranks.is_root:
        try:
            checkpoint = checkpoint_file.load(run.config.out)
            if checkpoint is not None:
                _refuse_mismatch(checkpoint, run)
        except MpigdError as exc:
            error = exc
    mpi.agree(ranks.comm, error)
    checkpoint = mpi.from_root(ranks.comm, checkpoint)
    if checkpoint is None:
        if ranks.is_root:
            progress.note("no checkpoint to resume from; starting fresh")
        return None
    local = parts.strategy.local_vector
    parts.params[:] = local(checkpoint.params)
    notes = []
    if checkpoint.config.get("optimizer") == run.config.optimizer:
        parts.optimizer.load_state_dict({
            key: local(value) if key in parts.optimizer.STATE_ARRAYS else value
            for key, value in checkpoint.optimizer_state.items()
        })  # fmt: skip
    else:  # --force-resume across optimisers: another optimiser's state means nothing here
        notes.append(f"the checkpoint's optimiser is {checkpoint.config.get('optimizer')}: its "
                     f"parameters are kept, {run.config.optimizer} starts afresh")  # fmt: skip
    parts.model.load_saved_arrays(checkpoint.model_arrays)
    if checkpoint.rng_states and len(checkpoint.rng_states) == ranks.size:
        parts.model.set_rng_state(checkpoint.rng_states[ranks.rank])
    state.start_epoch = checkpoint.epoch + 1
    state.epochs_done = checkpoint.epoch
    state.first_step = checkpoint.step_in_epoch
    state.global_step = state.last_checkpoint_step = checkpoint.global_step
    notes = _resume_notes(checkpoint, ranks.size) + notes
    epochs, flag = run.config.loop_epochs
    if checkpoint.epoch >= epochs:
        notes.append(f"the checkpoint is at epoch {checkpoint.epoch}, at or past {flag} "
                     f"{epochs}: nothing is left to train")  # fmt: skip
    if ranks.is_root:
        for note in notes:
            progress.note(note)
    return {"epoch": checkpoint.epoch, "step_in_epoch": checkpoint.step_in_epoch,
            "global_step": checkpoint.global_step, "world_size": checkpoint.world_size,
            "notes": notes}  # fmt: skip


def _resume_notes(checkpoint: Checkpoint, size: int) -> list[str]:
    """What the user should know about this resume (printed and kept in run.json)."""
    notes = [f"resumed after epoch {checkpoint.epoch}, step {checkpoint.step_in_epoch} "
             "of the next"]  # fmt: skip
    if checkpoint.world_size != size:
        notes.append(
            f"checkpoint written by {checkpoint.world_size} ranks, resuming on {size}: "
            "the rows are split anew"
            + (
                " and the rest of this epoch's mini-batches differ from the original run"
                if checkpoint.step_in_epoch
                else ""
            )  # fmt: skip
        )
    return notes


def _refuse_mismatch(checkpoint: Checkpoint, run) -> None:
    """ConfigError if the checkpoint belongs to another config or dataset, unless forced."""
    config = run.config
    current = checkpoint_file.config_fingerprint(config)
    # A checkpoint written before an option was fingerprinted ran with its default.
    saved = {key: default_of(key) for key in current.keys() - checkpoint.config.keys()}
    checkpoint.config = {**saved, **checkpoint.config}
    found = checkpoint_file.mismatches(checkpoint, current, run.data_fingerprint)
    model = run.parts.model
    if np.shape(checkpoint.params) != (model.full_size,):
        raise ConfigError(
            f"{config.out}/{checkpoint_file.CHECKPOINT_FILE} holds {np.size(checkpoint.params)} "
            f"parameters, but --model {config.model} on {run.data.info.n_features} features "
            f"has {model.full_size}: not even --force-resume can continue another model's "
            "parameters; use another --out"
        )
    if found and not config.force_resume:
        raise ConfigError(
            f"{config.out}/{checkpoint_file.CHECKPOINT_FILE} was written for another run ("
            + "; ".join(found)
            + "); use another --out, or --force-resume to continue from it anyway"
        )
