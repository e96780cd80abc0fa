"""One training run, built by composition: set-up, the loop, and the hooks around it.

=================  ==============================================================
module             job
=================  ==============================================================
``setup``          the collective set-up: run directory, layout, rows, parts, resume
``layouts``        the registry of layouts (data-parallel, tensor-parallel)
``builder``        the pure builder: model, objective, strategy, optimiser, params
``loop``           the epochs: steps, metrics, the end of a run (``Run``)
``state``          where a run is (epoch, step, global step, last checkpoint)
``hooks``          what a run does besides training (progress, checkpoint policy, ...)
``checkpointing``  write checkpoint.h5 at a step boundary, resume from it
``timeline``       the per-rank step timeline hook (``--timeline``)
``loading``        every rank reads its own rows, collectively
``batching``       which local rows each step of an epoch uses
=================  ==============================================================

See docs/architecture.md for the data flow and for how a strategy, a layout, a model
and a hook plug in.
"""

from __future__ import annotations

from mpigd import comm as mpi
from mpigd import preemption
from mpigd.run.hooks import AbortMarker, CheckpointPolicy, Hook, Hooks, Progress


def default_hooks(config, run_id: str) -> list[Hook]:
    """The hooks every run has: progress, checkpoint policy, abort marker, timeline."""
    hooks = [
        Progress(config.progress),
        CheckpointPolicy(config.checkpoint_every, config.checkpoint_every_steps),
        AbortMarker(config.out, run_id),
    ]
    if config.timeline:
        from mpigd.run.timeline import TimelineHook

        hooks.append(TimelineHook())
    return hooks


def train(config, ranks: mpi.RankInfo | None = None, hooks=()) -> dict:
    """Collective: run one training job; return the final summary (on every rank).

    ``hooks`` are added after the default ones (tests add faults or observers). What
    the run registers with the process (stop-signal handlers, the abort hook) is
    removed when it returns or raises; the abort hook only once the run directory is
    this run's, so that an abort before cannot mark a previous run's record.
    """
    from mpigd.run.loop import run_to_end
    from mpigd.run.setup import claim_run_directory, set_up

    ranks = ranks or mpi.world()
    with preemption.listening():
        _stop_if_asked_before_start(ranks)
        record, run_id = claim_run_directory(config, ranks)
        run_hooks = Hooks([*default_hooks(config, run_id), *hooks])
        with mpi.abort_hook(run_hooks.aborting):
            return run_to_end(set_up(config, ranks, run_hooks, record))


def _stop_if_asked_before_start(ranks: mpi.RankInfo) -> None:
    """Collective: end the run before it touches anything if a rank already has a stop
    signal (one that came while the ranks started, or between two runs of a sweep)."""
    asked = mpi.gather_everywhere(ranks.comm, preemption.received())
    if any(asked):
        names = "/".join(sorted({name for names in asked for name in names}))
        stop = preemption.Interrupted if "SIGINT" in names else preemption.Preempted
        raise stop(f"stopped by {names} before the run started; nothing was written; "
                   "run the command again to start it")  # fmt: skip


__all__ = ["Hook", "default_hooks", "train"]
