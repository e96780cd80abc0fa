"""What a run leaves on disk, and how to read it back. Rank 0 writes; anyone reads.

=====================  ==============================================================
module                 job
=====================  ==============================================================
``run_dir``            the run directory: run.json, metrics.jsonl, model.h5; readers
``checkpoint_file``    checkpoint.h5: the state to continue exactly, and fingerprints
``provenance``         run.json's who/where/which-software fields
``atomic``             replace a file so a crash leaves the old or the new one
=====================  ==============================================================
"""

from mpigd.record.run_dir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_FILE,
    TIMELINE_FILE,
    RunRecord,
    load_model,
    mark_aborted,
    read_run,
)

__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_FILE",
    "TIMELINE_FILE",
    "RunRecord",
    "load_model",
    "mark_aborted",
    "read_run",
]
