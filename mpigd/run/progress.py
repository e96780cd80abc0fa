"""Rank 0's console output: one line per epoch (``bar``), a JSON line, or nothing."""

from __future__ import annotations

import json
import sys


def report(mode: str, row: dict, epochs: int) -> None:
    """Print one epoch's metrics ``row`` in the chosen ``--progress`` mode."""
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


def note(message: str) -> None:
    """A one-off message about the run itself (resume) to stderr, in every mode."""
    print(f"mpigd: {message}", file=sys.stderr, flush=True)
