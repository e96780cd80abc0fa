"""The trainer's checkpoint half: write checkpoint.h5, resume from it, say why it stopped.

Mixed into :class:`mpigd.train.Trainer`, whose attributes it reads (config, ranks,
params, optimizer, strategy, model, fault, global_step, data_fingerprint) and sets on
resume (start_epoch, first_step, global_step). Every method here is collective.
"""

from __future__ import annotations

import numpy as np

from mpigd import checkpoint, faults, preemption, progress
from mpigd import comm as mpi
from mpigd.config import TrainConfig
from mpigd.errors import ConfigError, MpigdError


class CheckpointingMixin:
    """Checkpoint, resume and preemption messages of a training run."""

    def _checkpoint(self, epochs_done: int, step_in_epoch: int) -> None:
        """Collective: rank 0 writes checkpoint.h5 for this step boundary."""
        if self.global_step == self.last_checkpoint_step:
            return
        self.last_checkpoint_step = self.global_step
        params, optimizer_state = self._whole_state()
        rng_states = self.ranks.comm.gather(self.model.rng_state(), root=0)
        error = None
        if self.ranks.is_root:
            state = checkpoint.Checkpoint(
                params=params,
                optimizer_state=optimizer_state,
                epoch=epochs_done,
                step_in_epoch=step_in_epoch,
                global_step=self.global_step,
                world_size=self.ranks.size,
                config=checkpoint.config_fingerprint(self.config),
                data=self.data_fingerprint,
                rng_states=rng_states,
            )

            def crash() -> None:
                faults.crash_in_checkpoint(self.fault, self.ranks.rank, self.global_step)

            try:
                checkpoint.save(self.config.out, state, before_rename=crash)
            except OSError as exc:
                error = MpigdError(f"cannot write the checkpoint in {self.config.out}: {exc}")
        mpi.agree(self.ranks.comm, error)

    def _whole_state(self) -> tuple[np.ndarray | None, dict | None]:
        """Collective: parameters and optimiser state as whole (unsplit) vectors, on rank 0."""
        params = self.strategy.full_vector(self.params)
        state = {
            key: self.strategy.full_vector(value) if isinstance(value, np.ndarray) else value
            for key, value in self.optimizer.state_dict().items()
        }
        return params, state

    def _resume(self) -> dict | None:
        """Collective: load checkpoint.h5 (rank 0 reads, all receive); None if there is none."""
        state, error = None, None
        if self.ranks.is_root:
            try:
                state = checkpoint.load(self.config.out)
                if state is not None:
                    _refuse_mismatch(state, self.config, self.data_fingerprint)
            except MpigdError as exc:
                error = exc
        mpi.agree(self.ranks.comm, error)
        state = self.ranks.comm.bcast(state, root=0)
        if state is None:
            if self.ranks.is_root:
                progress.note("no checkpoint to resume from; starting fresh")
            return None
        self.params[:] = self.strategy.local_vector(state.params)
        self.optimizer.load_state_dict({
            key: self.strategy.local_vector(value) if key in self.optimizer.STATE_ARRAYS else value
            for key, value in state.optimizer_state.items()
        })  # fmt: skip
        if state.rng_states and len(state.rng_states) == self.ranks.size:
            self.model.set_rng_state(state.rng_states[self.ranks.rank])
        self.start_epoch = state.epoch + 1
        self.first_step = state.step_in_epoch
        self.global_step = self.last_checkpoint_step = state.global_step
        notes = [f"resumed after epoch {state.epoch}, step {state.step_in_epoch} of the next"]
        if state.world_size != self.ranks.size:
            notes.append(
                f"checkpoint written by {state.world_size} ranks, resuming on "
                f"{self.ranks.size}: the rows are split anew"
                + (
                    " and the rest of this epoch's mini-batches differ from the original run"
                    if state.step_in_epoch
                    else ""
                )  # fmt: skip
            )
        if self.ranks.is_root:
            for note in notes:
                progress.note(note)
        return {"epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
                "global_step": state.global_step, "world_size": state.world_size,
                "notes": notes}  # fmt: skip

    def _preempted_message(self, epoch: int) -> str:
        signals = "/".join(preemption.received()) or "a stop signal on another rank"
        return (
            f"stopped by {signals} at epoch {epoch}, step {self.global_step}; checkpoint "
            f"written to {self.config.out}/{checkpoint.CHECKPOINT_FILE}; continue with --resume"
        )


def _refuse_mismatch(state, config: TrainConfig, data_fingerprint: dict) -> None:
    """ConfigError if the checkpoint belongs to another config or dataset, unless forced."""
    found = checkpoint.mismatches(state, checkpoint.config_fingerprint(config), data_fingerprint)
    if found and not config.force_resume:
        raise ConfigError(
            f"{config.out}/{checkpoint.CHECKPOINT_FILE} was written for another run ("
            + "; ".join(found)
            + "); use another --out, or --force-resume to continue from it anyway"
        )
